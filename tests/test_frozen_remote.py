"""Reproducible builds against the service (the sunoapi fake): run, lock, lose everything
but the lock, rebuild with --frozen without paying; an edited step is named, not paid."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from mutagen.id3 import ID3

from runner.fake import FakeServer

KEY = "sk-frozen-test-4b"
RECIPE = """\
version: 1
name: frozen-ep
provider: {kind: sunoapi, poll_interval: 0.05, max_poll_interval: 0.2}
vars:
  titles: [Ash, Birch]
steps:
  words:
    uses: lyrics
    for_each: "{{ vars.titles }}"
    with: {prompt: "a tree called {{ item }}"}
  song:
    uses: generate
    for_each: "{{ vars.titles }}"
    take: 1
    with: {title: "{{ item }}", style: folk, prompt: "{{ steps.words[index].text }}"}
  timing:
    uses: timestamped_lyrics
    for_each: "{{ steps.song }}"
    with: {audio: "{{ item.tracks[0] }}"}
outputs:
  - for_each: "{{ steps.song }}"
    path: "{{ index + 1 }} - {{ vars.titles[index] }}.mp3"
    from: "{{ item.file }}"
    lrc: "{{ steps.timing[index].lrc }}"
    tags: {title: "{{ vars.titles[index] }}", artist: Trees, album: Frozen EP,
           track: "{{ index + 1 }}", lyrics: "{{ steps.words[index].text }}",
           cover: "{{ item.tracks[0].image_file }}"}
"""
PAID = ("/api/v1/lyrics", "/api/v1/generate")


def run(cwd: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SUNO_API_KEY": KEY}
    return subprocess.run([sys.executable, "-m", "runner", "run", "ep.yaml", "--base-url", url,
                           "--report", "report.json", *extra], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=300)


def paid(log: list[dict]) -> list[str]:
    return [e["path"] for e in log if e["method"] == "POST" and e["path"] in PAID]


def test_frozen_rebuild_from_the_lock_alone(tmp_path: Path):
    (tmp_path / "ep.yaml").write_text(RECIPE)
    with FakeServer("sunoapi", api_key=KEY) as srv:
        first = run(tmp_path, srv.url)
        assert first.returncode == 0, first.stderr
        out = tmp_path / "out" / "ep"
        album = {p.name: p.read_bytes() for p in out.iterdir()}
        assert "1 - Ash.lrc" in album
        assert album["1 - Ash.lrc"].startswith(b"[")
        tags = ID3(out / "2 - Birch.mp3")
        assert str(tags["TIT2"]) == "Birch"
        assert str(tags["TPE1"]) == "Trees"
        assert str(tags["TRCK"]) == "2"
        assert tags.getall("USLT")[0].text.startswith("[Verse")
        assert tags.getall("APIC")[0].data[:4] == b"\x89PNG"

        # Only the recipe and its lock survive (a fresh CI checkout).
        shutil.rmtree(out)
        shutil.rmtree(tmp_path / ".sunoflow")
        before = len(srv.log)
        again = run(tmp_path, srv.url, "--frozen")
        assert again.returncode == 0, again.stderr
        assert paid(srv.log[before:]) == []
        assert {p.name: p.read_bytes() for p in out.iterdir()} == album

        # An edited step: --frozen names it and what depends on it, and pays nothing.
        (tmp_path / "ep.yaml").write_text(RECIPE.replace("style: folk", "style: blues"))
        before = len(srv.log)
        frozen = run(tmp_path, srv.url, "--frozen")
        assert frozen.returncode == 3
        assert "would need a paid submission: song[0], song[1]" in frozen.stderr
        assert "and after them: timing[0] (free), timing[1] (free)" in frozen.stderr
        assert paid(srv.log[before:]) == []

        # Without --frozen, exactly the edited step and its dependents run.
        before = len(srv.log)
        thawed = run(tmp_path, srv.url)
        assert thawed.returncode == 0, thawed.stderr
        assert paid(srv.log[before:]) == ["/api/v1/generate"] * 2
    status = {s["id"]: s["status"]
              for s in json.loads((tmp_path / "report.json").read_text())["steps"]}
    assert status == {"words[0]": "cached", "words[1]": "cached", "song[0]": "succeeded",
                      "song[1]": "succeeded", "timing[0]": "succeeded",
                      "timing[1]": "succeeded"}
