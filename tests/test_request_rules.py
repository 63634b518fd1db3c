"""Each provider's own request rules (runner.steps.models NEEDS and RULES), checked before any
money is spent: by `validate` and `run` on what is known before the run, and by the
engine on each instance's rendered inputs before its request. The fake services enforce
the documented rules, so a request refused there after paying would show here as a paid
submission that failed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.cli.main import main
from runner.fake import FakeServer

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-request-rules-Key-41"


@pytest.fixture
def srv() -> Iterator[FakeServer]:
    with FakeServer("sunoapi", api_key=KEY) as server:
        yield server


def run(tmp: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SUNO_API_KEY"}
    env["SUNO_API_KEY"] = KEY
    return subprocess.run(
        [sys.executable, "-m", "runner", "run", str(tmp / "r.yaml"), "--provider", "sunoapi",
         "--base-url", url, "--out", str(tmp / "out"), "--state-dir", str(tmp / "state"),
         "--quiet", *args], env=env, capture_output=True, text=True, timeout=90, check=False)


def posts(srv: FakeServer) -> Counter[str]:
    return Counter(e["path"] for e in srv.log if e["method"] == "POST")


README_EXTEND = """\
version: 1
name: t
provider: {kind: local, poll_interval: 0.05, max_poll_interval: 0.2}
steps:
  song:
    uses: generate
    with: {title: Rain, style: folk, prompt: "[Verse] la la la"}
  long:
    uses: extend
    with:
      audio: "{{ steps.song.tracks[0] }}"
      continue_at: "{{ steps.song.tracks[0].duration - 10 }}"
"""


def test_an_extend_without_prompt_is_refused_before_the_generate_is_paid(srv, tmp_path):
    (tmp_path / "r.yaml").write_text(README_EXTEND)
    done = run(tmp_path, srv.url)
    assert done.returncode == 2, done.stderr
    assert re.search(r"r\.yaml:10:5: extend on sunoapi needs 'prompt' when it gives "
                     r"continue_at", done.stderr)
    assert posts(srv) == Counter()  # nothing paid, nothing uploaded


def test_the_same_recipe_with_a_prompt_runs_against_the_strict_fake(srv, tmp_path):
    (tmp_path / "r.yaml").write_text(README_EXTEND + "      prompt: \"[Outro] la\"\n")
    done = run(tmp_path, srv.url)
    assert done.returncode == 0, done.stderr
    assert posts(srv) == Counter({"/api/v1/generate": 1, "/api/v1/generate/extend": 1})


LATE = """\
version: 1
name: t
provider: {kind: local, poll_interval: 0.05, max_poll_interval: 0.2}
vars: {model: V4_5}
steps:
  song:
    uses: generate
    with: {title: Rain, style: folk, prompt: "[Verse] la la la", model: "{{ vars.model }}"}
  long:
    uses: extend
    with:
      audio: "{{ steps.song.tracks[0] }}"
      continue_at: "{{ steps.song.tracks[0].duration + 5 }}"
      prompt: more
  other:
    uses: extend
    with:
      audio: "{{ steps.song.tracks[1] }}"
      continue_at: 5
      prompt: more
      model: V5
"""


def test_values_known_only_at_run_time_are_checked_before_that_steps_request(srv, tmp_path):
    """continue_at past the source's end and a model other than the source's are known
    only once the song exists: each extend fails before its request, by the same rule."""
    (tmp_path / "r.yaml").write_text(LATE)
    done = run(tmp_path, srv.url, "--keep-going", "--report", str(tmp_path / "rep.json"))
    assert done.returncode == 1, done.stderr
    errors = {s["id"]: s.get("error") for s in
              json.loads((tmp_path / "rep.json").read_text())["steps"]}
    assert "'continue_at' (35.0) must be before the end of the source track (30.0 s)" \
        in errors["long"]
    assert "'model' (V5) must match the source track's model (V4_5)" in errors["other"]
    assert posts(srv) == Counter({"/api/v1/generate": 1})  # no extend was sent


def readme_block(after: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("```yaml\n", text.index(after) - len("```yaml\n")) + len("```yaml\n")
    return text[start:text.index("```", start)]


@pytest.mark.parametrize("provider", ["sunoapi", "newapi"])
def test_the_readme_recipe_validates_for_each_remote_provider(provider, tmp_path, capsys):
    (tmp_path / "r.yaml").write_text(readme_block("## A recipe"))
    code = main(["validate", str(tmp_path / "r.yaml"), "--provider", provider,
                 "--base-url", "https://relay.example.com"])
    assert code == 0, capsys.readouterr().err


@pytest.mark.parametrize("provider", ["sunoapi", "newapi"])
def test_the_readme_reusable_recipe_validates_for_each_remote_provider(provider, tmp_path,
                                                                      capsys):
    (tmp_path / "song.yaml").write_text(readme_block("```yaml\n# lib/song.yaml").replace(
        "tail: {type: number, default: 10}", "tail: {type: number, default: 10}\n"
        "  title: {type: string, default: Rain}\n  lyrics: {type: string, default: la}", 1)
        .replace("  title: {type: string, description: the song's title}\n", "")
        .replace("  lyrics: {type: string}\n", ""))
    code = main(["validate", str(tmp_path / "song.yaml"), "--provider", provider,
                 "--base-url", "https://relay.example.com"])
    assert code == 0, capsys.readouterr().err


EXAMPLES = sorted((ROOT / "examples").glob("*.yaml")) + sorted((ROOT / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_examples_and_stock_recipes_validate_for_sunoapi(path, capsys):
    code = main(["validate", str(path), "--provider", "sunoapi"])
    assert code == 0, capsys.readouterr().err


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_examples_on_newapi_fail_only_for_operations_the_relay_lacks(path, capsys):
    code = main(["validate", str(path), "--provider", "newapi", "--base-url",
                 "https://relay.example.com"])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln and not ln.startswith("    hint:")
             and "cannot perform" not in ln]
    assert code in (0, 2), err
    assert lines == [], err


ADD = """\
version: 1
name: t
provider: {kind: local, poll_interval: 0.05, max_poll_interval: 0.2}
defaults: {negative_tags: heavy metal}
steps:
  bed:
    uses: generate
    with: {prompt: a calm piano piece, instrumental: true}
  sung:
    uses: add_vocals
    with: {audio: "{{ steps.bed.tracks[0] }}", prompt: "[Verse] la la", style: soul,
           title: Voice, model: V5}
  backed:
    uses: add_instrumental
    with: {audio: "{{ steps.sung.tracks[0] }}", tags: "piano, strings", title: Bed,
           model: V5}
