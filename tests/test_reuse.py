"""Reusable recipes (`uses: ./path/to/recipe.yaml`): the stock recipes in recipes/ run on
the local provider, calls nest and fan out, and their steps are ordinary steps for keys,
the journal, the lock, --only, --force, status, plan and graph.

Every test runs `python -m runner` on real recipe files laid out as in the repository
(recipes/ beside the folder of the calling recipe). Takes are a few seconds long.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from project import git_init

from runner.studio import compose
from runner.studio.probe import probe

ROOT = Path(__file__).resolve().parent.parent
LOCAL = "provider: {kind: local, take_seconds: 3}"


def sunoflow(*args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runner", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=timeout)


@pytest.fixture
def album(tmp_path: Path) -> Path:
    """A folder for the calling recipe, with the stock recipes at ../recipes/."""
    shutil.copytree(ROOT / "recipes", tmp_path / "recipes")
    (tmp_path / "album").mkdir()
    git_init(tmp_path)  # a project: recipes may call recipes anywhere in its work tree
    return tmp_path / "album"


def write(folder: Path, name: str, text: str) -> Path:
    p = folder / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def report(path: Path) -> dict:
    return json.loads(path.read_text())


def statuses(path: Path) -> dict[str, str]:
    return {s["id"]: s["status"] for s in report(path)["steps"]}


# --- the stock recipes ---------------------------------------------------------------

def test_full_song_and_master_make_a_whole_tagged_track(album: Path):
    write(album, "one.yaml", f"""\
version: 1
name: one
{LOCAL}
steps:
  song:
    uses: ../recipes/full-song.yaml
    with: {{title: Harbour, style: folk, lyrics: "[Verse] gulls over the water", tail: 1}}
  master:
    uses: ../recipes/master.yaml
    with: {{audio: "{{{{ steps.song.track }}}}", format: flac, title: Harbour,
           artist: The Gulls, track: 1}}
outputs:
  - path: Harbour.flac
    from: "{{{{ steps.master.file }}}}"
""")
    r = sunoflow("run", "one.yaml", "--report", "r.json", cwd=album)
    assert r.returncode == 0, r.stderr
    info = probe(album / "out" / "one" / "Harbour.flac")
    assert info.format == "flac"
    # A 3 s take extended from 1 s before its end by a 3 s continuation: 5 s in all.
    assert abs(info.duration - 5.0) < 0.1
    from mutagen.flac import FLAC

    tags = FLAC(album / "out" / "one" / "Harbour.flac")
    assert (tags["TITLE"], tags["ARTIST"], tags["TRACKNUMBER"]) == (["Harbour"], ["The Gulls"],
                                                                    ["1"])
    st = statuses(album / "r.json")
    assert {k: v for k, v in st.items() if "/" in k} == {
        "song/first": "succeeded", "song/whole": "succeeded", "master/loud": "succeeded",
        "master/encoded": "succeeded", "master/tagged": "succeeded"}
    # The call itself is reported with the callee's outputs.
    call = next(s for s in report(album / "r.json")["steps"] if s["id"] == "song")
    assert set(call["outputs"]) == {"track", "tracks", "file", "first_take"}
    lock = (album / "one.lock").read_text()
    for iid in ("song/first", "song/whole", "master/tagged"):
        assert iid in yaml.safe_load(lock)["steps"]

    again = sunoflow("run", "one.yaml", "--report", "r2.json", cwd=album)
    assert again.returncode == 0, again.stderr
    assert {v for k, v in statuses(album / "r2.json").items() if "/" in k} == {"cached"}


def test_karaoke_makes_backing_track_lyrics_timing_and_video(album: Path):
    write(album, "k.yaml", f"""\
version: 1
name: k
{LOCAL}
steps:
  song:
    uses: generate
    with: {{title: Road, style: pop rock, prompt: "[Chorus] open road, open road"}}
  sing:
    uses: ../recipes/karaoke.yaml
    with: {{audio: "{{{{ steps.song.tracks[0] }}}}", title: Road}}
