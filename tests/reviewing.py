"""Helpers for the `sunoflow review` tests: a small album made for real, and the review
server as the user starts it (a subprocess printing its URL)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

KEY = "sk-review-Key-51c"

# Two songs of two takes each, short (the local studio makes `take_seconds` of audio), and
# a free local step after each so that the album is made from the kept take.
RECIPE = """\
version: 1
name: review-ep
provider: {kind: local, take_seconds: 6, poll_interval: 0.05, max_poll_interval: 0.2}
vars:
  tracks:
    - {title: Sunrise, style: indie folk}
    - {title: Noon, style: surf rock}
steps:
  song:
    uses: generate
    for_each: "{{ vars.tracks }}"
    with: {title: "{{ item.title }}", style: "{{ item.style }}", prompt: "la la la"}
  loud:
    uses: normalize
    for_each: "{{ steps.song }}"
    with: {audio: "{{ item.tracks[0] }}"}
outputs:
  - for_each: "{{ steps.song }}"
    path: "{{ index + 1 }} - {{ vars.tracks[index].title }}.mp3"
    from: "{{ item.file }}"
"""


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k != "SUNO_API_KEY"}
    e["SUNO_API_KEY"] = KEY
    return e


def sunoflow(tmp: Path, *args: str, remote: str | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess[str]:
    extra = ["--provider", "sunoapi", "--base-url", remote] if remote else []
    return subprocess.run([sys.executable, "-m", "runner", *args, *extra], cwd=tmp, env=env(),
                          capture_output=True, text=True, timeout=timeout, check=False)


def make_album(tmp: Path, remote: str | None = None) -> Path:
    (tmp / "ep.yaml").write_text(RECIPE)
    r = sunoflow(tmp, "run", "ep.yaml", "-q", remote=remote)
    assert r.returncode == 0, r.stderr
    return tmp / "ep.yaml"


@contextmanager
def serving(tmp: Path, *args: str, remote: str | None = None) -> Iterator[str]:
    """`sunoflow review ep.yaml` running; yields the URL it printed (with its token)."""
    extra = ["--provider", "sunoapi", "--base-url", remote] if remote else []
    with (tmp / "review.log").open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "runner", "review", "ep.yaml", *args,
                                 *extra], cwd=tmp, env=env(), stdout=subprocess.PIPE,
                                stderr=log, text=True)
    assert proc.stdout is not None
    try:
        line = proc.stdout.readline()
        m = re.search(r"(http://\S+)", line)
        assert m, line + (tmp / "review.log").read_text()
        yield m.group(1)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        proc.stdout.close()
