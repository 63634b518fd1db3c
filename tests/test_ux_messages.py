"""Messages a user meets (issue 20, "Messages"): every template error, before or during the
run or the export, names the file, line and column and the closest name; an export error
keeps the album files that were fine; hints for the usual YAML and scope slips; retry
lines name their step once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from runner.fake import FakeServer


def sunoflow(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runner", *args], cwd=cwd,
                          env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=180, check=False)


EXPORT = """\
version: 1
name: half
steps:
  song:
    uses: generate
    with: {title: Rain, style: pop, prompt: hi}
  parts:
    uses: separate
    with: {audio: "{{ steps.song.tracks[0] }}"}
outputs:
  - path: rain.mp3
    from: "{{ steps.song.tracks[0].file }}"
  - for_each: "{{ steps.parts.stems | dictsort }}"
    path: "stems/{{ item[0] }}.mp3"
    from: "{{ item[1].fil }}"
"""


def test_an_export_error_is_positioned_once_and_keeps_the_files_that_were_fine(tmp_path):
    (tmp_path / "half.yaml").write_text(EXPORT)
    assert sunoflow(tmp_path, "validate", "half.yaml").returncode == 0  # run time only
    r = sunoflow(tmp_path, "run", "half.yaml")
    assert r.returncode == 1
    message = ("half.yaml:15:11: outputs[1].from: item[1] has no field 'fil' (fields: url, "
               "file)\n    hint: did you mean 'file'?\n")
    assert message in r.stderr
    assert r.stderr.count("has no field 'fil'") == 1  # two stems, one message
    assert "export failed (the other album files were written)" in r.stderr
    assert "run failed" in r.stderr
    assert "failed: 2 succeeded" not in r.stderr
    assert "steps: 2 succeeded (of 2 step instances)" in r.stderr
    album = tmp_path / "out" / "half"
    assert (album / "rain.mp3").stat().st_size > 0
    manifest = json.loads((album / "manifest.json").read_text())
    assert [f["path"] for f in manifest["files"]] == ["rain.mp3"]
    report_ok = sunoflow(tmp_path, "run", "half.yaml", "--report", "r.json", "-q")
    assert report_ok.returncode == 1
    report = json.loads((tmp_path / "r.json").read_text())
    assert [o["path"] for o in report["outputs"]] == ["rain.mp3"]


RENDER = """\
version: 1
name: late
vars:
  fields: [title, tittle]
steps:
  song:
    uses: generate
    with: {title: Rain, style: pop, prompt: hi}
  words:
    uses: boost_style
    for_each: "{{ vars.fields }}"
    with:
      content: "{{ steps.song.tracks[0][item] }}"
"""


def test_a_render_error_during_the_run_is_positioned_with_the_closest_name_once(tmp_path):
    (tmp_path / "late.yaml").write_text(RENDER)
    r = sunoflow(tmp_path, "run", "late.yaml", "--keep-going", "--provider", "local")
    assert r.returncode == 1
    message = ("words[1]: cannot render inputs: late.yaml:13:16: steps.words.with.content: "
               "steps.song.tracks[0] has no field 'tittle' (fields: id, task_id, title, "
               "duration, tags, prompt, model, model_name, audio_url, image_url, file, "
               "image_file)\n    hint: did you mean 'title'?")
    assert message in r.stderr
    assert r.stderr.count("has no field 'tittle'") == 1


def test_validate_checks_takes_track_items_and_loops_over_mappings(tmp_path):
    (tmp_path / "v.yaml").write_text("""\
version: 1
vars:
  artist: Me
steps:
  song:
    uses: generate
    with: {title: "{{ artist }}", style: pop, prompt: hi}
  kept:
    uses: generate
    take: 0
    with: {title: B, style: pop, prompt: hi}
  long:
    uses: extend
    with: {audio: "{{ steps.song.tracks[2] }}", continue_at: 10}
  loud:
    uses: normalize
    with: {audio: "{{ steps.kept.tracks[1] }}"}
  parts:
    uses: separate
    with: {audio: "{{ steps.song.tracks[0] }}"}
outputs:
  - for_each: "{{ [steps.song, steps.kept] | map(attribute='tracks') | sum(start=[]) }}"
    path: "{{ item.title }}/{{ item.tittle }}.mp3"
    from: "{{ item.file }}"
  - for_each: "{{ steps.parts.stems }}"
    path: "{{ item }}.mp3"
    from: "{{ item.file }}"
