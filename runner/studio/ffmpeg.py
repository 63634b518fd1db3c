"""Running the ffmpeg binary that the ``imageio-ffmpeg`` wheel ships, and the rules every
media operation of the studio shares.

ffmpeg runs as a subprocess with an argv list (never a shell) and a scrubbed environment.
The functions block; the local provider calls the studio from worker threads.

Invariants that the studio's media modules (probe, compose, edit, art) rely on:

* **Deterministic bytes.** Formats and codecs run with ``-bitexact``, metadata is dropped,
  filter graphs run on one thread (and x264 on one thread: its output depends on the
  thread count), so the same arguments give byte-identical files across runs and processes.
  Musical and visual choices come from :mod:`runner.studio.dice`, never from ``random``
  or the clock.
* **Atomic writes.** Each output goes to a temporary file in the destination folder, is
  fsynced and then ``os.replace``-d into place (:func:`atomic`): a reader never sees half
  a file.
* **User text stays out of filter graphs.** Titles, styles and prompts only ever reach
  ffmpeg as a hash; graphs hold numbers formatted by :func:`num` and :func:`secs`. Paths
  are passed as ``file:`` URLs so that a name such as ``-x.mp3`` or ``concat:a|b`` is
  just a file.
* **An input is one file.** Every input is opened with ``-protocol_whitelist file`` and a
  list of media demuxers (``DEMUXERS``, :func:`input_args`), so a file from a recipe's
  folder that is really a playlist (HLS, concat) cannot make ffmpeg open other files or
  URLs.
* **One audio shape.** Every audio output is 44.1 kHz stereo; the container and codec
  follow the suffix of ``out``: ``.wav`` (16-bit PCM), ``.flac`` (16-bit) or ``.mp3``
  (LAME CBR, 192 kb/s unless told otherwise, with the gapless header so that decoders,
  and :func:`runner.studio.probe.probe`, see the exact length).

* **Every child is bounded.** Each ffmpeg runs in its own process group under a limit:
  the deadline of the work it belongs to (a :class:`Bound`, entered with
  :meth:`Bound.run` in the worker thread; the local provider makes one per step from the
  step's ``timeout:``), else :func:`default_limit` of the media it handles. Past the
  limit, or when the work is cancelled (:meth:`Bound.cancel`, from any thread), the whole
  group is killed and the call raises MediaError; :func:`atomic` then removes the partial
  outputs. No ffmpeg outlives the step that started it.

Errors: every failure raises :class:`MediaError`, whose message is one line naming the
operation and the file, followed by ``: `` and either the reason (a bad argument) or the
last informative lines of ffmpeg's stderr joined with `` | ``, e.g.
``transcode /x/out.wav: ffmpeg: Error opening input: Invalid data found when processing
input | Error opening input file file:/x/in.mp3. | ...``, or
``extend /x/in.mp3: continue_at 31.0 must be inside the source (0 < continue_at < 30.000)``.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import re
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

RATE = 44100
CHANNELS = 2
DEFAULT_MP3_KBPS = 192
# The bitrates a MPEG-1 Layer III stream can carry at 44.1 kHz; LAME rejects the rest.
MP3_BITRATES = (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
AUDIO_FORMATS = ("wav", "flac", "mp3")

_TAIL_LINES = 3


class MediaError(Exception):
    """A media operation failed: a bad argument, an unreadable input or ffmpeg itself.

    Raised by every public function of the studio's media modules (probe, compose,
    edit, art); the message is one line,
    ``"<operation> <file>: <reason or ffmpeg stderr tail>"``.
    """


@functools.cache
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary shipped by imageio-ffmpeg (looked up once)."""
    try:
        import imageio_ffmpeg
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise MediaError(f"ffmpeg: imageio-ffmpeg is not installed: {exc}") from exc
    try:
        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except RuntimeError as exc:  # pragma: no cover - a broken install
        raise MediaError(f"ffmpeg: no ffmpeg binary found: {exc}") from exc


# --------------------------------------------------------------------------- plumbing


def file_url(path: Path) -> str:
    # The file: protocol makes ffmpeg treat any name literally (no option, no protocol).
    return f"file:{os.fspath(path)}"


