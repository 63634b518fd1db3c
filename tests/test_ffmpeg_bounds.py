"""Every ffmpeg child is bounded: a step's `timeout:` kills a hung ffmpeg (and its process
group), removes the partial output and fails the step with exit 1; Ctrl-C kills it at once.

The studio's ffmpeg is replaced (IMAGEIO_FFMPEG_EXE, which imageio-ffmpeg honours) by a
real script that starts a grandchild and waits forever, as a hung ffmpeg would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from runner.providers import offload
from runner.studio import ffmpeg

RECIPE = """\
version: 1
name: hung
provider: {{kind: local, take_seconds: 3}}
steps:
  song:
    uses: generate
{timeout}    with: {{prompt: "a song", style: folk}}
"""


def hung_ffmpeg(tmp: Path) -> tuple[Path, Path]:
    """A stand-in ffmpeg that never ends, and the file where it writes its pids (its own
    and its child's). The path is in the script: ffmpeg's environment is scrubbed."""
    pids = tmp / "pids"
    exe = tmp / "hung-ffmpeg"
    exe.write_text(f'#!/bin/sh\nsleep 1000 &\necho "$$ $!" > "{pids}.tmp"\n'
                   f'mv "{pids}.tmp" "{pids}"\nwait\n')
    exe.chmod(0o755)
    return exe, pids


def gone(pid: int) -> bool:
    """Whether `pid` has ended, waiting a little for the kernel to finish it off (a killed
    process is a zombie until its new parent reaps it)."""
    end = time.monotonic() + 10
    while time.monotonic() < end:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def started(pids: Path, proc: subprocess.Popen[str] | None = None) -> None:
    """Wait until the hung ffmpeg has started (it wrote its pids), while `proc` runs."""
    end = time.monotonic() + 60
    while not pids.exists():
        assert proc is None or proc.poll() is None, proc.communicate()
        assert time.monotonic() < end
        time.sleep(0.05)


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.name.endswith(".part")
                  or p.name.startswith("take"))


def start(tmp_path: Path, timeout: str) -> tuple[subprocess.Popen[str], Path]:
    exe, pids = hung_ffmpeg(tmp_path)
    (tmp_path / "r.yaml").write_text(RECIPE.format(timeout=timeout))
    env = {**os.environ, "IMAGEIO_FFMPEG_EXE": str(exe), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "runner", "run", "r.yaml"], cwd=tmp_path,
                            env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return proc, pids


def finish(proc: subprocess.Popen[str], limit: float) -> tuple[int, str]:
    try:
        _out, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"sunoflow still running after {limit} s: the hung ffmpeg held it")
    return proc.returncode, err


def test_a_step_timeout_kills_a_hung_ffmpeg_and_fails_the_step(tmp_path: Path):
    proc, pids = start(tmp_path, "    timeout: 2\n")
    code, err = finish(proc, 60)
    assert code == 1, err
    assert "failed: song: synth " in err
    assert "take0.mp3: ffmpeg ran past the step's timeout of 2 s and was killed" in err
    assert "Traceback" not in err
    leader, child = map(int, pids.read_text().split())
    assert gone(leader)
    assert gone(child)  # the whole process group, not only ffmpeg
    assert leftovers(tmp_path) == []  # the partial take0.mp3 (its .part) is removed


def test_ctrl_c_during_a_hung_ffmpeg_kills_it_and_exits_130(tmp_path: Path):
    # No `timeout:`: the default limit (minutes) would hold the run; Ctrl-C must not wait.
    proc, pids = start(tmp_path, "")
    started(pids, proc)
    proc.send_signal(signal.SIGINT)
    t0 = time.monotonic()
    code, err = finish(proc, 60)
    assert code == 130, err
    assert time.monotonic() - t0 < 10  # "promptly": seconds, not the ffmpeg's limit
    leader, child = map(int, pids.read_text().split())
    assert gone(leader)
    assert gone(child)
    assert leftovers(tmp_path) == []


def test_abandon_kills_the_ffmpeg_a_worker_thread_is_in(tmp_path: Path):
    """What a second Ctrl-C calls before os._exit (which runs no exit handler): every
    ffmpeg child of the process is killed, whatever thread started it, and that thread
    gets a MediaError and ends."""
    exe, pids = hung_ffmpeg(tmp_path)
    errors: list[Exception] = []

    def work() -> None:
        try:
            ffmpeg.execute("probe", tmp_path / "x.mp3", [str(exe)])
        except ffmpeg.MediaError as exc:
            errors.append(exc)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    started(pids)
    offload.abandon()
    thread.join(30)
    assert not thread.is_alive()
    assert all(gone(int(p)) for p in pids.read_text().split())
    assert len(errors) == 1


def test_a_second_ctrl_c_leaves_at_once_without_leaving_ffmpeg_running(tmp_path: Path):
    """Two Ctrl-C back to back: the second leaves at once (os._exit: no exit handler
    runs), and no ffmpeg is left running. (The engine reads the second signal only after
    the first's handler cancelled the run, and in the cases tried, here and with a submit
    holding the first in its grace, that cancel reached the thread in ffmpeg before the
    second's os._exit: this passes without `offload.abandon` too, which the test above
    proves directly. The call before os._exit is a guard, not a measured fix.)"""
    proc, pids = start(tmp_path, "")
    started(pids, proc)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    code, err = finish(proc, 60)
    assert code == 130, err
    leader, child = map(int, pids.read_text().split())
    assert gone(leader)
    assert gone(child)


def test_the_default_limit_has_a_floor_and_grows_with_the_media():
    assert ffmpeg.default_limit(0) == ffmpeg.FLOOR_SECONDS == 120
    assert ffmpeg.default_limit(3600) == 3600 * ffmpeg.PER_MEDIA_SECOND


def test_a_child_without_a_deadline_is_killed_at_its_default_limit(tmp_path: Path,
                                                                 monkeypatch):
    # The studio called directly (as the album export and the fake do): no step, no
    # deadline, yet the child is bounded; a tiny floor stands in for minutes.
    exe, pids = hung_ffmpeg(tmp_path)
    monkeypatch.setattr(ffmpeg, "FLOOR_SECONDS", 0.5)
    with pytest.raises(ffmpeg.MediaError) as info:
        ffmpeg.execute("probe", tmp_path / "x.mp3", [str(exe)])
    assert str(info.value) == (f"probe {tmp_path / 'x.mp3'}: ffmpeg ran past its limit of "
                               "0.5 s (README: Timeouts) and was killed")
    assert all(gone(int(p)) for p in pids.read_text().split())


def test_the_fake_and_the_waveform_run_the_studios_bounded_ffmpeg(tmp_path: Path,
                                                                 monkeypatch):
    # Both build their command line with the studio's `argv` and run it with its
    # `execute`: the same binary, environment and bound (no second copy to keep in step).
    from runner.fake import media
    from runner.review import waveform

    take = tmp_path / ("a" * 64 + ".mp3")
    take.write_bytes(media.render("mp3", 1.0))  # made by the real ffmpeg, before the swap
    exe, pids = hung_ffmpeg(tmp_path)
    monkeypatch.setattr(ffmpeg, "ffmpeg_exe", lambda: str(exe))
    monkeypatch.setattr(ffmpeg, "FLOOR_SECONDS", 0.5)
    with pytest.raises(media.MediaError, match="ffmpeg ran past its limit of 0.5 s"):
        media._make("wav", 1.0)
    assert all(gone(int(p)) for p in pids.read_text().split())
    pids.unlink()
    assert waveform.make(tmp_path / "state", take) is None  # no picture, no error
    assert all(gone(int(p)) for p in pids.read_text().split())
    assert not list((tmp_path / "state").rglob("*.png"))
