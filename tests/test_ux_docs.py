"""What each step gives back is documented from the step types themselves: `sunoflow steps`,
the schema's `$defs`, and the README's tables (kept equal to what the code makes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from runner.steps import outputs_doc
from runner.steps.types import TRACK, TYPES

ROOT = Path(__file__).resolve().parent.parent


def sunoflow(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runner", *args], capture_output=True,
                          text=True, timeout=60, check=False, cwd=ROOT)


def test_steps_lists_every_type_with_its_outputs():
    r = sunoflow("steps")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["TYPE", "OUTPUTS"]
    for name, t in TYPES.items():
        assert any(x.split(None, 1) == [name, ", ".join(t.outputs)] for x in lines), name


def test_steps_type_explains_each_output_and_every_track_field():
    r = sunoflow("steps", "generate")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("generate: make a song (two takes)")
    assert "    tracks   list of track: the songs made, in order; a music task makes two " \
           "takes" in r.stdout
    for field in TRACK:
        assert f"\n    {field} " in r.stdout, field
    lyrics = sunoflow("steps", "lyrics").stdout
    assert "    texts    list of {title, text}: every lyrics variant" in lyrics
    stems = sunoflow("steps", "separate").stdout
    assert "    stems    {vocals, instrumental, ...}: each {url, file}" in stems
    words = sunoflow("steps", "timestamped_lyrics").stdout
    assert "    words  list of {word, start, end}" in words
    assert "    lrc    file: the lyrics as an LRC file" in words
    bad = sunoflow("steps", "genrate")
    assert bad.returncode == 2
    assert bad.stderr.startswith("sunoflow: no step type 'genrate'; did you mean 'generate'?")


def test_steps_of_a_reusable_recipe_lists_its_outputs():
    r = sunoflow("steps", "sunoflow:full-song")
    assert r.returncode == 0, r.stderr
    assert "    track       track\n    tracks      list of track\n    file        file\n" \
        in r.stdout
    assert sunoflow("steps", "sunoflow:ful-song").stderr.startswith(
        "sunoflow: no stock recipe 'sunoflow:ful-song'; did you mean 'full-song'?")


def test_the_schema_documents_outputs():
    schema = json.loads(sunoflow("schema").stdout)
    defs = schema["$defs"]
    assert set(defs["track"]["properties"]) == set(TRACK)
    for name, t in TYPES.items():
        assert set(defs[f"outputs_{name}"]["properties"]) == set(t.outputs), name
    assert defs["outputs_generate"]["properties"]["tracks"] == {
        "type": "array", "items": {"$ref": "#/$defs/track"},
        "description": outputs_doc.OUTPUT_WORDS["tracks"]}
    # The committed copy is the same (editors read it).
    assert json.loads((ROOT / "schemas" / "recipe.schema.json").read_text()) == schema


def test_the_readme_tables_are_the_generated_ones():
    readme = (ROOT / "README.md").read_text()
    assert outputs_doc.steps_table() in readme
    assert outputs_doc.track_table() in readme


def test_every_output_and_track_field_has_words():
    # A field added to a step type must be explained where users read about it.
    assert set(TRACK) == set(outputs_doc.TRACK_WORDS)
    names = {n for t in TYPES.values() for n in t.outputs}
    assert names <= set(outputs_doc.OUTPUT_WORDS), names - set(outputs_doc.OUTPUT_WORDS)


def test_the_readmes_first_recipe_runs_as_written_on_the_local_provider(tmp_path):
    """The recipe a new user copies first: free on the local provider (whose takes last 30
    s: a `continue_at` of `duration - 30` there is 0, outside the take)."""
    from runner.studio.probe import probe

    readme = (ROOT / "README.md").read_text()
    block = readme.split("## A recipe\n\n```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "summer.yaml").write_text(block)
    run = subprocess.run([sys.executable, "-m", "runner", "run", "summer.yaml", "--provider",
                          "local"], capture_output=True, text=True, timeout=120,
                         check=False, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    album = tmp_path / "out" / "summer"
    for name in ("01 - Sunrise.mp3", "02 - Noon.mp3"):
        assert probe(album / name).format == "mp3"
