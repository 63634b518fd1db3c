"""A reusable recipe that loops over its inputs (`for_each: "{{ inputs.songs }}"`): each
call fans out to the length of its own list, known before the run (a literal, vars, the
item of the caller's loop, a default); a list known only during the run is refused at
validation, at the call, naming the callee's loop.

Every test runs `python -m runner` on real recipe files in a temporary project (the
local provider, or the sunoapi fake on loopback for what is paid).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import yaml
from project import git_init

from runner.fake import FakeServer

LOCAL = "provider: {kind: local, take_seconds: 2}"
KEY = "sk-loops-over-inputs-31c"

SIDE = """\
version: 1
inputs:
  songs: {type: array}
  style: {type: string, default: folk}
steps:
  words:
    uses: lyrics
    for_each: "{{ inputs.songs }}"
    with: {prompt: "a song about {{ item }}"}
  song:
    uses: generate
    for_each: "{{ steps.words }}"
    with: {title: "{{ inputs.songs[index] }}", style: "{{ inputs.style }}",
           prompt: "{{ item.text }}"}
  opener:
    uses: lyrics
    with: {prompt: "{{ steps.words[0].title }} opens the side"}
outputs:
  tracks: "{{ steps.song }}"
  opener: "{{ steps.opener.text }}"
"""

ALBUM = f"""\
version: 1
name: sides
{LOCAL}
vars:
  a_side: [sea, sky, rain]
  sides: [[hill, dale], [moor]]
steps:
  lit:
    uses: ./lib/side.yaml
    with: {{songs: [dawn, dusk]}}
  fromvars:
    uses: ./lib/side.yaml
    with: {{songs: "{{{{ vars.a_side }}}}", style: jazz}}
  each:
    uses: ./lib/side.yaml
    for_each: "{{{{ vars.sides }}}}"
    with: {{songs: "{{{{ item }}}}"}}