def child_env() -> dict[str, str]:
    """ffmpeg's environment: what it needs, and not the API key or other secrets of ours."""
    keep = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TEMP", "TMP", "SYSTEMROOT")
    return {k: v for k, v in os.environ.items() if k in keep}


# The demuxers an input may use. A file from a recipe's folder is untrusted: without this
# list, one named `x.m3u8` (or any playlist ffmpeg recognises) makes ffmpeg open the files
# and URLs it lists, anywhere on the machine or the network.
DEMUXERS = ("mp3,wav,flac,ogg,mov,aac,aiff,matroska,w64,image2,png_pipe,jpeg_pipe,"
            "webp_pipe,bmp_pipe")


def input_args(path: Path) -> list[str]:
    """`-i` for a file on disk: that file only (no other protocol, no playlist)."""
    return ["-protocol_whitelist", "file", "-format_whitelist", DEMUXERS, "-i", file_url(path)]


# ffmpeg's closing lines that only say that an earlier error stopped it.
_NOISE_RE = re.compile(
    r"Task finished with error|Terminating thread with return code|"
    r"Nothing was written into output file|Could not open encoder before EOF|"
    r"Conversion failed|Exiting with exit code"
)
# "[fc#0 @ 0x55d1c0ffee00] " prefixes: addresses that differ at each run.
_PREFIX_RE = re.compile(r"^\[[^\]]*@ 0x[0-9a-f]+\] ")


def stderr_tail(stderr: bytes) -> str:
    """The last informative lines of ffmpeg's stderr, on one line."""
    lines = []
    for raw in stderr.decode("utf-8", "replace").splitlines():
        line = _PREFIX_RE.sub("", raw.strip())
        if line and not _NOISE_RE.search(line):
            lines.append(line)
    return " | ".join(lines[-_TAIL_LINES:]) or "no error output"