outputs:
  - path: Road (karaoke).mp3
    from: "{{{{ steps.sing.backing_file }}}}"
    lrc: "{{{{ steps.sing.lrc }}}}"
  - path: Road.mp4
    from: "{{{{ steps.sing.video }}}}"
  - path: Road (vocals).mp3
    from: "{{{{ steps.sing.vocals_file }}}}"
""")
    r = sunoflow("run", "k.yaml", cwd=album)
    assert r.returncode == 0, r.stderr
    out = album / "out" / "k"
    assert (out / "Road (karaoke).lrc").read_text().startswith("[")
    assert probe(out / "Road (karaoke).mp3").format == "mp3"
    assert probe(out / "Road (vocals).mp3").format == "mp3"
    video = probe(out / "Road.mp4")
    assert video.video_codec is not None


def test_remix_covers_a_local_file(album: Path):
    compose.synth(album / "demo.mp3", seed="demo", duration=3.0, style="folk")
    write(album, "r.yaml", f"""\
version: 1
name: r
{LOCAL}
steps:
  remix:
    uses: ../recipes/remix.yaml
    with: {{file: demo.mp3, title: Demo (remix), style: synthwave, lyrics: "[Verse] neon"}}
outputs:
  - path: Demo (remix).mp3
    from: "{{{{ steps.remix.file }}}}"
""")
    r = sunoflow("run", "r.yaml", cwd=album)
    assert r.returncode == 0, r.stderr
    info = probe(album / "out" / "r" / "Demo (remix).mp3")
    assert abs(info.duration - probe(album / "demo.mp3").duration) < 0.1

    write(album, "bad.yaml", (album / "r.yaml").read_text().replace("demo.mp3", "nope.mp3"))
    bad = sunoflow("validate", "bad.yaml", cwd=album)
    assert bad.returncode == 2
    assert bad.stderr.startswith("bad.yaml:7:18: steps.remix.with.file: no file 'nope.mp3' "
                                 "beside bad.yaml\n")


def test_stems_give_a_folder_per_stem(album: Path):
    write(album, "s.yaml", f"""\
version: 1
name: s
{LOCAL}
steps:
  song:
    uses: generate
    with: {{title: Tide, style: funk, prompt: "[Verse] low tide"}}
  parts:
    uses: ../recipes/stems.yaml
    with: {{audio: "{{{{ steps.song.tracks[0] }}}}"}}
outputs:
  - for_each: "{{{{ steps.parts.each }}}}"
    path: "stems/{{{{ item[0] }}}}/Tide.mp3"
    from: "{{{{ item[1].file }}}}"
""")
    r = sunoflow("run", "s.yaml", cwd=album)
    assert r.returncode == 0, r.stderr
    folders = sorted(p.name for p in (album / "out" / "s" / "stems").iterdir())
    # What the local provider's split_stem returns; the service returns up to twelve.
    assert folders == ["bass", "drums", "fx", "keyboard", "vocals"]
    for name in folders:
        assert probe(album / "out" / "s" / "stems" / name / "Tide.mp3").format == "mp3"


def test_every_stock_recipe_validates_on_its_own(album: Path):
    for p in sorted((ROOT / "recipes").glob("*.yaml")):
        r = sunoflow("validate", str(p), "--provider", "sunoapi", cwd=album)
        assert r.returncode == 0, r.stderr
        head = p.read_text().split("\nversion:")[0]
        assert "Cost per call" in head, p.name  # each says what it costs


def test_a_reusable_recipe_with_required_inputs_is_not_run_directly(album: Path):
    r = sunoflow("run", "../recipes/master.yaml", cwd=album)
    assert r.returncode == 2
    assert "input 'audio' has no default" in r.stderr


# --- nesting, fan-out, selection -----------------------------------------------------

INNER = """\
version: 1
inputs:
  theme: {type: string}