"""


def sunoflow(*args: str, cwd: Path, env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runner", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=180, env=env)


def write(folder: Path, name: str, text: str) -> Path:
    p = folder / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def project(tmp_path: Path, album: str = ALBUM, side: str = SIDE) -> Path:
    write(tmp_path, "lib/side.yaml", side)
    write(tmp_path, "album.yaml", album)
    git_init(tmp_path)
    return tmp_path


def steps_of(report: Path) -> dict[str, dict]:
    return {s["id"]: s for s in json.loads(report.read_text())["steps"]}


# (call, the songs it loops over)
CALLS = {"lit": ["dawn", "dusk"], "fromvars": ["sea", "sky", "rain"], "each[0]": ["hill", "dale"],
         "each[1]": ["moor"]}
INNER = {f"{call}/{sid}[{j}]" for call, songs in CALLS.items() for sid in ("words", "song")
         for j in range(len(songs))} | {f"{call}/opener" for call in CALLS}


def test_each_call_fans_out_to_its_own_list(tmp_path: Path):
    root = project(tmp_path)
    plan = sunoflow("plan", "album.yaml", "--json", cwd=root)
    assert plan.returncode == 0, plan.stderr
    rows = {r["id"]: r for r in json.loads(plan.stdout)["instances"]}
    assert set(rows) == INNER
    assert rows["fromvars/song[2]"]["needs"] == ["fromvars/words[2]"]
    assert rows["each[1]/opener"]["needs"] == ["each[1]/words[0]"]

    r = sunoflow("run", "album.yaml", "--report", "r.json", cwd=root)
    assert r.returncode == 0, r.stderr
    steps = steps_of(root / "r.json")
    assert {i: steps[i]["status"] for i in INNER} == {i: "succeeded" for i in INNER}
    for call, songs in CALLS.items():
        # The call's outputs: one entry per song of its own list, in order, each titled
        # from `inputs.songs[index]` and written from `steps.words` of the same index.
        tracks = steps[call]["outputs"]["tracks"]
        assert [t["tracks"][0]["title"] for t in tracks] == songs
        for j in range(len(songs)):
            assert steps[f"{call}/song[{j}]"]["outputs"]["tracks"][0]["prompt"] == \
                steps[f"{call}/words[{j}]"]["outputs"]["text"]
        assert steps[call]["outputs"]["opener"] == steps[f"{call}/opener"]["outputs"]["text"]
    assert {t["tracks"][0]["tags"] for t in steps["fromvars"]["outputs"]["tracks"]} == {"jazz"}
    assert {t["tracks"][0]["tags"] for t in steps["lit"]["outputs"]["tracks"]} == {"folk"}

    lock = yaml.safe_load((root / "album.lock").read_text())
    assert INNER <= set(lock["steps"])
    status = sunoflow("status", "album.yaml", cwd=root)
    assert status.returncode == 0, status.stderr
    assert "each[1]/song[0]" in status.stdout
    assert "each[1]/song[1]" not in status.stdout
    assert status.stdout.strip().endswith(f"{len(INNER)} done")
    graph = sunoflow("graph", "album.yaml", cwd=root)
    assert 'each__words["each/words: lyrics x3"]' in graph.stdout

    # Never pay twice: the keys are built from the rendered inputs, as for any step.
    again = sunoflow("run", "album.yaml", "--report", "r2.json", cwd=root)
    assert again.returncode == 0, again.stderr
    assert {steps_of(root / "r2.json")[i]["status"] for i in INNER} == {"cached"}

    # Inner paths select every call's instances of that step, however many each has.
    forced = sunoflow("run", "album.yaml", "--force", "each/song", "--report", "f.json",
                      cwd=root)
    assert forced.returncode == 0, forced.stderr
    st = steps_of(root / "f.json")
    assert {i for i in INNER if st[i]["status"] == "succeeded"} == {
        "each[0]/song[0]", "each[0]/song[1]", "each[1]/song[0]"}


def test_a_callee_run_on_its_own_loops_over_its_defaults(tmp_path: Path):
    root = project(tmp_path)
    # Validated on its own, as any reusable recipe with required inputs: what does not
    # depend on their values is checked.
    r = sunoflow("validate", "lib/side.yaml", cwd=root)
    assert r.returncode == 0, r.stderr
    assert "its loops over inputs are checked where it is used" in r.stdout
    r = sunoflow("plan", "lib/side.yaml", cwd=root)
    assert r.returncode == 2
    assert r.stderr.startswith("lib/side.yaml:8:15: for_each uses input 'songs', which has no "
                               "default")
    r = sunoflow("run", "lib/side.yaml", cwd=root)
    assert r.returncode == 2
    assert "input 'songs' has no default" in r.stderr

    write(root, "lib/side.yaml", SIDE.replace("songs: {type: array}",
                                              "songs: {type: array, default: [one, two]}"))
    r = sunoflow("run", "lib/side.yaml", "--report", "r.json", cwd=root)
    assert r.returncode == 0, r.stderr
    steps = steps_of(root / "r.json")
    assert [steps[f"song[{j}]"]["outputs"]["tracks"][0]["title"] for j in (0, 1)] == [
        "one", "two"]
    assert "song[2]" not in steps


def test_an_index_out_of_range_for_one_call_names_that_call(tmp_path: Path):
    side = SIDE.replace("steps.words[0].title", "steps.words[2].title")
    root = project(tmp_path, side=side)
    r = sunoflow("validate", "album.yaml", cwd=root)
    assert r.returncode == 2
    # fromvars has three songs: only the calls with fewer are wrong, each named.
    assert r.stderr.splitlines() == [
        "lib/side.yaml:17:20: steps.words[2]: 'words' has 1 instance (0-0) (for the call "
        "each[1] at album.yaml:17:19)",
        "lib/side.yaml:17:20: steps.words[2]: 'words' has 2 instances (0-1) (for the call "
        "each[0] at album.yaml:17:19)",
        "lib/side.yaml:17:20: steps.words[2]: 'words' has 2 instances (0-1) (for the call "
        "lit at album.yaml:10:19)"]


LATE = """\
version: 1
name: late
provider: {kind: sunoapi, poll_interval: 0.05}
steps:
  ideas:
    uses: lyrics
    with: {prompt: three places}
  side:
    uses: ./lib/side.yaml
    with: {songs: "{{ steps.ideas.texts }}"}
