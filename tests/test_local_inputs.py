"""A local file a step reads enters its key by content: replace `demo.wav` and exactly
the steps that read it run again (the new file is uploaded); nothing else does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import imageio_ffmpeg

from runner.fake import FakeServer

KEY = "sk-local-inputs-5"


def tone(path: Path, freq: int) -> None:
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"sine=frequency={freq}:duration=4", "-ac", "1", "-ar", "22050",
                    str(path)], check=True, timeout=60)


def sunoflow(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SUNO_API_KEY": KEY}
    return subprocess.run([sys.executable, "-m", "runner", *args, "--report", "r.json"],
                          cwd=cwd, text=True, capture_output=True, timeout=180, env=env)


def statuses(folder: Path) -> dict[str, str]:
    return {s["id"]: s["status"]
            for s in json.loads((folder / "r.json").read_text())["steps"]}


LOCAL = """\
version: 1
name: demo
steps:
  cut:
    uses: trim
    with: {audio: demo.wav, start: 0, end: 2}
  both:
    uses: concat
    with: {clips: ["{{ steps.cut.tracks[0] }}", {file: intro.wav}]}
  song:
    uses: generate
    with: {title: Other, style: pop, prompt: "la"}
outputs:
  - path: cut.wav
    from: "{{ steps.cut.file }}"
  - path: both.mp3
    from: "{{ steps.both.file }}"
"""


def test_replacing_a_local_file_reruns_exactly_what_reads_it(tmp_path: Path):
    (tmp_path / "demo.yaml").write_text(LOCAL)
    tone(tmp_path / "demo.wav", 440)
    tone(tmp_path / "intro.wav", 330)
    first = sunoflow("run", "demo.yaml", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    cut = (tmp_path / "out" / "demo" / "cut.wav").read_bytes()
    both = (tmp_path / "out" / "demo" / "both.mp3").read_bytes()

    tone(tmp_path / "demo.wav", 880)  # another recording under the same name
    second = sunoflow("run", "demo.yaml", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert statuses(tmp_path) == {"cut": "succeeded", "both": "succeeded", "song": "cached"}
    assert (tmp_path / "out" / "demo" / "cut.wav").read_bytes() != cut
    both2 = (tmp_path / "out" / "demo" / "both.mp3").read_bytes()
    assert both2 != both

    tone(tmp_path / "intro.wav", 220)  # a file named inside a track object in the recipe
    third = sunoflow("run", "demo.yaml", cwd=tmp_path)
    assert third.returncode == 0, third.stderr
    assert statuses(tmp_path) == {"cut": "cached", "both": "succeeded", "song": "cached"}
    assert (tmp_path / "out" / "demo" / "both.mp3").read_bytes() != both2

    # The same content again (a touched or copied file): nothing runs.
    os.utime(tmp_path / "demo.wav")
    fourth = sunoflow("run", "demo.yaml", cwd=tmp_path)
    assert fourth.returncode == 0, fourth.stderr
    assert set(statuses(tmp_path).values()) == {"cached"}


REMOTE = """\
version: 1
name: remix
provider: {kind: sunoapi, poll_interval: 0.05, max_poll_interval: 0.2}
steps:
  remix:
    uses: upload_cover
    with: {audio: demo.wav, title: Remix, style: dub, prompt: "la la"}
  song:
    uses: generate
    with: {title: Other, style: pop, prompt: "la"}
outputs:
  - path: remix.mp3
    from: "{{ steps.remix.file }}"
"""


def test_a_replaced_upload_is_uploaded_and_paid_for_once_and_nothing_else(tmp_path: Path):
    (tmp_path / "remix.yaml").write_text(REMOTE)
    tone(tmp_path / "demo.wav", 440)
    with FakeServer("sunoapi", api_key=KEY) as srv:
        first = sunoflow("run", "remix.yaml", "--base-url", srv.url, cwd=tmp_path)
        assert first.returncode == 0, first.stderr
        tone(tmp_path / "demo.wav", 880)
        before = len(srv.log)
        second = sunoflow("run", "remix.yaml", "--base-url", srv.url, cwd=tmp_path)
        assert second.returncode == 0, second.stderr
        posts = [e["path"] for e in srv.log[before:] if e["method"] == "POST"]
    assert statuses(tmp_path) == {"remix": "succeeded", "song": "cached"}
    assert posts.count("/api/v1/generate/upload-cover") == 1
    assert "/api/v1/generate" not in posts
    assert sum(1 for p in posts if "upload" in p and "upload-cover" not in p) == 1