steps:
  words:
    uses: lyrics
    with: {prompt: "a song about {{ inputs.theme }}"}
outputs:
  title: "{{ steps.words.title }}"
  text: "{{ steps.words.text }}"
"""

OUTER = """\
version: 1
inputs:
  themes: {type: array}
  mood: {type: string, default: calm}
steps:
  each:
    uses: ./inner.yaml
    for_each: [0, 1]
    with: {theme: "{{ inputs.mood }} {{ inputs.themes[index] }}"}
  joined:
    uses: boost_style
    with: {content: "{{ steps.each[0].title }}, {{ steps.each[1].title }}"}
  again:
    uses: lyrics
    for_each: "{{ steps.each }}"
    with: {prompt: "{{ item.title }}, once more"}
outputs:
  style: "{{ steps.joined.text }}"
  titles: "{{ steps.each }}"
"""

NESTED = """\
version: 1
name: nested
vars:
  pairs: [[sea, sky], [rain, snow]]
steps:
  duo:
    uses: ./lib/outer.yaml
    for_each: "{{ vars.pairs }}"
    with: {themes: "{{ item }}"}
  final:
    uses: lyrics
    for_each: "{{ steps.duo }}"
    with: {prompt: "{{ item.style }}"}
  other:
    uses: lyrics
    with: {prompt: a song about nothing in particular}