"""


def fake_env() -> dict[str, str]:
    return {**os.environ, "SUNO_API_KEY": KEY}


def test_a_list_known_only_during_the_run_is_refused_before_anything_is_paid(tmp_path: Path):
    root = project(tmp_path, album=LATE)
    with FakeServer("sunoapi", api_key=KEY) as srv:
        r = sunoflow("run", "album.yaml", "--base-url", srv.url, cwd=root, env=fake_env())
        posts = [e for e in srv.log if e["method"] == "POST"]
    assert r.returncode == 2
    assert posts == []
    assert r.stderr.splitlines()[0] == (
        "album.yaml:10:19: steps.side.with.songs: input 'songs' of lib/side.yaml is known "
        "only during the run (it comes from a step's outputs), but steps.words.for_each at "
        "lib/side.yaml:8:15 loops over it, and a loop's length must be known before the run")
    assert "hint: pass a literal list or vars" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_value_that_is_not_a_list_is_refused_at_the_call(tmp_path: Path):
    side = SIDE.replace("songs: {type: array}", "songs: {description: the songs}")
    album = ALBUM.replace("{songs: [dawn, dusk]}", "{songs: dawn}")
    root = project(tmp_path, album=album, side=side)
    r = sunoflow("validate", "album.yaml", cwd=root)
    assert r.returncode == 2
    assert r.stderr.splitlines()[0] == (
        "album.yaml:10:19: steps.lit.with.songs: steps.words.for_each of lib/side.yaml "
        "(lib/side.yaml:8:15) must give a list; with this 'songs' it gives a string 'dawn'")


def test_a_second_run_against_the_service_submits_nothing(tmp_path: Path):
    album = """\
version: 1
name: paid
provider: {kind: sunoapi, poll_interval: 0.05}
vars:
  sides: [[hill, dale], [moor]]
steps:
  each:
    uses: ./lib/side.yaml
    for_each: "{{ vars.sides }}"
    with: {songs: "{{ item }}"}
"""
    root = project(tmp_path, album=album)
    with FakeServer("sunoapi", api_key=KEY) as srv:
        first = sunoflow("run", "album.yaml", "--base-url", srv.url, "--report", "r.json",
                         cwd=root, env=fake_env())
        assert first.returncode == 0, first.stderr
        paid = Counter(e["path"] for e in srv.log if e["method"] == "POST")
        before = len(srv.log)
        second = sunoflow("run", "album.yaml", "--base-url", srv.url, "--report", "r2.json",
                          cwd=root, env=fake_env())
        assert second.returncode == 0, second.stderr
        again = [e for e in srv.log[before:] if e["method"] == "POST"]
    # Three songs in two calls: three lyrics, three songs, and one opener per call.
    assert paid == Counter({"/api/v1/lyrics": 5, "/api/v1/generate": 3})
    assert again == []
    steps = steps_of(root / "r2.json")
    inner = [i for i in steps if "/" in i and not i.endswith(":inputs")]
    assert len(inner) == 8
    assert {steps[i]["status"] for i in inner} == {"cached"}


def test_early_release_marks_follow_each_calls_own_instances(tmp_path: Path):
    from runner.plan.build import build
    from runner.recipe import load as recipe

    side = SIDE.replace("outputs:\n", """\
  wav:
    uses: convert
    for_each: "{{ steps.song }}"
    with: {audio: "{{ item.tracks[0] }}", format: wav}
outputs:
""")
    root = project(tmp_path, side=side)
    plan = build(recipe.load(root / "album.yaml"))
    early = {i.id: i.early for i in plan.instances.values() if i.id.endswith("]") and
             "/wav[" in i.id}
    assert early == {f"{call}/wav[{j}]": (f"{call}/song[{j}]",)
                     for call, songs in CALLS.items() for j in range(len(songs))}


def test_only_and_reroll_take_a_step_inside_every_call(tmp_path: Path):
    root = project(tmp_path)
    r = sunoflow("run", "album.yaml", "--only", "each/words", "--report", "o.json", cwd=root)
    assert r.returncode == 0, r.stderr
    ran = {i for i, s in steps_of(root / "o.json").items() if s["status"] == "succeeded"}
    assert ran & INNER == {"each[0]/words[0]", "each[0]/words[1]", "each[1]/words[0]"}
    r = sunoflow("reroll", "album.yaml", "each/opener", "--yes", cwd=root)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("reroll each/opener: 2 step instances run again (each/opener)")
