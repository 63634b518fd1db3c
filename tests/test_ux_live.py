"""The live view, from the user's side: the real CLI with rich told it writes to an
interactive terminal (TTY_COMPATIBLE / TTY_INTERACTIVE, as a pipe cannot be a TTY), against
the sunoapi fake whose clock the test holds still, so what is on screen while a task is
in flight is waited for, never timed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

from waiting import until

from runner.fake import FakeServer

KEY = "sk-ux-live-Key-0a9"
RECIPE = """\
version: 1
name: live
provider: {kind: sunoapi, poll_interval: 0.2, max_poll_interval: 0.5,
           rate_limit: {requests: 1000, per_seconds: 1}}
steps:
  song:
    uses: generate
    with: {title: Rain, style: pop, prompt: "la la"}
  loud:
    uses: normalize
    with: {audio: "{{ steps.song.tracks[0] }}"}
outputs:
  - path: rain.mp3
    from: "{{ steps.loud.file }}"
"""
SGR = re.compile(r"\x1b\[[0-9;]*m")  # a style (colour, bold); cursor moves are not styles
CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def live_run(tmp: Path, url: str, **env: str) -> tuple[subprocess.Popen[bytes], list[bytes]]:
    full = {**os.environ, "SUNO_API_KEY": KEY, "TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1",
            "COLUMNS": "120", "TERM": "xterm-256color", **env}
    full.pop("NO_COLOR", None) if "NO_COLOR" not in env else None
    proc = subprocess.Popen([sys.executable, "-m", "runner", "run", "live.yaml",
                             "--base-url", url], cwd=tmp, env=full, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    chunks: list[bytes] = []

    def read() -> None:
        assert proc.stderr is not None
        while data := proc.stderr.read1(65536):
            chunks.append(data)

    threading.Thread(target=read, daemon=True).start()
    return proc, chunks


def text(chunks: list[bytes]) -> str:
    return CONTROL.sub("", b"".join(chunks).decode("utf-8", "replace"))


def run_with_task_held(tmp: Path, **env: str) -> tuple[str, str]:
    """The text on screen while the song's task is in flight, and all of it at the end."""
    (tmp / "live.yaml").write_text(RECIPE)
    config = {"latency_scale": 1.0, "latency": {"*": {"dist": "fixed", "value": 600}}}
    with FakeServer("sunoapi", api_key=KEY, **config) as srv:
        proc, chunks = live_run(tmp, srv.url, **env)
        try:
            try:
                until(lambda: "next poll in" in text(chunks) and "left" in text(chunks),
                      "the live view to show the song being polled", timeout=30)
            except AssertionError:
                raise AssertionError(text(chunks)[-3000:]) from None
            during = text(chunks)
            srv.configure(latency_scale=0)
            srv.advance(10_000)
            assert proc.wait(timeout=120) == 0, text(chunks)
        finally:
            if proc.poll() is None:
                proc.kill()
        until(lambda: "run succeeded" in text(chunks), "the reader to drain", timeout=10)
        assert proc.stderr is not None
        proc.stderr.close()
        return during, b"".join(chunks).decode("utf-8", "replace")


def test_live_view_shows_state_ticking_time_next_poll_estimate_and_credits(tmp_path):
    during, raw = run_with_task_held(tmp_path)
    # The start: how many instances and what the plan says they cost.
    assert "running 2 step instances; the plan estimates 12 credits" in during
    # Per running instance: its state and task, and when it is polled next.
    row = next(x for x in during.splitlines() if x.lstrip().startswith("song ")
               and "next poll in" in x)
    assert "submitted task" in row
    assert re.search(r"\b\d+s\b", row)  # its elapsed time
    # Overall: done/total, time left said to be a guess, credits spent so far.
    status = next(x for x in during.splitlines() if "0/2 done" in x)
    assert "left (a guess: nothing measured yet)" in status
    assert "credits: 12 spent of ~12 estimated" in during
    final = CONTROL.sub("", SGR.sub("", raw))
    # Finished steps stay on screen after the live area is gone, one compact line each.
    lines = [x.split("\r")[-1].strip() for x in final.splitlines()]
    assert any(re.fullmatch(r"done +song +\d+s", x) for x in lines), final
    assert any(re.fullmatch(r"done +loud +\d+s", x) for x in lines), final
    # The fake reports a balance: the summary has it before and after.
    assert "credits: 1000000 before, 999988 after: 12 spent (estimated 12)" in final
    assert final.rstrip().endswith("run succeeded")
    assert SGR.search(raw)  # styled, without NO_COLOR


def test_no_color_removes_every_style_bold_included(tmp_path):
    during, raw = run_with_task_held(tmp_path, NO_COLOR="1")
    assert "next poll in" in during
    assert SGR.search(raw) is None, repr(SGR.search(raw))