"""


@pytest.fixture
def nested(tmp_path: Path) -> Path:
    write(tmp_path, "lib/inner.yaml", INNER)
    write(tmp_path, "lib/outer.yaml", OUTER)
    write(tmp_path, "nested.yaml", NESTED)
    return tmp_path


INNER_IDS = [f"duo[{i}]/each[{j}]/words" for i in range(2) for j in range(2)]
AGAIN_IDS = [f"duo[{i}]/again[{j}]" for i in range(2) for j in range(2)]
ALL_IDS = {*INNER_IDS, *AGAIN_IDS, "duo[0]/joined", "duo[1]/joined", "final[0]", "final[1]",
           "other"}


def test_nested_calls_fan_out_and_run_as_ordinary_steps(nested: Path):
    plan = sunoflow("plan", "nested.yaml", "--json", cwd=nested)
    assert plan.returncode == 0, plan.stderr
    rows = {r["id"]: r for r in json.loads(plan.stdout)["instances"]}
    assert set(rows) == ALL_IDS
    assert rows["duo[1]/joined"]["needs"] == ["duo[1]/each[0]", "duo[1]/each[1]"]  # calls
    assert rows["final[0]"]["needs"] == ["duo[0]"]
    assert rows["duo[0]/each[1]/words"]["needs"] == []
    assert rows["duo[1]/again[0]"]["needs"] == ["duo[1]/each[0]"]  # item from a call

    r = sunoflow("run", "nested.yaml", "--report", "r.json", cwd=nested)
    assert r.returncode == 0, r.stderr
    st = statuses(nested / "r.json")
    assert {k: v for k, v in st.items() if k in ALL_IDS} == {k: "succeeded" for k in ALL_IDS}
    outputs = {s["id"]: s["outputs"] for s in report(nested / "r.json")["steps"]}
    # A call's outputs are the callee's, rendered in the call's own scope.
    assert outputs["duo[1]"]["style"] == outputs["duo[1]/joined"]["text"]
    assert outputs["final[1]"]["texts"]
    assert outputs["duo[1]/again[1]"]["text"]
    prompts = {s["id"]: s for s in report(nested / "r.json")["steps"]}
    assert prompts["duo[1]/each[0]/words"]["key"] != prompts["duo[0]/each[0]/words"]["key"]

    status = sunoflow("status", "nested.yaml", cwd=nested)
    assert status.returncode == 0, status.stderr
    assert "duo[1]/each[0]/words  done" in status.stdout
    assert status.stdout.strip().endswith("13 done")

    # The lock names every inner instance; a frozen rebuild from it alone makes the same.
    lock = (nested / "nested.lock").read_text()
    assert set(ALL_IDS) <= set(yaml.safe_load(lock)["steps"])
    shutil.rmtree(nested / ".sunoflow")
    frozen = sunoflow("run", "nested.yaml", "--frozen", "--report", "z.json", cwd=nested)
    assert frozen.returncode == 0, frozen.stderr
    again = {s["id"]: s["outputs"] for s in report(nested / "z.json")["steps"]}
    assert {k: again[k] for k in ALL_IDS} == {k: outputs[k] for k in ALL_IDS}

    graph = sunoflow("graph", "nested.yaml", cwd=nested)
    assert 'duo__each__words["duo/each/words: lyrics x4"]' in graph.stdout
    assert "duo__each__words --> duo__each" in graph.stdout
    assert "duo__each --> duo__joined" in graph.stdout
    assert "duo --> final" in graph.stdout


def test_force_and_only_take_calls_and_inner_steps(nested: Path):
    assert sunoflow("run", "nested.yaml", "-q", cwd=nested).returncode == 0

    r = sunoflow("run", "nested.yaml", "--force", "duo/joined", "--report", "f.json",
                 cwd=nested)
    assert r.returncode == 0, r.stderr
    st = statuses(nested / "f.json")
    rerun = {k for k, v in st.items() if v == "succeeded" and k in ALL_IDS}
    assert rerun == {"duo[0]/joined", "duo[1]/joined", "final[0]", "final[1]"}

    r = sunoflow("run", "nested.yaml", "--force", "duo", "--report", "g.json", cwd=nested)
    assert r.returncode == 0, r.stderr
    st = statuses(nested / "g.json")
    assert {k for k, v in st.items() if v == "succeeded" and k in ALL_IDS} == ALL_IDS - {"other"}

    shutil.rmtree(nested / ".sunoflow")
    r = sunoflow("run", "nested.yaml", "--only", "duo/each/words", "--report", "o.json",
                 cwd=nested)
    assert r.returncode == 0, r.stderr
    assert {k for k in statuses(nested / "o.json") if k in ALL_IDS} == set(INNER_IDS)

    r = sunoflow("run", "nested.yaml", "--only", "final", "--report", "p.json", cwd=nested)
    assert r.returncode == 0, r.stderr
    st = statuses(nested / "p.json")
    # final needs the calls, which end when all their steps have.
    assert {k for k in st if k in ALL_IDS} == ALL_IDS - {"other"}
    assert {st[k] for k in INNER_IDS} == {"cached"}

    bad = sunoflow("run", "nested.yaml", "--only", "duo/joind", cwd=nested)
    assert bad.returncode == 2
    assert "no step 'duo/joind' in nested.yaml; did you mean 'duo/joined'?" in bad.stderr


def test_editing_a_callee_reruns_its_changed_step_and_what_follows(nested: Path):
    assert sunoflow("run", "nested.yaml", "-q", cwd=nested).returncode == 0
    write(nested, "lib/outer.yaml", OUTER.replace("{{ steps.each[0].title }}, ",
                                                  "{{ steps.each[0].title }} and "))
    r = sunoflow("run", "nested.yaml", "--report", "r.json", cwd=nested)
    assert r.returncode == 0, r.stderr
    st = statuses(nested / "r.json")
    assert {k for k, v in st.items() if v == "succeeded" and k in ALL_IDS} == {
        "duo[0]/joined", "duo[1]/joined", "final[0]", "final[1]"}
    assert {st[k] for k in INNER_IDS + AGAIN_IDS} == {"cached"}


# --- what only the run can check -------------------------------------------------------

def test_a_rendered_input_of_the_wrong_type_fails_the_call_with_both_positions(tmp_path: Path):
    write(tmp_path, "lib/count.yaml", """\
version: 1
inputs:
  count: {type: integer}
