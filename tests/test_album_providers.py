"""The same recipe, unchanged, on the local provider and against the sunoapi service (the
fake, over real HTTP): the same album layout, and every request as the reference says.

Unchanged but for one line both runs share: a provider block, as a user would write it,
with short takes (less ffmpeg work) and a short poll interval (the fake answers at once;
the default 10 s interval only made the test wait). `--provider sunoapi` keeps both."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mutagen.mp4 import MP4
from project import git_init

from runner.fake import FakeServer

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-album-test-5a1"
TWO = "tracks=[{title: Sunrise, style: indie folk, theme: light}, " \
      "{title: Noon, style: surf rock, theme: heat}]"
QUICK = "provider: {kind: local, poll_interval: 0.05, max_poll_interval: 0.2, take_seconds: 12}\n"


def run(cwd: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SUNO_API_KEY": KEY}
    return subprocess.run([sys.executable, "-m", "runner", "run", "album.yaml", "--var", TWO,
                           "--report", "report.json", *extra], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=300)


def layout(cwd: Path) -> list[str]:
    manifest = json.loads((cwd / "out" / "album" / "manifest.json").read_text())
    return sorted(f["path"] for f in manifest["files"])


@pytest.mark.slow  # the example album, end to end
def test_the_example_album_has_the_same_layout_on_local_and_sunoapi(tmp_path: Path):
    local, remote = tmp_path / "local" / "examples", tmp_path / "remote" / "examples"
    for d in (local, remote):
        d.mkdir(parents=True)
        album = (ROOT / "examples" / "album.yaml").read_text()
        assert "\nprovider:" not in album  # else QUICK would be a duplicate key
        (d / "album.yaml").write_text(album + QUICK)
        shutil.copytree(ROOT / "recipes", d.parent / "recipes")  # the album uses ../recipes/
        git_init(d.parent)  # as in the repository: ../recipes/ is inside the project
    r = run(local)
    assert r.returncode == 0, r.stderr
    with FakeServer("sunoapi", api_key=KEY, clip_duration=12, continuation_duration=12) as srv:
        r = run(remote, "--provider", "sunoapi", "--base-url", srv.url)
        assert r.returncode == 0, r.stderr
        log = srv.log
    assert KEY not in r.stdout + r.stderr
    # Every byte the run left behind: journal, uploads cache, blobs, lock, report, album.
    files = [f for f in remote.parent.rglob("*") if f.is_file()]
    assert any(f.suffix == ".lock" for f in files)
    assert [f for f in files if KEY.encode() in f.read_bytes()] == []
    assert layout(local) == layout(remote)
    assert "01 - Sunrise.mp3" in layout(remote)
    assert "stems/Sunrise - vocals.mp3" in layout(remote)
    # The fake checks every request against the reference (fields, enums, limits); none
    # was refused, and every paid operation was submitted exactly once per instance.
    assert [e for e in log if e.get("envelope_code") not in (None, 200)] == []
    posts = [e["path"] for e in log if e["method"] == "POST"]
    assert posts.count("/api/v1/lyrics") == 2
    assert posts.count("/api/v1/generate") == 2
    assert posts.count("/api/v1/generate/extend") == 2
    assert posts.count("/api/v1/vocal-removal/generate") == 1
    assert posts.count("/api/v1/mp4/generate") == 1
    # The stems are of the finished song: the separation's source is the extension's take.
    [extend0] = [e for e in log if e["method"] == "POST" and e["path"] ==
                 "/api/v1/generate/extend" and e["json"].get("title") == "Sunrise"]
    [split] = [e for e in log if e["path"] == "/api/v1/vocal-removal/generate"]
    assert split["json"]["taskId"] == extend0["task_id"]
    for album in (local, remote):
        # The playlist: the four songs at the top of the folder, with length and names.
        m3u = (album / "out" / "album" / "summer-ep.m3u").read_text().splitlines()
        assert m3u[0] == "#EXTM3U"
        assert re.fullmatch(r"#EXTINF:\d+,The Sunoflowers - Sunrise", m3u[1]), m3u
        assert [x for x in m3u if not x.startswith("#")] == ["01 - Sunrise.mp3",
                                                              "02 - Noon.mp3"]
    teaser = MP4(local / "out" / "album" / "Sunrise (teaser).mp4").tags
    assert teaser["\xa9nam"] == ["Sunrise"]
    assert teaser["\xa9ART"] == ["The Sunoflowers"]
    counts = json.loads((remote / "report.json").read_text())["counts"]
    assert counts["submissions"] == 8
    assert counts["possibly_submitted"] == 0
