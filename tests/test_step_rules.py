"""The routing and price exceptions the step types carry as data (runner.steps.types):
what `sunoflow plan` charges for them, and that the engine routes the same way (issue 18,
"one identify()": the rule had three copies, in the engine, the plan and the report)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from runner.steps.types import TYPES

RECIPE = """\
version: 1
name: rules
provider: {kind: sunoapi, base_url: "http://127.0.0.1:9"%s}
steps:
  song: {uses: generate, with: {prompt: la, style: pop, title: T}}
  wav: {uses: convert, with: {audio: "{{ steps.song.tracks[0] }}"}}
  mp3: {uses: convert, with: {audio: "{{ steps.song.tracks[0] }}", format: mp3}}
  two: {uses: separate, with: {audio: "{{ steps.song.tracks[0] }}"}}
  stems: {uses: separate, with: {audio: "{{ steps.song.tracks[0] }}", type: split_stem}}
"""


def plan_credits(tmp: Path, provider_extra: str = "") -> dict[str, float]:
    (tmp / "r.yaml").write_text(RECIPE % provider_extra)
    out = subprocess.run([sys.executable, "-m", "runner", "plan", "r.yaml", "--json"],
                         env={**os.environ, "SUNO_API_KEY": "sk-rules"}, cwd=tmp,
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    return {r["id"]: r["credits"] for r in json.loads(out.stdout)["instances"]}


def test_plan_prices_the_exceptions_of_convert_and_separate(tmp_path: Path):
    assert plan_credits(tmp_path) == {"song": 12.0, "wav": 1.0, "mp3": 0.0, "two": 10.0,
                                      "stems": 50.0}


def test_the_provider_block_overrides_the_split_stem_price(tmp_path: Path):
    credits = plan_credits(tmp_path, ", prices: {split_stem: 40, separate: 8}")
    assert (credits["two"], credits["stems"]) == (8.0, 40.0)


def test_convert_goes_to_the_service_only_for_wav_of_its_own_tracks():
    convert = TYPES["convert"]
    own = {"id": "a1", "task_id": "t1", "file": "x.mp3"}
    assert convert.route("sunoapi", {"audio": own}) == "remote"
    assert convert.route("sunoapi", {"audio": own, "format": "wav"}) == "remote"
    assert convert.route("sunoapi", {"audio": own, "format": "flac"}) == "local"
    # A file made on this machine, or a track without the service's ids: ffmpeg here.
    assert convert.route("sunoapi", {"audio": {**own, "task_id": "local-1"}}) == "local"
    assert convert.route("sunoapi", {"audio": "song.wav"}) == "local"
    assert convert.route("newapi", {"audio": own}) == "local"
    assert TYPES["generate"].route("sunoapi", {}) == "remote"
    assert TYPES["trim"].route("sunoapi", {"audio": own}) == "local"


def test_the_price_keys_a_recipe_may_set_come_from_the_step_types(tmp_path: Path):
    # The schema's list is the step types' data (every type, then every value a type
    # prices apart), not a name written by hand beside it.
    from runner.recipe import schema
    from runner.steps.types import PRICE_KEYS

    apart = {v for t in TYPES.values() if t.price_by for v in t.price_by[2]}
    assert apart == {"split_stem"}
    assert set(PRICE_KEYS) == set(TYPES) | apart
    prices = schema.published()["properties"]["provider"]["anyOf"]
    enums = [p["properties"]["prices"]["propertyNames"]["enum"] for p in prices
             if isinstance(p, dict) and "prices" in p.get("properties", {})]
    assert enums == [list(PRICE_KEYS)]
    # A misspelt key is refused, positioned, before anything is spent.
    (tmp_path / "r.yaml").write_text(RECIPE % ", prices: {split_stems: 40}")
    out = subprocess.run([sys.executable, "-m", "runner", "validate", "r.yaml"],
                         env={**os.environ, "SUNO_API_KEY": "sk-rules"}, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 2, out.stderr
    assert "r.yaml:3:" in out.stderr
    assert "split_stems" in out.stderr