steps:
  words:
    uses: lyrics
    with: {prompt: "{{ inputs.count }} birds"}
""")
    write(tmp_path, "t.yaml", """\
version: 1
steps:
  first:
    uses: lyrics
    with: {prompt: birds}
  use:
    uses: ./lib/count.yaml
    with: {count: "{{ steps.first.title }}"}
""")
    r = sunoflow("run", "t.yaml", "--report", "r.json", cwd=tmp_path)
    assert r.returncode == 1
    title = next(s for s in report(tmp_path / "r.json")["steps"]
                 if s["id"] == "first")["outputs"]["title"]
    message = (f"use: input 'count' of lib/count.yaml must be a whole number; got a string "
               f"'{title}' (t.yaml:8:19; declared at lib/count.yaml:3:3)")
    assert f"failed: {message}" in r.stderr
    st = statuses(tmp_path / "r.json")
    assert st["use:inputs"] == "failed"
    assert st["use/words"] == "skipped"


def test_a_call_whose_condition_is_false_skips_its_steps_and_dependents(tmp_path: Path):
    write(tmp_path, "lib/one.yaml", INNER)
    write(tmp_path, "t.yaml", """\
version: 1
vars: {go: false}
steps:
  maybe:
    uses: ./lib/one.yaml
    if: "{{ vars.go }}"
    with: {theme: rain}
  after:
    uses: lyrics
    with: {prompt: "{{ steps.maybe.title }}"}
""")
    r = sunoflow("run", "t.yaml", "--report", "r.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    st = statuses(tmp_path / "r.json")
    assert (st["maybe:inputs"], st["maybe/words"], st["after"]) == ("skipped",) * 3


def test_the_same_step_of_two_calls_with_the_same_inputs_is_paid_once(tmp_path: Path):
    """Two calls that render the same inputs for a step have the same key: one paid task,
    the other call takes its result, even when both are ready at the same moment."""
    from runner.fake import FakeServer

    write(tmp_path, "lib/one.yaml", INNER)
    write(tmp_path, "t.yaml", """\
version: 1
provider: {kind: sunoapi, poll_interval: 0.05}
steps:
  a:
    uses: ./lib/one.yaml
    with: {theme: rain}
  b:
    uses: ./lib/one.yaml
    with: {theme: rain}
""")
    key = "sk-reuse-twice-7f2"
    with FakeServer("sunoapi", api_key=key) as srv:
        r = subprocess.run([sys.executable, "-m", "runner", "run", "t.yaml", "--base-url",
                            srv.url, "--report", "r.json"], cwd=tmp_path, text=True,
                           capture_output=True, timeout=120,
                           env={**os.environ, "SUNO_API_KEY": key})
        assert r.returncode == 0, r.stderr
        posts = [e for e in srv.log if e["method"] == "POST" and e["path"] == "/api/v1/lyrics"]
    assert len(posts) == 1
    st = statuses(tmp_path / "r.json")
    assert sorted([st["a/words"], st["b/words"]]) == ["cached", "succeeded"]


# --- where a reusable recipe may come from -------------------------------------------

CALLER = """\
version: 1
name: caller
steps:
  words:
    uses: {uses}
    with: {{theme: rain}}
"""


def outside_recipe(tmp_path: Path) -> Path:
    """A recipe outside the caller's project, whose text must never be shown."""
    return write(tmp_path / "elsewhere", "secret.yaml", "version: 1\nsteps: {leaked-token-42\n")


