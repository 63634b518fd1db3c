"""Small, real, deterministic media files for the fake to serve, made with ffmpeg.

Audio is a plain sine tone, cached per (format, whole seconds) so that an album of
same-length clips costs one encode; the image and the video are single constants. Bytes are
deterministic for a given ffmpeg build (`-bitexact`, no metadata), so tests can compare
hashes within a run.
"""

from __future__ import annotations

import re
import tempfile
import threading
from pathlib import Path

from runner.studio import ffmpeg
from runner.studio.ffmpeg import argv

MIME = {
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "m4a": "audio/mp4",
    "png": "image/png",
    "mp4": "video/mp4",
}

_cache: dict[tuple[str, float], bytes] = {}
_locks: dict[tuple[str, float], threading.Lock] = {}
_guard = threading.Lock()


class MediaError(RuntimeError):
    """ffmpeg could not make or read a file."""


def _encode(args: list[str], suffix: str) -> bytes:
    with tempfile.TemporaryDirectory(prefix="sunoflow-fake-") as tmp:
        out = Path(tmp) / f"out.{suffix}"
        # A seekable output file (not a pipe) lets the muxers write their headers
        # (Xing for MP3, moov for MP4) the way a real download would have them. The studio's
        # command line and runner (bounded, killed with its process group past its limit).
        cmd = argv("-y", *args, "-fflags", "+bitexact", "-flags", "+bitexact",
                   "-map_metadata", "-1", str(out))
        try:
            proc = ffmpeg.execute("encode", out, cmd, check=False)
        except ffmpeg.MediaError as exc:
            raise MediaError(str(exc)) from exc
        if proc.returncode != 0:
            raise MediaError(proc.stderr.decode(errors="replace").strip() or "ffmpeg failed")
        return out.read_bytes()


def _make(fmt: str, duration: float) -> bytes:
    tone = f"sine=frequency=440:sample_rate=22050:duration={duration:.2f}"
    if fmt == "mp3":
        return _encode(
            ["-f", "lavfi", "-i", tone, "-ac", "1", "-c:a", "libmp3lame", "-b:a", "32k"], "mp3"
        )
    if fmt == "m4a":
        return _encode(["-f", "lavfi", "-i", tone, "-ac", "1", "-c:a", "aac", "-b:a", "32k"], "m4a")
    if fmt == "wav":
        return _encode(["-f", "lavfi", "-i", tone, "-ac", "1", "-c:a", "pcm_s16le"], "wav")
    if fmt == "png":
        return _encode(
            ["-f", "lavfi", "-i", "color=c=0x336699:s=64x64:d=1", "-frames:v", "1"], "png"
        )
    if fmt == "mp4":
        return _encode(
            [
                "-f",
                "lavfi",
                "-i",
                "color=c=0x336699:s=64x64:r=2:d=2",
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:sample_rate=22050:duration=2",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-pix_fmt",
                "yuv420p",
                "-c:a",
                "aac",
                "-b:a",
                "32k",
                "-shortest",
            ],
            "mp4",
        )
    raise MediaError(f"unknown media format {fmt!r}")


def render(fmt: str, duration: float = 0.0) -> bytes:
    """The bytes of a `fmt` file lasting `duration` seconds (ignored for png and mp4).

    Audio lasts `duration` rounded to whole seconds: extends at arbitrary `continueAt`
    values would otherwise each cost an encode. The JSON answers carry the exact value.
    """
    key = (fmt, float(max(1, round(duration))) if fmt in ("mp3", "m4a", "wav") else 0.0)
    with _guard:
        if key in _cache:
            return _cache[key]
        lock = _locks.setdefault(key, threading.Lock())
    # One encode per key even when many downloads ask for it at once.
    with lock:
        if key not in _cache:
            data = _make(fmt, key[1])
            with _guard:
                _cache[key] = data
    return _cache[key]


_DURATION = re.compile(rb"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")


def probe_duration(data: bytes) -> float | None:
    """Seconds of audio in `data` as ffmpeg reads it, or None when it is not media."""
    with tempfile.TemporaryDirectory(prefix="sunoflow-fake-") as tmp:
        src = Path(tmp) / "in"
        src.write_bytes(data)
        try:
            # At the default level (info), which prints the input's description.
            proc = ffmpeg.execute("probe", src, argv("-i", str(src), level="info"),
                                  check=False)
        except ffmpeg.MediaError:
            return None
    found = _DURATION.search(proc.stderr)
    if not found:
        return None
    hours, minutes, seconds = found.groups()
    return round(int(hours) * 3600 + int(minutes) * 60 + float(seconds), 2)