def argv(*args: str, level: str = "error") -> list[str]:
    """ffmpeg's command line for ``args``: no banner, no stdin, no progress, and stderr
    at ``level``."""
    return [ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", level, *args]


# --------------------------------------------------------------------------- bounds

# Without a deadline from the work, a child may take FLOOR_SECONDS, or PER_MEDIA_SECOND
# seconds per second of the media it handles when that is more: ffmpeg at a fifth of
# real time, which no render of ours comes near (a 30 s take costs well under a second).
FLOOR_SECONDS = 120.0
PER_MEDIA_SECOND = 5.0
# An input's length is not known before it is probed; its size over the lowest bitrate
# a media file of ours has (32 kb/s MP3) is an upper bound, and that is what a generous
# limit needs.
_MIN_BYTES_PER_SECOND = 32_000 // 8


def default_limit(media_seconds: float) -> float:
    """Seconds an ffmpeg child may run, with no deadline from its work, for
    ``media_seconds`` of media."""
    return max(FLOOR_SECONDS, PER_MEDIA_SECOND * media_seconds)


def _media_seconds(cmd: Sequence[str], known: float | None) -> float:
    """The longest of ``known`` and the upper bound of each input's length (by size)."""
    longest = known or 0.0
    for flag, value in zip(cmd, cmd[1:], strict=False):
        if flag == "-i" and value.startswith("file:"):
            try:
                size = os.stat(value[len("file:"):]).st_size
            except OSError:
                continue
            longest = max(longest, size / _MIN_BYTES_PER_SECOND)
    return longest


class Bound:
    """The limits of the ffmpeg children that one piece of work starts: an optional
    deadline (``timeout`` seconds from now, the whole work's, shared by all its children)
    and a cancel switch. Thread-safe: the work runs in a worker thread, while
    :meth:`cancel` comes from the event loop (Ctrl-C, a sibling step's failure)."""

    def __init__(self, timeout: float | None = None) -> None:
        self.timeout = timeout
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._lock = threading.Lock()
        self._children: set[subprocess.Popen[bytes]] = set()
        self.cancelled = False

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Call ``fn(*args)`` in this thread with every ffmpeg it starts under this bound."""
        _current.bound = self
        try:
            return fn(*args)
        finally:
            _current.bound = None

    def cancel(self) -> None:
        """Kill every running child (and its process group) and refuse new ones."""
        with self._lock:
            self.cancelled = True
            children = list(self._children)
        for proc in children:
            _kill(proc)

    def _limit(self, op: str, target: Path, cmd: Sequence[str], media_seconds: float | None
               ) -> tuple[float, str]:
        if self._deadline is None:
            limit = default_limit(_media_seconds(cmd, media_seconds))
            return limit, f"its limit of {limit:g} s (README: Timeouts)"
        left = self._deadline - time.monotonic()
        why = f"the step's timeout of {self.timeout:g} s"
        if left <= 0:
            raise MediaError(f"{op} {target}: ffmpeg not started: past {why}")
        return left, why

    @contextlib.contextmanager
    def child(self, op: str, target: Path, cmd: Sequence[str], media_seconds: float | None,
              **popen: Any) -> Iterator[subprocess.Popen[bytes]]:
        """Start ``cmd`` in its own process group; kill the group at the limit, on
        cancel, or when the caller's block raises; raise MediaError if it was killed."""
        limit, why = self._limit(op, target, cmd, media_seconds)
        with self._lock:
            if self.cancelled:
                raise MediaError(f"{op} {target}: ffmpeg not started: the step was cancelled")
            try:
                # A session of its own: the kill reaches anything ffmpeg started, and the
                # terminal's Ctrl-C reaches only us, who decide (we kill it, see cancel).
                proc = subprocess.Popen(cmd, env=child_env(), stdin=subprocess.DEVNULL,
                                        start_new_session=True, **popen)
            except OSError as exc:
                raise MediaError(f"{op} {target}: cannot run ffmpeg: {exc}") from exc
            self._children.add(proc)
            _LIVE.add(proc)
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            _kill(proc)

        timer = threading.Timer(limit, expire)
        timer.daemon = True
        timer.start()
        try:
            with proc:
                try:
                    yield proc
                except BaseException:
                    _kill(proc)
                    raise
        finally:
            timer.cancel()
            with self._lock:
                self._children.discard(proc)
                _LIVE.discard(proc)
        if expired.is_set():
            raise MediaError(f"{op} {target}: ffmpeg ran past {why} and was killed")
        if self.cancelled:
            raise MediaError(f"{op} {target}: ffmpeg was killed: the step was cancelled")


# Every child running now, whatever its bound. Its own session keeps the terminal's Ctrl-C
# from reaching it, so a process that exits while one runs (a thread no bound cancels:
# the review server's, the fake's) kills it on the way out.
_LIVE: set[subprocess.Popen[bytes]] = set()


@atexit.register
def kill_live() -> None:
    """Kill every ffmpeg child of this process now (and its process group). At exit, and
    by a process about to leave without its exit handlers (`os._exit`)."""
    for proc in list(_LIVE):
        _kill(proc)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    try:
        if hasattr(os, "killpg"):
            os.killpg(proc.pid, signal.SIGKILL)
        else:  # pragma: no cover - Windows: no process groups to kill
            proc.kill()
    except (ProcessLookupError, PermissionError):
        pass


class _Current(threading.local):
    bound: Bound | None = None


_current = _Current()


def current() -> Bound:
    """The bound of the work running in this thread (:meth:`Bound.run`), else a fresh one
    with no deadline: every child is bounded either way."""
    return _current.bound or Bound()


def execute(
    op: str, target: Path, cmd: Sequence[str], *, check: bool = True,
    media_seconds: float | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run the command line ``cmd`` (an :func:`argv`) in ffmpeg's environment, output
    captured, under this thread's :class:`Bound` (``media_seconds``: the length of what it
    makes, when its inputs do not tell); with ``check``, a non-zero exit raises MediaError
    with its stderr's tail."""
    with current().child(op, target, cmd, media_seconds, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE) as child:
        out, err = child.communicate()
    proc = subprocess.CompletedProcess(list(cmd), child.returncode, out, err)
    if check and proc.returncode != 0:
        raise MediaError(f"{op} {target}: ffmpeg: {stderr_tail(proc.stderr)}")
    return proc


def run(op: str, target: Path, args: Sequence[str], *, level: str = "error",
        media_seconds: float | None = None) -> bytes:
    """Run ffmpeg with ``args``; return its stderr, raise MediaError on failure."""
    return execute(op, target, argv(*args, level=level), media_seconds=media_seconds).stderr


def check_input(op: str, path: Path) -> None:
    if not path.is_file():
        raise MediaError(f"{op} {path}: no such file")


@contextlib.contextmanager
def atomic(outs: Sequence[Path]) -> Iterator[list[Path]]:
    """Yield temporary paths beside each of ``outs``; on success fsync and rename them."""
    tmps: list[Path] = []
    try:
        for out in outs:
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.parent / f".{out.name}.{secrets.token_hex(6)}.part"
            # Created here, with O_EXCL, so that the name is ours; mode 0666 minus the
            # umask, as any file the user makes (mkstemp would give 0600).
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            tmps.append(tmp)
        yield tmps
        for tmp in tmps:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        for tmp, out in zip(tmps, outs, strict=True):
            os.replace(tmp, out)
    finally:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)


