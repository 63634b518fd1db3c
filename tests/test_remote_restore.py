"""A finished remote step whose stored files are gone and whose links have expired is
fetched again through the service's fresh links for the same task: never paid again, and
neither is the step that reads it (its key must not move: keys leave out links, and the
restored step keeps its recorded outputs when the files hash the same)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from runner.fake import FakeServer

KEY = "sk-restore-test-77"
RECIPE = """\
version: 1
name: restore
provider: {kind: sunoapi, poll_interval: 0.05, max_poll_interval: 0.2}
steps:
  song:
    uses: generate
    with: {title: Kept, style: dub, prompt: "la la la"}
  master:
    uses: convert
    with: {audio: "{{ steps.song.tracks[0] }}", format: wav}
outputs:
  - path: kept.mp3
    from: "{{ steps.song.file }}"
  - path: kept.wav
    from: "{{ steps.master.file }}"
"""
SUBMITS = ("/api/v1/generate", "/api/v1/wav/generate")


def run(tmp: Path, url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SUNO_API_KEY": KEY}
    return subprocess.run([sys.executable, "-m", "runner", "run", "r.yaml", "--base-url", url,
                           "--report", "report.json"], cwd=tmp, env=env, text=True,
                          capture_output=True, timeout=120)


def test_expired_links_are_recovered_without_a_new_submission(tmp_path: Path):
    (tmp_path / "r.yaml").write_text(RECIPE)
    with FakeServer("sunoapi", api_key=KEY) as srv:
        first = run(tmp_path, srv.url)
        assert first.returncode == 0, first.stderr
        album = (tmp_path / "out" / "r" / "kept.mp3").read_bytes()
        shutil.rmtree(tmp_path / ".sunoflow" / "blobs")
        shutil.rmtree(tmp_path / "out")
        # The recorded link is dead now (as after ~15 days): only fresh links work.
        srv.configure(faults=[{"match": {"method": "GET", "op": "download"}, "times": 1,
                               "action": {"expired": True}}])
        before = len(srv.log)
        second = run(tmp_path, srv.url)
        assert second.returncode == 0, second.stderr
        after = srv.log[before:]
    assert [e for e in after if e["method"] == "POST" and e["path"] in SUBMITS] == []
    assert any(e["path"] == "/api/v1/generate/record-info" for e in after)
    assert (tmp_path / "out" / "r" / "kept.mp3").read_bytes() == album
    steps = json.loads((tmp_path / "report.json").read_text())["steps"]
    assert [s["status"] for s in steps] == ["cached", "cached"]


KEPT = """\
version: 1
name: kept
provider: {kind: sunoapi, poll_interval: 0.05, max_poll_interval: 0.2}
steps:
  song:
    uses: generate
    with: {title: Kept, style: dub, prompt: "la la la"}
outputs:
  - path: kept.mp3
    from: "{{ steps.song.file }}"
    tags: {title: Kept Forever, album: Old Links}
"""


def test_a_recovered_m4a_rebuilds_an_mp3_output_without_edits(tmp_path: Path):
    from mutagen.id3 import ID3

    from runner.studio.probe import probe

    (tmp_path / "r.yaml").write_text(KEPT)
    with FakeServer("sunoapi", api_key=KEY) as srv:
        first = run(tmp_path, srv.url)
        assert first.returncode == 0, first.stderr
        shutil.rmtree(tmp_path / ".sunoflow" / "blobs")
        shutil.rmtree(tmp_path / "out")
        # ~15 days later: every audio link is dead, fresh or not; only recovery helps, and
        # it hands the songs back as .m4a.
        srv.configure(faults=[{"match": {"path": "/files/audio/*"},
                               "action": {"expired": True}}])
        before = len(srv.log)
        second = run(tmp_path, srv.url)
        after = srv.log[before:]
    out = second.stdout + second.stderr
    assert second.returncode == 0, out
    assert [e for e in after if e["method"] == "POST" and e["path"] in SUBMITS] == []
    assert any(e["path"] == "/api/v1/suno/recovery" for e in after)
    kept = tmp_path / "out" / "r" / "kept.mp3"
    assert probe(kept).format == "mp3"
    assert str(ID3(kept)["TIT2"]) == "Kept Forever"
    assert str(ID3(kept)["TALB"]) == "Old Links"
    assert "kept.mp3: the stored audio is .m4a" in out
    assert "transcoded to .mp3" in out
    manifest = json.loads((tmp_path / "out" / "r" / "manifest.json").read_text())
    assert manifest["files"][0]["transcoded_from"] == ".m4a"
