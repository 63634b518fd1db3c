"""A state directory on a full disk never makes anyone pay twice (issue 17).

The journal on a real, small tmpfs: a line that cannot be written is never left torn, an
``intent`` that cannot be written means no submit, and the task id of a submit that went
out is written with the room the state directory keeps in reserve; the next run polls that
task instead of paying again."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.fake import FakeServer

KEY = "sk-full-disk-test"
PAGE = 4096
RECIPE = """\
version: 1
name: disk
provider: {kind: sunoapi, poll_interval: 0.05, max_poll_interval: 0.2}
steps:
  song:
    uses: generate
    with: {title: Full, style: "STYLE", prompt: "la la"}
  master:
    uses: convert
    with: {audio: "{{ steps.song.tracks[0] }}", format: wav}
outputs:
  - path: full.wav
    from: "{{ steps.master.file }}"
"""


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs of its own (root only; skipped, saying why, where it cannot be had)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs",
                            str(mnt)], capture_output=True, text=True, timeout=30)
    except OSError as exc:
        pytest.skip(f"cannot mount a tmpfs to fill up: {exc}")
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill up (needs root): {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def fill(disk: Path) -> Path:
    """Take every free block of `disk`; return the filler file (delete it to free them)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        chunk = bytes(1 << 16)
        while True:
            try:
                if os.write(fd, chunk) < len(chunk):
                    chunk = bytes(PAGE)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(chunk) == PAGE:
                    break
                chunk = bytes(PAGE)
    finally:
        os.close(fd)
    assert os.statvfs(disk).f_bavail == 0
    return filler


def leave_room(journal: Path, room: int) -> None:
    """Pad the journal (a line of spaces, which readers skip) so that its last block has
    exactly `room` bytes free."""
    size = journal.stat().st_size
    pad = (-size - room) % PAGE
    if pad:
        with journal.open("ab") as f:
            f.write(b" " * (pad - 1) + b"\n")
    assert (-journal.stat().st_size) % PAGE == room


def run(cwd: Path, url: str, state: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SUNO_API_KEY": KEY}
    return subprocess.run([sys.executable, "-m", "runner", "run", "disk.yaml", "--base-url",
                           url, "--state-dir", str(state)], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=300)


def submits(log: list[dict], path: str) -> int:
    return sum(1 for e in log if e["method"] == "POST" and e["path"] == path)


def events(journal: Path) -> list[dict]:
    return [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]


def first_run(tmp_path: Path, disk: Path, url: str) -> Path:
    """A finished run, so that the state directory and its reserve exist on the disk; then
    the recipe is edited, so that the next run has one song to pay for."""
    (tmp_path / "disk.yaml").write_text(RECIPE.replace("STYLE", "dub"))
    r = run(tmp_path, url, disk / "state")
    assert r.returncode == 0, r.stderr
    assert (disk / "state" / "reserve").stat().st_size == 64 * 1024
    (tmp_path / "disk.yaml").write_text(RECIPE.replace("STYLE", "ska"))
    return disk / "state" / "journal.jsonl"


def test_an_intent_the_journal_cannot_take_means_no_submit(tmp_path: Path, disk: Path):
    with FakeServer("sunoapi", api_key=KEY) as srv:
        journal = first_run(tmp_path, disk, srv.url)
        before_log = len(srv.log)
        filler = fill(disk)
        leave_room(journal, 0)
        lines = journal.read_bytes()
        full = run(tmp_path, srv.url, disk / "state")
        assert full.returncode == 1, full.stderr
        assert "cannot write to the journal" in full.stderr
        assert "No space left on device" in full.stderr
        assert "nothing more is submitted" in full.stderr
        assert "Traceback" not in full.stderr
        assert "internal error" not in full.stderr
        assert submits(srv.log[before_log:], "/api/v1/generate") == 0
        assert journal.read_bytes() == lines  # nothing torn, nothing lost

        filler.unlink()
        again = run(tmp_path, srv.url, disk / "state")
        assert again.returncode == 0, again.stderr
        assert submits(srv.log[before_log:], "/api/v1/generate") == 1


def test_a_paid_task_id_is_written_with_the_reserve_and_never_paid_again(tmp_path: Path,
                                                                         disk: Path):
    with FakeServer("sunoapi", api_key=KEY) as srv:
        journal = first_run(tmp_path, disk, srv.url)
        before_log = len(srv.log)
        # Room for the next `intent` line, not for the `submitted` after it: the service
        # is paid, then the disk is full (a short write of the task id line).
        # The first run's `intent` for song shows how long one is (its time may print up to
        # two digits longer).
        intent = max(len(line) + 1 for line in journal.read_text().splitlines()
                     if '"e":"intent"' in line and '"step":"song"' in line)
        leave_room(journal, intent + 3)
        filler = fill(disk)
        full = run(tmp_path, srv.url, disk / "state")
        assert full.returncode == 1, full.stderr
        assert "Traceback" not in full.stderr
        assert "internal error" not in full.stderr
        assert submits(srv.log[before_log:], "/api/v1/generate") == 1
        assert submits(srv.log[before_log:], "/api/v1/wav/generate") == 0
        assert "its reserve was used to record it" in full.stderr
        assert "nothing more is submitted in this run" in full.stderr
        task = [e for e in events(journal) if e["e"] == "submitted"][-1]
        assert task["step"] == "song"
        assert task["task_id"] in {t["task_id"] for t in srv.tasks}
        assert not (disk / "state" / "reserve").exists()

        filler.unlink()
        again = run(tmp_path, srv.url, disk / "state")
        assert again.returncode == 0, again.stderr
        assert submits(srv.log[before_log:], "/api/v1/generate") == 1  # polled, not paid
        assert submits(srv.log[before_log:], "/api/v1/wav/generate") == 1
        assert (disk / "state" / "reserve").stat().st_size == 64 * 1024
