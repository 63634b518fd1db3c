"""What a media file holds: container, codecs, rate, channels, size and exact duration,
read with ffmpeg alone (no ffprobe in the wheel); and its audio as PCM."""

from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from runner.studio.ffmpeg import (
    RATE,
    MediaError,
    argv,
    check_input,
    current,
    execute,
    ffmpeg_exe,
    input_args,
    stderr_tail,
)


@dataclass(frozen=True)
class MediaInfo:
    """What :func:`probe` learns about a file. ``duration`` is exact for audio."""

    duration: float
    format: str
    audio_codec: str | None
    sample_rate: int | None
    channels: int | None
    video_codec: str | None
    width: int | None
    height: int | None
    bitrate_kbps: int | None


_INPUT_RE = re.compile(r"^Input #0, (.+?), from ", re.M)
_DURATION_RE = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_CONTAINER_KBPS_RE = re.compile(r"Duration: .*?bitrate: (\d+) kb/s")
_STREAM_RE = re.compile(r"^\s*Stream #0:\d+\S*: (Audio|Video): (.*)$", re.M)
_LAYOUTS = {
    "mono": 1,
    "stereo": 2,
    "2.1": 3,
    "quad": 4,
    "4.0": 4,
    "5.0": 5,
    "5.1": 6,
    "6.1": 7,
    "7.1": 8,
}


# Still images: ffmpeg reads them as one-frame streams through these demuxers.
_IMAGE_DEMUXERS = re.compile(r"^(image2|\w+_pipe)$")
_IMAGE_FORMATS = {"mjpeg": "jpeg", "png": "png", "webp": "webp", "bmp": "bmp", "gif": "gif"}


def _container(names: str, video_codec: str | None) -> str:
    parts = names.split(",")
    if "mp4" in parts:
        return "mp4"
    if _IMAGE_DEMUXERS.match(names) and video_codec:
        return _IMAGE_FORMATS.get(video_codec, video_codec)
    return parts[0]


def _channels(fields: list[str]) -> int | None:
    for field in fields:
        word = field.strip().split("(")[0]
        if word in _LAYOUTS:
            return _LAYOUTS[word]
        m = re.fullmatch(r"(\d+) channels", word)
        if m:
            return int(m.group(1))
    return None


def _decode_audio(path: Path) -> list[str]:
    """The start of an ffmpeg command that decodes the first audio stream of `path`."""
    return argv(*input_args(path), "-map", "0:a:0")


def _count_samples(path: Path, seconds: float) -> int:
    """Decode the first audio stream to mono u8 at its own rate; return its sample count.

    Counting decoded samples is the only exact duration without ffprobe; the mp3
    demuxer honours the LAME gapless header, so encoder delay and padding are not counted.
    """
    cmd = [
        *_decode_audio(path),
        "-ac",
        "1",
        "-c:a",
        "pcm_u8",
        "-f",
        "u8",
        "-",
    ]
    total = 0
    # stderr goes to a file: a damaged file can log more than a pipe buffer holds.
    with tempfile.TemporaryFile() as err:
        with current().child("probe", path, cmd, seconds, stdout=subprocess.PIPE,
                             stderr=err) as proc:
            assert proc.stdout is not None
            while chunk := proc.stdout.read(1 << 20):
                total += len(chunk)
        err.seek(0)
        if proc.returncode != 0:
            raise MediaError(f"probe {path}: ffmpeg: {stderr_tail(err.read())}")
    return total


def probe(path: Path) -> MediaInfo:
    """Describe ``path``: container, codecs, rate, channels, size and exact duration.

    The header is read from ``ffmpeg -i``; the duration of a file with audio is the
    number of decoded samples over the sample rate (exact for WAV and FLAC, and for MP3
    thanks to the gapless header); without audio it is the container's (0.0 for an image).
    """
    path = Path(path)
    check_input("probe", path)
    # At the default level (info), which prints the input's description; without an
    # output ffmpeg then exits 1.
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", *input_args(path)]
    proc = execute("probe", path, cmd, check=False)
    text = proc.stderr.decode("utf-8", "replace")
    head = _INPUT_RE.search(text)
    if head is None:
        raise MediaError(f"probe {path}: ffmpeg: {stderr_tail(proc.stderr)}")
    header = text[head.start() :]
    audio_codec = video_codec = None
    sample_rate = channels = width = height = stream_kbps = None
    for kind, desc in _STREAM_RE.findall(header):
        fields = desc.split(", ")
        codec = fields[0].split()[0]
        if kind == "Audio" and audio_codec is None:
            audio_codec = codec
            rate = re.search(r"(\d+) Hz", desc)
            sample_rate = int(rate.group(1)) if rate else None
            channels = _channels(fields[1:])
            kbps = re.search(r"(\d+) kb/s", desc)
            stream_kbps = int(kbps.group(1)) if kbps else None
        elif kind == "Video" and video_codec is None and "(attached pic)" not in desc:
            video_codec = codec
            size = re.search(r", (\d{1,5})x(\d{1,5})[\s,\[]", desc + " ")
            if size:
                width, height = int(size.group(1)), int(size.group(2))
    container_kbps = _CONTAINER_KBPS_RE.search(header)
    bitrate = (
        stream_kbps
        if stream_kbps is not None
        else (int(container_kbps.group(1)) if container_kbps else None)
    )
    m = _DURATION_RE.search(header)
    stated = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3)) if m else 0.0
    if audio_codec is not None and sample_rate:
        samples = _count_samples(path, stated)
        duration = samples / sample_rate
    elif _IMAGE_DEMUXERS.match(head.group(1)):
        duration = 0.0
    else:
        duration = stated
    return MediaInfo(
        duration=duration,
        format=_container(head.group(1), video_codec),
        audio_codec=audio_codec,
        sample_rate=sample_rate,
        channels=channels,
        video_codec=video_codec,
        width=width,
        height=height,
        bitrate_kbps=bitrate,
    )


def sample_count(op: str, path: Path) -> int:
    """Length of ``path`` in samples at 44.1 kHz (what our filter graphs count in)."""
    check_input(op, path)
    try:
        info = probe(path)
    except MediaError as exc:
        raise MediaError(f"{op} {path}: {str(exc).split(': ', 1)[-1]}") from exc
    if info.audio_codec is None:
        raise MediaError(f"{op} {path}: the file has no audio stream")
    return round(info.duration * RATE)


def read_pcm(path: Path, sample_rate: int = 44100, channels: int = 2) -> bytes:
    """Decode the first audio stream of ``path`` to interleaved signed 16-bit little-endian."""
    path = Path(path)
    check_input("read_pcm", path)
    cmd = [
        *_decode_audio(path),
        "-ar",
        str(sample_rate),
        "-ac",
        str(channels),
        "-c:a",
        "pcm_s16le",
        "-f",
        "s16le",
        "-",
    ]
    return execute("read_pcm", path, cmd).stdout