def audio_format(op: str, out: Path) -> str:
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in AUDIO_FORMATS:
        raise MediaError(
            f"{op} {out}: unsupported audio suffix {out.suffix!r} (use .wav, .flac or .mp3)"
        )
    return fmt


def encode_args(
    op: str, out: Path, fmt: str, bitrate_kbps: int | None = None, *, fast: bool = False
) -> list[str]:
    """Output options that make ``fmt`` at 44.1 kHz stereo, byte for byte reproducibly.

    ``fast`` picks LAME's quicker psychoacoustics (-q 7, half the CPU of -q 5) for music
    this module synthesises itself: a 30 s take then stays well under a second of CPU.
    Audio from elsewhere (transcode and the edits) gets -q 5."""
    args = [
        "-ar",
        str(RATE),
        "-ac",
        str(CHANNELS),
        "-map_metadata",
        "-1",
        "-fflags",
        "+bitexact",
        "-flags:a",
        "+bitexact",
    ]
    if fmt == "wav":
        return [*args, "-c:a", "pcm_s16le", "-f", "wav"]
    if fmt == "flac":
        return [
            *args,
            "-c:a",
            "flac",
            "-sample_fmt",
            "s16",
            "-compression_level",
            "5",
            "-f",
            "flac",
        ]
    kbps = DEFAULT_MP3_KBPS if bitrate_kbps is None else bitrate_kbps
    if kbps not in MP3_BITRATES:
        allowed = ", ".join(map(str, MP3_BITRATES))
        raise MediaError(f"{op} {out}: mp3 bitrate {kbps} kb/s is not one of {allowed}")
    # No ID3 tag: the exporter writes tags itself; the LAME/Info frame (gapless) stays.
    return [
        *args,
        "-c:a",
        "libmp3lame",
        "-b:a",
        f"{kbps}k",
        "-compression_level",
        "7" if fast else "5",
        "-id3v2_version",
        "0",
        "-write_id3v1",
        "0",
        "-f",
        "mp3",
    ]


# Every decoded input is brought to this shape before filtering.
NORMALISE = f"aresample={RATE},aformat=sample_fmts=fltp:channel_layouts=stereo"


def num(x: float) -> str:
    """A float for a filter graph: fixed, locale-free, never in exponent form."""
    text = f"{x:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def secs(samples: int, rate: int) -> str:
    """Seconds for ``samples`` at ``rate``, to the microsecond ffmpeg parses (exact here)."""
    us = round(samples * 1_000_000 / rate)
    return f"{us // 1_000_000}.{us % 1_000_000:06d}"



def render(
    op: str,
    outs: Sequence[Path],
    maps: Sequence[str],
    lines: Sequence[str],
    inputs: Sequence[str],
    fmt: str,
    bitrate_kbps: int | None = None,
    *,
    fast: bool = False,
    media_seconds: float | None = None,
) -> None:
    """Run one ffmpeg graph writing ``outs`` (one per mapped label), atomically."""
    with atomic(outs) as tmps:
        args = [*inputs, "-filter_complex_threads", "1", "-filter_complex", ";".join(lines)]
        for label, tmp in zip(maps, tmps, strict=True):
            args += [
                "-map",
                f"[{label}]",
                *encode_args(op, outs[0], fmt, bitrate_kbps, fast=fast),
                "-y",
                file_url(tmp),
            ]
        run(op, outs[0], args, media_seconds=media_seconds)