""")
    r = sunoflow(tmp_path, "validate", "v.yaml")
    assert r.returncode == 2
    assert r.stderr == """\
v.yaml:7:19: unknown name 'artist' in template
    hint: did you mean 'vars.artist'?
v.yaml:14:19: steps.song.tracks[2] cannot exist: generate gives 2 tracks
    hint: tracks[0] or tracks[1]
v.yaml:17:19: steps.kept.tracks[1] cannot exist: generate gives 1 track (take keeps one)
    hint: tracks[0]
v.yaml:25:15: for_each over a mapping: '{{ steps.parts.stems }}' gives one value per name \
(vocals, instrumental, backing_vocals, drums, ...), not a list
    hint: loop over its pairs: add '| dictsort' (item[0] is the name, item[1] the value)
"""


def test_item_of_a_flattened_list_of_tracks_is_a_track(tmp_path):
    (tmp_path / "f.yaml").write_text("""\
version: 1
vars:
  titles: [A, B]
steps:
  song:
    uses: generate
    for_each: "{{ vars.titles }}"
    with: {title: "{{ item }}", style: pop, prompt: hi}
outputs:
  - for_each: "{{ steps.song | map(attribute='tracks') | sum(start=[]) }}"
    path: "{{ index }} - {{ item.title }}.mp3"
    from: "{{ item.file }}"
""")
    assert sunoflow(tmp_path, "validate", "f.yaml").returncode == 0
    (tmp_path / "g.yaml").write_text((tmp_path / "f.yaml").read_text()
                                     .replace("item.title", "item.tittle"))
    r = sunoflow(tmp_path, "validate", "g.yaml")
    assert r.stderr == (
        "g.yaml:11:11: item has no field 'tittle' (a track has: id, task_id, title, duration, "
        "tags, prompt, model, model_name, audio_url, image_url, file, image_file, "
        "stream_url)\n"
        "    hint: did you mean 'title'?\n")


def test_an_unquoted_template_gets_a_hint_to_quote_it(tmp_path):
    (tmp_path / "q.yaml").write_text("""\
version: 1
vars:
  songs: [{title: A}]
steps:
  words:
    uses: lyrics
    for_each: "{{ vars.songs }}"
    with:
      prompt: {{ item.title }}
""")
    r = sunoflow(tmp_path, "validate", "q.yaml")
    assert r.returncode == 2
    assert r.stderr == (
        "q.yaml:9:16: a mapping key must be a plain value\n"
        "    hint: quote a value that starts with a template, or YAML reads '{{' as a "
        "mapping: prompt: \"{{ item.title }}\"\n")


def test_a_retry_line_names_its_step_once(tmp_path):
    key = "sk-ux-retry-Key-11"
    (tmp_path / "w.yaml").write_text("""\
version: 1
provider: {kind: sunoapi, poll_interval: 0.05, max_poll_interval: 0.2}
steps:
  words:
    uses: lyrics
    with: {prompt: rain}
""")
    faults = [{"match": {"path": "/api/v1/lyrics"}, "action": {"envelope_code": 430},
               "times": 1}]
    with FakeServer("sunoapi", api_key=key, faults=faults) as srv:
        r = sunoflow(tmp_path, "run", "w.yaml", "--base-url", srv.url, SUNO_API_KEY=key)
    assert r.returncode == 0, r.stderr
    retry = [x for x in r.stderr.splitlines() if "retrying in" in x]
    assert len(retry) == 1
    assert " words: " in retry[0]
    assert "words: words:" not in retry[0]


def test_a_reusable_recipes_output_that_fails_at_run_time_points_into_its_file(tmp_path):
    (tmp_path / "lib.yaml").write_text("""\
version: 1
inputs:
  n: {type: integer, default: 0}
steps:
  first:
    uses: generate
    with: {title: A, style: pop, prompt: hi}
outputs:
  pick: "{{ steps.first.tracks[inputs.n] }}"
""")
    (tmp_path / "top.yaml").write_text("""\
version: 1
steps:
  song:
    uses: ./lib.yaml
    with: {n: 5}
""")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    r = sunoflow(tmp_path, "run", "top.yaml")
    assert r.returncode == 1
    assert ("failed: song: cannot render its outputs: lib.yaml:9:9: outputs.pick: "
            "steps.first.tracks[5]: steps.first.tracks has 2 elements (0-1)\n"
            "    hint: a music step gives two takes (tracks[0] and tracks[1]); most other "
            "steps one\n") in r.stderr
