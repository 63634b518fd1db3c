"""NAME.takes.yaml: the takes kept per song (`sunoflow review`'s "Keep"), read with the
recipe, applied per instance by the plan, and checked with positioned messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from runner.plan import build as planner
from runner.recipe import load as recipe

RECIPE = """\
version: 1
name: t
vars: {n: [a, b]}
steps:
  song:
    uses: generate
    for_each: "{{ vars.n }}"
    with: {title: "{{ item }}", style: folk, prompt: la}
  long:
    uses: extend
    for_each: "{{ steps.song }}"
    with: {audio: "{{ item.tracks[0] }}", continue_at: 5}
"""


def validate(tmp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runner", "validate", "t.yaml"], cwd=tmp,
                          capture_output=True, text=True, timeout=60, check=False)


def test_a_kept_take_applies_to_its_song_only_and_holds_back_early_release(tmp_path):
    (tmp_path / "t.yaml").write_text(RECIPE)
    (tmp_path / "t.takes.yaml").write_text("version: 1\ntakes:\n  song[1]: 1\n")
    p = planner.build(recipe.load(tmp_path / "t.yaml"))
    assert p.instances["song[1]"].step.take == 1
    assert p.instances["song[0]"].step.take == "both"
    # long[0] may start from song[0]'s first track; long[1] reads tracks[0] of a song
    # whose kept take is the second: it waits for the whole task.
    assert p.instances["long[0]"].early == ("song[0]",)
    assert p.instances["long[1]"].early == ()


def test_a_bad_takes_file_is_refused_with_positions(tmp_path):
    (tmp_path / "t.yaml").write_text(RECIPE)
    (tmp_path / "t.takes.yaml").write_text(
        "version: 1\ntakes:\n  song[3]: 1\n  long[0]: 2\n  lnog[1]: 0\n")
    r = validate(tmp_path)
    assert r.returncode == 2
    assert "t.takes.yaml:4:12: take of 'long[0]' must be 0 or 1; got 2" in r.stderr
    (tmp_path / "t.takes.yaml").write_text("version: 1\ntakes:\n  song[3]: 1\n  lnog[1]: 0\n")
    r = validate(tmp_path)
    assert "t.takes.yaml:3:3: no step instance 'song[3]' in the recipe" in r.stderr
    assert "t.takes.yaml:4:3: no step instance 'lnog[1]' in the recipe" in r.stderr
    assert "did you mean 'long[1]'?" in r.stderr
    (tmp_path / "t.takes.yaml").write_text("version: 1\ntakes: [1]\nextra: 2\n")
    r = validate(tmp_path)
    assert "t.takes.yaml:2:8: 'takes' maps a step instance to 0 or 1" in r.stderr
    assert "t.takes.yaml:3:1: unknown key 'extra' in a takes file" in r.stderr