"""


@pytest.mark.parametrize("empty_required", ["accept", "refuse"])
def test_add_steps_that_validate_are_accepted_under_either_reading_of_negative_tags(
        tmp_path, empty_required):
    """negativeTags is documented as required; whether an empty one counts is not. The
    fake plays both readings; a recipe that validates (it must give negative_tags) pays
    each step once under both, and one without it is refused before paying."""
    with FakeServer("sunoapi", api_key=KEY, empty_required=empty_required) as server:
        (tmp_path / "r.yaml").write_text(ADD)
        done = run(tmp_path, server.url)
        assert done.returncode == 0, done.stderr
        paid = Counter({p: n for p, n in posts(server).items() if p.startswith("/api/v1/")})
        assert paid == Counter({"/api/v1/generate": 1, "/api/v1/generate/add-vocals": 1,
                                "/api/v1/generate/add-instrumental": 1})
        before = len(server.log)
        (tmp_path / "r.yaml").write_text(ADD.replace("defaults: {negative_tags: heavy metal}\n",
                                                     ""))
        refused = run(tmp_path, server.url)
        assert refused.returncode == 2
        assert "add_vocals on sunoapi needs 'negative_tags'" in refused.stderr
        assert server.log[before:] == []


def test_the_strict_fake_refuses_an_empty_negative_tags():
    import httpx

    with FakeServer("sunoapi", api_key=KEY, empty_required="refuse") as server:
        answer = httpx.post(server.url + "/api/v1/generate/add-vocals", headers={
            "Authorization": f"Bearer {KEY}"}, json={
            "uploadUrl": server.url + "/x.mp3", "callBackUrl": "https://cb.example/x",
            "prompt": "la", "title": "T", "style": "soul", "negativeTags": ""})
        assert answer.json()["code"] == 400
        assert answer.json()["msg"] == "negativeTags is required"


NEWAPI = README_EXTEND.replace("provider: {kind: local,", "provider: {kind: newapi,")


@pytest.mark.parametrize("command", ["validate", "plan", "run"])
def test_a_provider_without_an_address_is_refused_by_validate_as_by_run(command, tmp_path,
                                                                        capsys):
    """What `run` would refuse about the provider, `validate` and `plan` refuse too: a
    relay without its address (it has no default), a --base-url that is not http(s)."""
    (tmp_path / "r.yaml").write_text(NEWAPI)
    assert main([command, str(tmp_path / "r.yaml")]) == 2
    err = capsys.readouterr().err
    assert "r.yaml:3:11: provider newapi needs base_url (the relay's address)\n" \
           "    hint: set provider.base_url, or pass --base-url" in err
    (tmp_path / "l.yaml").write_text(README_EXTEND)
    assert main([command, str(tmp_path / "l.yaml"), "--provider", "newapi"]) == 2
    assert capsys.readouterr().err == (
        "sunoflow: --provider newapi needs the relay's address: --base-url URL, or "
        "base_url in the recipe's provider block\n")
    assert main([command, str(tmp_path / "l.yaml"), "--base-url", "htps://api.sunoapi.org"]) \
        == 2
    assert capsys.readouterr().err == (
        "sunoflow: --base-url htps://api.sunoapi.org: not an http(s) URL (e.g. "
        "https://api.sunoapi.org)\n")