def test_a_reusable_recipe_outside_the_project_is_refused_unread(tmp_path: Path):
    outside_recipe(tmp_path)
    project = tmp_path / "project"
    git_init(project)
    write(project, "album/caller.yaml", CALLER.format(uses="../../elsewhere/secret.yaml"))
    r = sunoflow("validate", "album/caller.yaml", cwd=project)
    assert r.returncode == 2, r.stderr
    assert "album/caller.yaml:5:11: steps.words.uses: path '../../elsewhere/secret.yaml' is " \
        "outside the project" in r.stderr
    assert "leaked-token-42" not in r.stderr + r.stdout
    assert "Traceback" not in r.stderr
    # Allowed on purpose by the person running it: read (and its own error shown).
    r = sunoflow("validate", "album/caller.yaml", "--allow-path", str(tmp_path / "elsewhere"),
                 cwd=project)
    assert r.returncode == 2
    assert "outside the project" not in r.stderr
    assert "secret.yaml" in r.stderr


def test_without_git_the_recipes_folder_is_the_limit_and_existence_is_not_probed(
        tmp_path: Path):
    write(tmp_path / "lib", "inner.yaml", INNER)
    write(tmp_path / "album", "caller.yaml", CALLER.format(uses="../lib/inner.yaml"))
    write(tmp_path / "album", "probe.yaml", CALLER.format(uses="../lib/missing.yaml"))
    r = sunoflow("validate", "caller.yaml", cwd=tmp_path / "album")
    assert r.returncode == 2
    assert "is outside the recipe's folder" in r.stderr
    assert "--allow-path" in r.stderr
    # A missing file outside gets the same answer as one that exists.
    r = sunoflow("validate", "probe.yaml", cwd=tmp_path / "album")
    assert "is outside the recipe's folder" in r.stderr
    assert "no recipe file" not in r.stderr


def test_a_symbolic_link_out_of_the_project_or_into_git_is_refused(tmp_path: Path):
    outside_recipe(tmp_path)
    project = tmp_path / "project"
    git_init(project)
    (project / "lib").mkdir()
    (project / "lib" / "linked.yaml").symlink_to(tmp_path / "elsewhere" / "secret.yaml")
    (project / ".git" / "hooks" / "inner.yaml").write_text(INNER)
    write(project, "a.yaml", CALLER.format(uses="./lib/linked.yaml"))
    write(project, "b.yaml", CALLER.format(uses="./.git/hooks/inner.yaml"))
    r = sunoflow("validate", "a.yaml", cwd=project)
    assert r.returncode == 2
    assert "leads through a symbolic link" in r.stderr
    assert "leaked-token-42" not in r.stderr
    r = sunoflow("validate", "b.yaml", cwd=project)
    assert r.returncode == 2
    assert "inside .git" in r.stderr


# --- stock recipes by name -------------------------------------------------------------

STOCK_CALLER = """\
version: 1
name: by-name
steps:
  words:
    uses: lyrics
    with: {prompt: a song about the sea}
  song:
    uses: sunoflow:full-song
    with: {title: Tide, style: sea shanty, lyrics: "{{ steps.words.text }}"}
  master:
    uses: sunoflow:master
    with: {audio: "{{ steps.song.track }}", title: Tide, artist: The Band}
outputs:
  - path: tide.mp3
    from: "{{ steps.master.file }}"
"""


def test_a_stock_recipe_is_called_by_name_from_any_folder(tmp_path: Path):
    # No recipes beside it and no git work tree: the stock recipes come with sunoflow.
    write(tmp_path, "r.yaml", STOCK_CALLER)
    r = sunoflow("run", "r.yaml", "--report", "rep.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    st = statuses(tmp_path / "rep.json")
    assert st["song/first"] == st["song/whole"] == st["master/tagged"] == "succeeded"
    info = probe(tmp_path / "out" / "r" / "tide.mp3")
    assert info.duration > 1


def test_an_unknown_stock_recipe_is_positioned_with_a_suggestion(tmp_path: Path):
    write(tmp_path, "r.yaml", STOCK_CALLER.replace("sunoflow:master", "sunoflow:mastr"))
    r = sunoflow("validate", "r.yaml", cwd=tmp_path)
    assert r.returncode == 2
    assert "r.yaml:11:11: steps.master.uses: no stock recipe 'mastr'" in r.stderr
    assert "did you mean 'master'?" in r.stderr
