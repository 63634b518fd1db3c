"""The offline studio's media layer: every operation on audio, images and video.

Everything here runs the ffmpeg binary that the ``imageio-ffmpeg`` wheel ships, as a
subprocess with an argv list (never a shell). The functions block; the local provider
calls them from worker threads.

Invariants that callers rely on:

* **Deterministic bytes.** The same arguments give byte-identical files, across runs and
  processes: musical choices come from a sha256 of the seed (never from ``random`` or the
  clock), formats and codecs run with ``-bitexact``, metadata is dropped, and x264 runs on
  one thread (its output depends on the thread count).
* **Atomic writes.** Each output goes to a temporary file in the destination folder, is
  fsynced and then ``os.replace``-d into place: a reader never sees half a file.
* **User text stays out of filter graphs.** Titles, styles and prompts only ever reach
  ffmpeg as a hash; graphs hold numbers that this module formats itself. Paths are passed
  as ``file:`` URLs so that a name such as ``-x.mp3`` or ``concat:a|b`` is just a file.
* **An input is one file.** Every input is opened with ``-protocol_whitelist file`` and a
  list of media demuxers (``DEMUXERS``), so a file from a recipe's folder that is really a
  playlist (HLS, concat) cannot make ffmpeg open other files or URLs.
* **One audio shape.** Every audio output is 44.1 kHz stereo; the container and codec
  follow the suffix of ``out``: ``.wav`` (16-bit PCM), ``.flac`` (16-bit) or ``.mp3``
  (LAME CBR, 192 kb/s unless told otherwise, with the gapless header so that decoders,
  and :func:`probe`, see the exact length).

Errors: every failure raises :class:`MediaError`, whose message is one line naming the
operation and the file, followed by ``: `` and either the reason (a bad argument) or the
last informative lines of ffmpeg's stderr joined with `` | ``, e.g.
``transcode /x/out.wav: ffmpeg: Error opening input: Invalid data found when processing
input | Error opening input file file:/x/in.mp3. | ...``, or
``extend /x/in.mp3: continue_at 31.0 must be inside the source (0 < continue_at < 30.000)``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import os
import re
import secrets
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

_T = TypeVar("_T")

RATE = 44100
CHANNELS = 2
DEFAULT_MP3_KBPS = 192
# The bitrates a MPEG-1 Layer III stream can carry at 44.1 kHz; LAME rejects the rest.
MP3_BITRATES = (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
AUDIO_FORMATS = ("wav", "flac", "mp3")

SEPARATE_VOCAL_STEMS = ("vocals", "instrumental")
SPLIT_STEMS = ("vocals", "bass", "keyboard", "drums", "fx")

_TAIL_LINES = 3


class MediaError(Exception):
    """A media operation failed: a bad argument, an unreadable input or ffmpeg itself.

    Raised by every public function of :mod:`runner.studio.media`; the message is one line,
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


def _url(path: Path) -> str:
    # The file: protocol makes ffmpeg treat any name literally (no option, no protocol).
    return f"file:{os.fspath(path)}"


def _child_env() -> dict[str, str]:
    """ffmpeg's environment: what it needs, and not the API key or other secrets of ours."""
    keep = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TEMP", "TMP", "SYSTEMROOT")
    return {k: v for k, v in os.environ.items() if k in keep}


# The demuxers an input may use. A file from a recipe's folder is untrusted: without this
# list, one named `x.m3u8` (or any playlist ffmpeg recognises) makes ffmpeg open the files
# and URLs it lists, anywhere on the machine or the network.
DEMUXERS = ("mp3,wav,flac,ogg,mov,aac,aiff,matroska,w64,image2,png_pipe,jpeg_pipe,"
            "webp_pipe,bmp_pipe")


def _input(path: Path) -> list[str]:
    """`-i` for a file on disk: that file only (no other protocol, no playlist)."""
    return ["-protocol_whitelist", "file", "-format_whitelist", DEMUXERS, "-i", _url(path)]


# ffmpeg's closing lines that only say that an earlier error stopped it.
_NOISE_RE = re.compile(
    r"Task finished with error|Terminating thread with return code|"
    r"Nothing was written into output file|Could not open encoder before EOF|"
    r"Conversion failed|Exiting with exit code"
)
# "[fc#0 @ 0x55d1c0ffee00] " prefixes: addresses that differ at each run.
_PREFIX_RE = re.compile(r"^\[[^\]]*@ 0x[0-9a-f]+\] ")


def _tail(stderr: bytes) -> str:
    """The last informative lines of ffmpeg's stderr, on one line."""
    lines = []
    for raw in stderr.decode("utf-8", "replace").splitlines():
        line = _PREFIX_RE.sub("", raw.strip())
        if line and not _NOISE_RE.search(line):
            lines.append(line)
    return " | ".join(lines[-_TAIL_LINES:]) or "no error output"


def _run(op: str, target: Path, args: Sequence[str], *, level: str = "error") -> bytes:
    """Run ffmpeg with ``args``; return its stderr, raise MediaError on failure."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", level, *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, check=False, env=_child_env())
    except OSError as exc:
        raise MediaError(f"{op} {target}: cannot run ffmpeg: {exc}") from exc
    if proc.returncode != 0:
        raise MediaError(f"{op} {target}: ffmpeg: {_tail(proc.stderr)}")
    return proc.stderr


def _check_input(op: str, path: Path) -> None:
    if not path.is_file():
        raise MediaError(f"{op} {path}: no such file")


@contextlib.contextmanager
def _atomic(outs: Sequence[Path]) -> Iterator[list[Path]]:
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


def _audio_format(op: str, out: Path) -> str:
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in AUDIO_FORMATS:
        raise MediaError(
            f"{op} {out}: unsupported audio suffix {out.suffix!r} (use .wav, .flac or .mp3)"
        )
    return fmt


def _encode_args(
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
_NORMALISE = f"aresample={RATE},aformat=sample_fmts=fltp:channel_layouts=stereo"


def _num(x: float) -> str:
    """A float for a filter graph: fixed, locale-free, never in exponent form."""
    text = f"{x:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _secs(samples: int, rate: int) -> str:
    """Seconds for ``samples`` at ``rate``, to the microsecond ffmpeg parses (exact here)."""
    us = round(samples * 1_000_000 / rate)
    return f"{us // 1_000_000}.{us % 1_000_000:06d}"


# --------------------------------------------------------------------------- probing


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
    return [ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error",
            *_input(path), "-map", "0:a:0"]


def _count_samples(path: Path) -> int:
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
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=_child_env()) as proc:
            assert proc.stdout is not None
            while chunk := proc.stdout.read(1 << 20):
                total += len(chunk)
        err.seek(0)
        if proc.returncode != 0:
            raise MediaError(f"probe {path}: ffmpeg: {_tail(err.read())}")
    return total


def probe(path: Path) -> MediaInfo:
    """Describe ``path``: container, codecs, rate, channels, size and exact duration.

    The header is read from ``ffmpeg -i``; the duration of a file with audio is the
    number of decoded samples over the sample rate (exact for WAV and FLAC, and for MP3
    thanks to the gapless header); without audio it is the container's (0.0 for an image).
    """
    path = Path(path)
    _check_input("probe", path)
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", *_input(path)]
    try:
        # Without an output ffmpeg exits 1 after printing the input description.
        proc = subprocess.run(cmd, capture_output=True, check=False, env=_child_env())
    except OSError as exc:
        raise MediaError(f"probe {path}: cannot run ffmpeg: {exc}") from exc
    text = proc.stderr.decode("utf-8", "replace")
    head = _INPUT_RE.search(text)
    if head is None:
        raise MediaError(f"probe {path}: ffmpeg: {_tail(proc.stderr)}")
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
    if audio_codec is not None and sample_rate:
        samples = _count_samples(path)
        duration = samples / sample_rate
    elif _IMAGE_DEMUXERS.match(head.group(1)):
        duration = 0.0
    else:
        m = _DURATION_RE.search(header)
        duration = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3)) if m else 0.0
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


def _samples(op: str, path: Path) -> int:
    """Length of ``path`` in samples at 44.1 kHz (what our filter graphs count in)."""
    _check_input(op, path)
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
    _check_input("read_pcm", path)
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
    try:
        proc = subprocess.run(cmd, capture_output=True, check=False, env=_child_env())
    except OSError as exc:
        raise MediaError(f"read_pcm {path}: cannot run ffmpeg: {exc}") from exc
    if proc.returncode != 0:
        raise MediaError(f"read_pcm {path}: ffmpeg: {_tail(proc.stderr)}")
    return proc.stdout


# --------------------------------------------------------------------------- the composer


class _Dice:
    """Counter-mode sha256: a random stream that depends on nothing but its key.

    ``random.Random`` would do, but its algorithms may change between Python versions;
    the bytes of a take must not.
    """

    def __init__(self, *parts: str) -> None:
        self._key = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
        self._counter = 0

    def random(self) -> float:
        self._counter += 1
        block = hashlib.sha256(self._key + self._counter.to_bytes(8, "big")).digest()
        return int.from_bytes(block[:7], "big") / float(1 << 56)

    def randint(self, lo: int, hi: int) -> int:
        return lo + int(self.random() * (hi - lo + 1))

    def uniform(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * self.random()

    def choice(self, items: Sequence[_T]) -> _T:
        return items[int(self.random() * len(items))]

    def chance(self, p: float) -> bool:
        return self.random() < p


_SCALES = {False: (0, 2, 4, 5, 7, 9, 11), True: (0, 2, 3, 5, 7, 8, 10)}
# Four chords, one per bar, as 0-based scale degrees.
_PROGRESSIONS = {
    False: ((0, 4, 5, 3), (0, 5, 3, 4), (5, 3, 0, 4), (0, 3, 4, 3), (0, 3, 0, 4), (0, 1, 4, 0)),
    True: ((0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 6), (0, 5, 3, 4), (0, 3, 6, 2)),
}
# Rhythms of one bar of melody in 16th steps: (onset, length).
_RHYTHMS = (
    ((0, 4), (4, 2), (6, 2), (8, 4), (12, 4)),
    ((0, 2), (2, 2), (4, 4), (10, 2), (12, 4)),
    ((0, 6), (6, 2), (8, 6), (14, 2)),
    ((0, 3), (3, 3), (6, 2), (8, 4), (12, 2), (14, 2)),
    ((0, 2), (2, 2), (4, 2), (6, 2), (8, 2), (10, 2), (12, 4)),
    ((2, 2), (4, 2), (6, 2), (8, 6)),
)
_PHRASE_ENDS = (((0, 4), (4, 4), (8, 8)), ((0, 6), (6, 2), (8, 8)), ((0, 2), (2, 2), (4, 12)))
_BASS_RHYTHMS = (
    ((0, 8, 0), (8, 8, 0)),
    tuple((i, 2, 0) for i in range(0, 16, 2)),
    ((0, 6, 0), (6, 2, 0), (8, 4, 7), (12, 4, 12)),
    ((0, 3, 0), (3, 3, 0), (6, 2, 7), (8, 6, 0), (14, 2, 12)),
    ((0, 4, 0), (4, 4, 12), (8, 4, 7), (12, 4, 12)),
)
_KEYS_ORDERS = (
    (0, 1, 2, 3, 4, 3, 2, 1),
    (0, 2, 1, 2, 0, 2, 1, 2),
    (4, 3, 2, 1, 0, 1, 2, 3),
    (0, 1, 2, 1, 3, 2, 4, 2),
)
_KICKS = (
    (0, 4, 8, 12, 16, 20, 24, 28),
    (0, 8, 10, 16, 24, 26),
    (0, 10, 16, 26, 30),
    (0, 6, 8, 16, 22, 24),
)
_FAST = {
    "punk",
    "metal",
    "techno",
    "house",
    "edm",
    "dance",
    "trance",
    "dnb",
    "hardcore",
    "fast",
    "upbeat",
    "energetic",
    "rock",
    "disco",
    "electro",
    "drum",
    "hyperpop",
}
_SLOW = {
    "ballad",
    "slow",
    "ambient",
    "chill",
    "lofi",
    "lo",
    "downtempo",
    "acoustic",
    "folk",
    "soul",
    "jazz",
    "lullaby",
    "calm",
    "dreamy",
    "blues",
}
_MINOR = {
    "sad",
    "dark",
    "melancholic",
    "melancholy",
    "minor",
    "moody",
    "gothic",
    "blues",
    "noir",
    "somber",
    "sombre",
    "haunting",
    "melancholia",
}
_MAJOR = {"happy", "bright", "sunny", "joyful", "major", "cheerful", "summer", "uplifting"}

_LAYERS = ("vocals", "bass", "keyboard", "drums")
_INSTRUMENTAL_LAYERS = ("bass", "keyboard", "drums")

_Note = tuple[int, int, int]  # (onset step, length in steps, MIDI pitch)


@dataclass(frozen=True)
class _Plan:
    """Everything musical about a take; a pure function of (seed, style)."""

    step: int  # samples per 16th note at 44.1 kHz; a multiple of 4 so that 11025 Hz fits
    minor: bool
    root: int  # pitch class of the key
    chords: tuple[int, ...]  # scale degree of each of the 4 bars
    lead: tuple[_Note, ...]  # 8 bars = 128 steps
    bass: tuple[_Note, ...]  # 4 bars
    keys: tuple[_Note, ...]  # 4 bars
    kicks: tuple[int, ...]  # 2 bars = 32 steps
    noise: tuple[tuple[int, float, float], ...]  # (step, gain, decay per second), 2 bars
    lead_harmonics: tuple[float, float, float]
    lead_decay: float
    bass_harmonic: float
    keys_decay: float

    @property
    def bpm(self) -> float:
        return RATE * 60 / (4 * self.step)


def _midi_hz(midi: float) -> float:
    return 440.0 * 2 ** ((midi - 69) / 12)


def _plan(seed: str, style: str) -> _Plan:
    dice = _Dice("sunoflow-synth-v1", seed, style)
    words = set(re.findall(r"[a-z0-9]+", style.lower()))
    if words & _FAST:
        lo, hi = 118.0, 150.0
    elif words & _SLOW:
        lo, hi = 70.0, 96.0
    else:
        lo, hi = 86.0, 128.0
    bpm = dice.uniform(lo, hi)
    step = max(4, round(RATE * 60 / bpm / 4 / 4) * 4)
    if words & _MINOR:
        minor = True
    elif words & _MAJOR:
        minor = False
    else:
        minor = dice.chance(0.4)
    scale = _SCALES[minor]
    root = dice.randint(0, 11)
    chords = dice.choice(_PROGRESSIONS[minor])

    def pitch(tonic: int, degree: int) -> int:
        return tonic + 12 * (degree // 7) + scale[degree % 7]

    # Lead: the "vocal" line, fundamentals 330-1050 Hz (MIDI 64-84).
    tonic = 60 + root
    degrees = [d for d in range(-7, 21) if 64 <= pitch(tonic, d) <= 84]

    def chord_tone_near(idx: int, chord: int) -> int:
        tones = [i for i, d in enumerate(degrees) if (d - chord) % 7 in (0, 2, 4)]
        return min(tones, key=lambda i: (abs(i - idx), i))

    def bar_pitches(rhythm: Sequence[tuple[int, int]], chord: int, idx: int) -> list[int]:
        out = []
        for onset, _length in rhythm:
            if onset in (0, 8) or dice.chance(0.25):
                idx = chord_tone_near(idx + dice.randint(-2, 2), chord)
            else:
                move = dice.choice((-2, -1, -1, 1, 1, 2))
                # Lean back towards the middle of the range.
                if idx < len(degrees) // 3:
                    move = abs(move)
                elif idx > 2 * len(degrees) // 3:
                    move = -abs(move)
                idx = min(max(idx + move, 0), len(degrees) - 1)
            out.append(idx)
        return out

    rhythms = [dice.choice(_RHYTHMS) for _ in range(3)] + [dice.choice(_PHRASE_ENDS)]
    idx = len(degrees) // 2
    phrase_a: list[list[int]] = []
    for bar in range(4):
        pitches = bar_pitches(rhythms[bar], chords[bar], idx)
        phrase_a.append(pitches)
        idx = pitches[-1]
    # Phrase B opens like phrase A (the motif), then varies and resolves to the tonic.
    rhythms_b = [rhythms[0], rhythms[1], dice.choice(_RHYTHMS), dice.choice(_PHRASE_ENDS)]
    phrase_b = [phrase_a[0], phrase_a[1]]
    idx = phrase_a[1][-1]
    for bar in (2, 3):
        pitches = bar_pitches(rhythms_b[bar], chords[bar], idx)
        phrase_b.append(pitches)
        idx = pitches[-1]
    tonics = [i for i, d in enumerate(degrees) if d % 7 == 0]
    phrase_b[3][-1] = min(tonics, key=lambda i: abs(i - phrase_b[3][-1]))
    lead: list[_Note] = []
    for bar, (rhythm, pitches) in enumerate(
        zip(rhythms + rhythms_b, phrase_a + phrase_b, strict=True)
    ):
        for (onset, length), i in zip(rhythm, pitches, strict=True):
            lead.append((bar * 16 + onset, length, pitch(tonic, degrees[i])))

    # Bass: chord roots in MIDI 36-47 (65-123 Hz); fifths and octaves stay under 250 Hz.
    bass_rhythm = dice.choice(_BASS_RHYTHMS)
    bass: list[_Note] = []
    for bar, chord in enumerate(chords):
        base = 36 + (root + scale[chord % 7]) % 12
        bass += [(bar * 16 + on, length, base + iv) for on, length, iv in bass_rhythm]

    # Keyboard: a music-box arpeggio of the chord in MIDI 98-110 (2.3-4.7 kHz), clear of
    # the vocal band.
    order = dice.choice(_KEYS_ORDERS)
    sparse = dice.chance(0.35)
    keys: list[_Note] = []
    for bar, chord in enumerate(chords):
        pcs = {(root + scale[(chord + k) % 7]) % 12 for k in (0, 2, 4)}
        tones = sorted(m for m in range(98, 111) if m % 12 in pcs)[:5]
        for n, which in enumerate(order):
            if sparse and n % 2 == 0:
                continue
            keys.append((bar * 16 + 2 * n, 2, tones[which % len(tones)]))

    # Drums, two bars: kick pattern, claps on 2 and 4, hats on 8ths or 16ths.
    fast = bool(words & _FAST)
    kicks = _KICKS[0] if fast and dice.chance(0.6) else dice.choice(_KICKS)
    sixteenths = dice.chance(0.5 if fast else 0.25)
    open_hat = dice.chance(0.5)
    hits: dict[int, list[tuple[float, float]]] = {}
    for s in range(32):
        if s % 8 == 4:
            hits.setdefault(s, []).append((0.9, 16.0))
        if s % 2 == 0 or sixteenths:
            accent = 0.45 if s % 4 == 0 else 0.3 if s % 2 == 0 else 0.2
            decay = 9.0 if open_hat and s in (14, 30) else 45.0
            hits.setdefault(s, []).append((accent, decay))
    if dice.chance(0.5):
        hits.setdefault(31, []).append((0.5, 20.0))
    noise = tuple((s, g, d) for s in sorted(hits) for g, d in hits[s])

    h2, h3 = dice.uniform(0.2, 0.6), dice.uniform(0.05, 0.3)
    return _Plan(
        step=step,
        minor=minor,
        root=root,
        chords=chords,
        lead=tuple(lead),
        bass=tuple(bass),
        keys=tuple(keys),
        kicks=kicks,
        noise=noise,
        lead_harmonics=(1.0 / (1 + h2 + h3), h2 / (1 + h2 + h3), h3 / (1 + h2 + h3)),
        lead_decay=dice.uniform(0.3, 1.5),
        bass_harmonic=dice.uniform(0.1, 0.5),
        keys_decay=dice.uniform(4.0, 9.0),
    )


# Voices, the mono sources of a take: the layer (stem) each belongs to, its gain and its
# left/right weights. The gains keep the sum of the peaks under full scale, so the mix never
# clips and the stems written beside a take add up to it exactly (before encoding).
_VOICES = {
    "vocals": ("vocals", 0.24, 1.0, 1.0),
    "bass": ("bass", 0.26, 1.0, 1.0),
    "keyboard": ("keyboard", 0.07, 1.0, 0.7),
    "kick": ("drums", 0.26, 1.0, 1.0),
    "noise": ("drums", 0.12, 0.8, 1.0),
}


def _sequence(
    label: str, cycle_steps: int, events: Sequence[tuple[int, int, str]], step: int, rate: int
) -> list[str]:
    """aevalsrc segments, one per event (rests are silent segments), concatenated.

    Each segment has its own local ``t`` from 0, so an event's expression needs no lookup
    of what plays when; the cost per sample is that of one short expression.
    Expressions may use ``D`` for their segment's duration in seconds.
    """
    per_step = step * rate // RATE
    lines: list[str] = []
    cursor = 0
    segments: list[tuple[int, str]] = []
    ordered = sorted(events)
    for i, (onset, _length, expr) in enumerate(ordered):
        if onset > cursor:
            segments.append((onset - cursor, "0"))
        end = ordered[i + 1][0] if i + 1 < len(ordered) else cycle_steps
        segments.append((end - onset, expr))
        cursor = end
    if cursor < cycle_steps:
        segments.append((cycle_steps - cursor, "0"))
    for n, (steps, expr) in enumerate(segments):
        samples = steps * per_step
        body = expr.replace("D", _num(samples / rate)).replace(",", "\\,")
        lines.append(f"aevalsrc={body}:s={rate}:d={_secs(samples, rate)}[{label}{n}]")
    inputs = "".join(f"[{label}{n}]" for n in range(len(segments)))
    lines.append(f"{inputs}concat=n={len(segments)}:v=0:a=1[{label}]")
    return lines


def _looped(
    label: str,
    cycle_steps: int,
    events: Sequence[tuple[int, int, str]],
    step: int,
    rate: int,
    total: int,
    fx: str,
) -> list[str]:
    """One voice: render its cycle at ``rate``, loop it and leave ``total`` mono samples
    at 44.1 kHz in ``[label]``."""
    lines = _sequence(f"{label}_s", cycle_steps, events, step, rate)
    cycle = cycle_steps * step * rate // RATE
    need = -(-total * rate // RATE) + 64  # a little extra for the resampler's edges
    chain = [fx] if fx else []
    chain += [
        f"apad=whole_len={cycle}",
        f"atrim=end_sample={cycle}",
        f"aloop=loop=-1:size={cycle}",
        f"atrim=end_sample={need}",
    ]
    if rate != RATE:
        chain.append(f"aresample={RATE}")
    # amerge wants one sample format from all its inputs.
    chain += [
        f"apad=whole_len={total}",
        f"atrim=end_sample={total}",
        "aformat=sample_fmts=fltp:channel_layouts=mono",
    ]
    lines.append(f"[{label}_s]{','.join(chain)}[{label}]")
    return lines


def _voice_graph(plan: _Plan, voice: str, total: int, label: str) -> list[str]:
    """Graph lines leaving ``total`` mono samples of ``voice`` in ``[label]``."""
    step = plan.step
    events = []
    if voice == "vocals":
        a1, a2, a3 = plan.lead_harmonics
        for onset, length, midi in plan.lead:
            w = 2 * math.pi * _midi_hz(midi)
            expr = (
                f"({_num(a1)}*sin({_num(w)}*t)+{_num(a2)}*sin({_num(2 * w)}*t)"
                f"+{_num(a3)}*sin({_num(3 * w)}*t))"
                f"*min(min(1,90*t),40*(D-t))*exp(-{_num(plan.lead_decay)}*t)"
            )
            events.append((onset, length, expr))
        # Vibrato and a beat-long echo make it sing; the band-pass keeps it in 300-2000 Hz.
        fx = (
            f"vibrato=f=5.5:d=0.12,aecho=0.8:0.7:{_num(1000 * 4 * step / RATE)}:0.22,"
            "highpass=f=300,lowpass=f=2000"
        )
        return _looped(label, 128, events, step, 22050, total, fx)
    if voice == "bass":
        h = plan.bass_harmonic
        for onset, length, midi in plan.bass:
            w = 2 * math.pi * _midi_hz(midi)
            expr = (
                f"({_num(1 / (1 + h))}*sin({_num(w)}*t)+{_num(h / (1 + h))}"
                f"*sin({_num(2 * w)}*t))*min(min(1,300*t),40*(D-t))*exp(-2*t)"
            )
            events.append((onset, length, expr))
        return _looped(label, 64, events, step, 11025, total, "lowpass=f=250,lowpass=f=250")
    if voice == "keyboard":
        for onset, length, midi in plan.keys:
            w = 2 * math.pi * _midi_hz(midi)
            expr = f"sin({_num(w)}*t)*exp(-{_num(plan.keys_decay)}*t)*min(1,60*(D-t))"
            events.append((onset, length, expr))
        return _looped(label, 64, events, step, 22050, total, "")
    if voice == "kick":
        # A sine swept from 200 Hz down to 45 Hz: the phase is the integral of
        # 45 + 155*exp(-25 t) Hz. The low-pass keeps its click out of the vocal band.
        expr = "sin(282.743*t+38.956*(1-exp(-25*t)))*exp(-11*t)*min(1,60*(D-t))"
        return _looped(
            label,
            32,
            [(s, 1, expr) for s in plan.kicks],
            step,
            11025,
            total,
            "lowpass=f=250,lowpass=f=250",
        )
    by_step: dict[int, list[tuple[float, float]]] = {}
    for s, g, d in plan.noise:
        by_step.setdefault(s, []).append((g, d))
    for s, hits in sorted(by_step.items()):
        env = "+".join(f"{_num(g)}*exp(-{_num(d)}*t)" for g, d in hits)
        events.append((s, 1, f"(2*random(0)-1)*({env})*min(1,200*(D-t))"))
    return _looped(label, 32, events, step, RATE, total, "highpass=f=5000,highpass=f=5000")


def _pan(labels: Sequence[str], voices: Sequence[str], out: str, tail: str = "") -> str:
    """Sum mono ``labels`` (playing ``voices``) into stereo ``[out]`` with their gains and
    pans, in one pan filter; ``tail`` is appended to the chain (fades)."""
    left = "+".join(f"{_num(_VOICES[v][1] * _VOICES[v][2])}*c{i}" for i, v in enumerate(voices))
    right = "+".join(f"{_num(_VOICES[v][1] * _VOICES[v][3])}*c{i}" for i, v in enumerate(voices))
    inputs = "".join(f"[{lb}]" for lb in labels)
    merge = f"amerge=inputs={len(labels)}," if len(labels) > 1 else ""
    # Keep pan in floating point: with a 16-bit output it would negotiate s16 and mix in
    # fixed point, where we measured stray samples off by 100 LSB.
    return f"{inputs}{merge}pan=stereo|c0={left}|c1={right},aformat=sample_fmts=fltp{tail}[{out}]"


def _fades(total: int, fade_in: int, fade_out: int) -> str:
    chain = ""
    if fade_in:
        chain += f",afade=t=in:ss=0:ns={fade_in}"
    if fade_out:
        chain += f",afade=t=out:ss={total - fade_out}:ns={fade_out}"
    return chain


def _take(
    plan: _Plan,
    layers: Sequence[str],
    total: int,
    prefix: str,
    *,
    fade_in: int,
    fade_out: int,
    stems: bool = False,
) -> tuple[list[str], str, dict[str, str]]:
    """Graph lines for a take of ``total`` samples made of ``layers``.

    Returns the lines, the label of the stereo mix (``prefix`` + "mix") and, with
    ``stems``, a stereo label per layer. Labels carry ``prefix`` so that a take can share
    a graph with other streams.
    """
    voices = [v for v in _VOICES if _VOICES[v][0] in layers]
    lines: list[str] = []
    for voice in voices:
        lines += _voice_graph(plan, voice, total, f"{prefix}{voice}")
    tail = _fades(total, fade_in, fade_out)
    if not stems:
        lines.append(_pan([f"{prefix}{v}" for v in voices], voices, f"{prefix}mix", tail))
        return lines, f"{prefix}mix", {}
    for voice in voices:
        lines.append(f"[{prefix}{voice}]asplit=2[{prefix}{voice}_m][{prefix}{voice}_x]")
    lines.append(_pan([f"{prefix}{v}_m" for v in voices], voices, f"{prefix}mix", tail))
    stem_labels = {}
    for layer in layers:
        mine = [v for v in voices if _VOICES[v][0] == layer]
        label = f"{prefix}{layer}_stem"
        lines.append(_pan([f"{prefix}{v}_x" for v in mine], mine, label, tail))
        stem_labels[layer] = label
    return lines, f"{prefix}mix", stem_labels


def _fade_lengths(total: int) -> tuple[int, int]:
    """Fade-in (10 ms, against a click) and fade-out (2.5 s, or a sixth) of a take."""
    return min(441, total // 4), min(round(2.5 * RATE), total // 6)


def _samples_of(op: str, out: Path, seconds: float, what: str) -> int:
    if not math.isfinite(seconds) or seconds <= 0:
        raise MediaError(f"{op} {out}: {what} must be a positive number of seconds, not {seconds}")
    samples = round(seconds * RATE)
    if samples < 1:
        raise MediaError(f"{op} {out}: {what} {seconds} is shorter than one sample")
    return samples


def synth(
    out: Path,
    *,
    seed: str,
    duration: float,
    style: str = "",
    instrumental: bool = False,
    stems_dir: Path | None = None,
) -> None:
    """Compose and render a take of ``duration`` seconds into ``out``.

    Tempo, key, chords, melody and timbres derive from sha256(seed, style); ``style``
    words also steer tempo (``punk``, ``ballad`` ...) and mode (``sad``, ``happy`` ...).
    The take has four layers in their own bands: ``bass`` (< 250 Hz), ``drums`` (a swept
    sine kick < 200 Hz and noise bursts > 5 kHz), ``keyboard`` (a music-box arpeggio,
    2.3-4.7 kHz) and, unless ``instrumental``, ``vocals`` (a lead line, 300-2000 Hz).
    With ``stems_dir``, each layer is also written there as ``<layer><suffix of out>``,
    the same length as the take; before encoding the stems add up to the take exactly.
    """
    out = Path(out)
    fmt = _audio_format("synth", out)
    total = _samples_of("synth", out, duration, "duration")
    plan = _plan(seed, style)
    layers = _INSTRUMENTAL_LAYERS if instrumental else _LAYERS
    fade_in, fade_out = _fade_lengths(total)
    lines, mix_label, stems = _take(
        plan, layers, total, "", fade_in=fade_in, fade_out=fade_out, stems=stems_dir is not None
    )
    outs = [out]
    maps = [mix_label]
    if stems_dir is not None:
        for layer, label in stems.items():
            outs.append(Path(stems_dir) / f"{layer}{out.suffix}")
            maps.append(label)
    _render("synth", outs, maps, lines, [], fmt, fast=True)


def _render(
    op: str,
    outs: Sequence[Path],
    maps: Sequence[str],
    lines: Sequence[str],
    inputs: Sequence[str],
    fmt: str,
    bitrate_kbps: int | None = None,
    *,
    fast: bool = False,
) -> None:
    """Run one ffmpeg graph writing ``outs`` (one per mapped label), atomically."""
    with _atomic(outs) as tmps:
        args = [*inputs, "-filter_complex_threads", "1", "-filter_complex", ";".join(lines)]
        for label, tmp in zip(maps, tmps, strict=True):
            args += [
                "-map",
                f"[{label}]",
                *_encode_args(op, outs[0], fmt, bitrate_kbps, fast=fast),
                "-y",
                _url(tmp),
            ]
        _run(op, outs[0], args)


def extend(
    src: Path,
    out: Path,
    *,
    continue_at: float,
    seed: str,
    duration: float,
    style: str = "",
    instrumental: bool = False,
) -> None:
    """Write the whole extended song: ``src`` up to ``continue_at``, then a new take of
    ``duration`` seconds; the result lasts exactly ``continue_at + duration``.

    The source keeps playing for a short crossfade (up to 0.25 s, when it has that much
    after ``continue_at``) while the continuation fades in, so the join is seamless and
    the total length is unchanged. Raises MediaError unless 0 < continue_at < length of src.
    """
    src, out = Path(src), Path(out)
    fmt = _audio_format("extend", out)
    src_total = _samples("extend", src)
    src_seconds = src_total / RATE
    if not math.isfinite(continue_at) or not 0 < continue_at < src_seconds:
        raise MediaError(
            f"extend {src}: continue_at {continue_at} must be inside the source "
            f"(0 < continue_at < {src_seconds:.3f})"
        )
    head = round(continue_at * RATE)
    tail = _samples_of("extend", out, duration, "duration")
    xfade = min(round(0.25 * RATE), src_total - head, tail // 2)
    plan = _plan(seed, style)
    layers = _INSTRUMENTAL_LAYERS if instrumental else _LAYERS
    _, fade_out = _fade_lengths(tail)
    lines, cont, _ = _take(plan, layers, tail, "c_", fade_in=0, fade_out=fade_out)
    total = head + tail
    if xfade >= 64:
        lines.append(f"[0:a]{_NORMALISE},atrim=end_sample={head + xfade}[head]")
        lines.append(
            f"[head][{cont}]acrossfade=ns={xfade}:c1=tri:c2=tri,"
            f"apad=whole_len={total},atrim=end_sample={total}[mix]"
        )
    else:
        # Too little source left after the cut for a crossfade: a 10 ms fade-out instead.
        short = min(441, head)
        lines.append(
            f"[0:a]{_NORMALISE},atrim=end_sample={head},"
            f"afade=t=out:ss={head - short}:ns={short}[head]"
        )
        lines.append(
            f"[head][{cont}]concat=n=2:v=0:a=1,apad=whole_len={total},atrim=end_sample={total}[mix]"
        )
    _render("extend", [out], ["mix"], lines, _input(src), fmt, fast=True)


def mix(base: Path, out: Path, *, seed: str, layer: str) -> None:
    """Synthesise a ``layer`` ("vocals": a lead line; "instrumental": bass, keyboard and
    drums) as long as ``base`` and mix it in; a limiter keeps the sum below full scale."""
    base, out = Path(base), Path(out)
    fmt = _audio_format("mix", out)
    if layer not in ("vocals", "instrumental"):
        raise MediaError(f"mix {out}: layer must be 'vocals' or 'instrumental', not {layer!r}")
    total = _samples("mix", base)
    plan = _plan(seed, "")
    layers = ("vocals",) if layer == "vocals" else _INSTRUMENTAL_LAYERS
    fade_in, fade_out = _fade_lengths(total)
    lines, layer_mix, _ = _take(plan, layers, total, "l_", fade_in=fade_in, fade_out=fade_out)
    lines.append(f"[0:a]{_NORMALISE}[base]")
    # amerge + pan is an exact weighted sum (amix would rescale its inputs).
    lines.append(
        f"[base][{layer_mix}]amerge=inputs=2,pan=stereo|c0=0.8*c0+c2|c1=0.8*c1+c3,"
        "aformat=sample_fmts=fltp,alimiter=limit=0.97:level=0:latency=1,"
        f"apad=whole_len={total},atrim=end_sample={total}[mix]"
    )
    _render("mix", [out], ["mix"], lines, _input(base), fmt, fast=True)


# --------------------------------------------------------------------------- separation

# Band edges in Hz; each band is two cascaded 2-pole Butterworth sections per edge.
_BANDS = {
    "vocals": (300, 2000),
    "bass": (None, 250),
    "keyboard": (2000, 5000),
    "drums": (5000, None),
}


def _band(lo: int | None, hi: int | None) -> str:
    chain = []
    if lo is not None:
        chain += [f"highpass=f={lo}"] * 2
    if hi is not None:
        chain += [f"lowpass=f={hi}"] * 2
    return ",".join(chain)


def separate(src: Path, out_dir: Path, *, mode: str) -> dict[str, Path]:
    """Split ``src`` into WAV stems in ``out_dir`` with a filter bank.

    ``separate_vocal`` gives ``vocals`` (300-2000 Hz) and ``instrumental``;
    ``split_stem`` gives ``vocals``, ``bass`` (< 250 Hz), ``keyboard`` (2-5 kHz),
    ``drums`` (> 5 kHz) and ``fx``. The last stem is the residual (source minus the
    others, computed in floating point), so the stems add up to the source up to 16-bit
    rounding. WAV rather than MP3 keeps that property; it is what makes them stems.
    """
    src, out_dir = Path(src), Path(out_dir)
    _check_input("separate", src)
    names: tuple[str, ...]
    if mode == "separate_vocal":
        names = SEPARATE_VOCAL_STEMS
    elif mode == "split_stem":
        names = SPLIT_STEMS
    else:
        raise MediaError(
            f"separate {src}: mode must be 'separate_vocal' or 'split_stem', not {mode!r}"
        )
    bands = names[:-1]
    residual = names[-1]
    copies = [f"in{i}" for i in range(len(bands) + 1)]
    lines = [f"[0:a]{_NORMALISE},asplit={len(copies)}{''.join(f'[{c}]' for c in copies)}"]
    for i, name in enumerate(bands):
        lines.append(
            f"[in{i}]{_band(*_BANDS[name])},aformat=sample_fmts=fltp,asplit=2[{name}][{name}_r]"
        )
    # The residual is the source minus every band, in one pan over the merged channels:
    # amerge puts the source in channels 0-1 and band k in channels 2k+2, 2k+3.
    left = "c0" + "".join(f"-c{2 * k + 2}" for k in range(len(bands)))
    right = "c1" + "".join(f"-c{2 * k + 3}" for k in range(len(bands)))
    inputs = f"[in{len(bands)}]" + "".join(f"[{name}_r]" for name in bands)
    lines.append(
        f"{inputs}amerge=inputs={len(bands) + 1},pan=stereo|c0={left}|c1={right},"
        f"aformat=sample_fmts=fltp[{residual}]"
    )
    outs = {name: out_dir / f"{name}.wav" for name in names}
    _render("separate", list(outs.values()), list(names), lines, _input(src), "wav")
    return outs


# --------------------------------------------------------------------------- editing


def _edit(
    op: str,
    src: Path,
    out: Path,
    chain: str,
    *,
    fmt: str | None = None,
    bitrate_kbps: int | None = None,
) -> None:
    fmt = fmt or _audio_format(op, out)
    lines = [f"[0:a]{_NORMALISE}{',' + chain if chain else ''}[out]"]
    _render(op, [out], ["out"], lines, _input(src), fmt, bitrate_kbps)


def transcode(src: Path, out: Path, *, fmt: str, bitrate_kbps: int | None = None) -> None:
    """Re-encode ``src`` as ``fmt`` (wav, flac or mp3; mp3 at ``bitrate_kbps``, default
    192). ``out`` must carry the matching suffix; the bitrate of a lossless format is
    ignored."""
    src, out = Path(src), Path(out)
    _check_input("transcode", src)
    if fmt not in AUDIO_FORMATS:
        raise MediaError(f"transcode {out}: format must be wav, flac or mp3, not {fmt!r}")
    if _audio_format("transcode", out) != fmt:
        raise MediaError(f"transcode {out}: suffix {out.suffix!r} does not match format {fmt!r}")
    _edit("transcode", src, out, "", fmt=fmt, bitrate_kbps=bitrate_kbps if fmt == "mp3" else None)


def concat(srcs: list[Path], out: Path) -> None:
    """Join ``srcs`` end to end (any formats and rates) into ``out``."""
    out = Path(out)
    fmt = _audio_format("concat", out)
    if not srcs:
        raise MediaError(f"concat {out}: nothing to join")
    inputs: list[str] = []
    for src in srcs:
        _check_input("concat", Path(src))
        inputs += _input(Path(src))
    lines = [f"[{i}:a]{_NORMALISE}[a{i}]" for i in range(len(srcs))]
    lines.append(
        "".join(f"[a{i}]" for i in range(len(srcs))) + f"concat=n={len(srcs)}:v=0:a=1[out]"
    )
    _render("concat", [out], ["out"], lines, inputs, fmt)


def trim(src: Path, out: Path, *, start: float = 0.0, end: float | None = None) -> None:
    """Keep ``src`` from ``start`` to ``end`` seconds (``end`` past the source is clamped).

    Raises MediaError unless 0 <= start < length and start < end."""
    src, out = Path(src), Path(out)
    total = _samples("trim", src)
    if not math.isfinite(start) or not 0 <= start < total / RATE:
        raise MediaError(
            f"trim {src}: start {start} must be inside the source (0 <= start < {total / RATE:.3f})"
        )
    first = round(start * RATE)
    last = total if end is None else min(total, round(end * RATE))
    if end is not None and (not math.isfinite(end) or last <= first):
        raise MediaError(f"trim {src}: end {end} must come after start {start}")
    _edit("trim", src, out, f"atrim=start_sample={first}:end_sample={last},asetpts=N/SR/TB")


def fade(src: Path, out: Path, *, fade_in: float = 0.0, fade_out: float = 0.0) -> None:
    """Fade ``src`` in over its first ``fade_in`` seconds and out over its last
    ``fade_out`` seconds (linear). Each must be between 0 and the length of ``src``."""
    src, out = Path(src), Path(out)
    total = _samples("fade", src)
    chain = []
    for name, seconds in (("fade_in", fade_in), ("fade_out", fade_out)):
        if not math.isfinite(seconds) or not 0 <= seconds <= total / RATE:
            raise MediaError(
                f"fade {src}: {name} {seconds} must be between 0 and the length "
                f"of the source ({total / RATE:.3f})"
            )
    n_in, n_out = round(fade_in * RATE), round(fade_out * RATE)
    if n_in:
        chain.append(f"afade=t=in:ss=0:ns={n_in}")
    if n_out:
        chain.append(f"afade=t=out:ss={total - n_out}:ns={n_out}")
    _edit("fade", src, out, ",".join(chain))


_TRUE_PEAK_CEILING = -1.0  # dBTP, the usual streaming ceiling


def _ebur128(op: str, path: Path, *, true_peak: bool) -> tuple[float, float]:
    """(integrated loudness in LUFS, true peak in dBTP or -inf) of ``path``."""
    _check_input(op, path)
    peak = "true" if true_peak else "none"
    stderr = _run(
        op,
        path,
        [
            *_input(path),
            "-map",
            "0:a:0",
            "-af",
            f"ebur128=framelog=quiet:peak={peak}",
            "-f",
            "null",
            "-",
        ],
        level="info",
    ).decode("utf-8", "replace")
    found = re.findall(r"I:\s+(-?\d+(?:\.\d+)?|-inf) LUFS", stderr)
    if not found:
        raise MediaError(f"{op} {path}: ffmpeg printed no loudness summary")
    peaks = re.findall(r"Peak:\s+(-?\d+(?:\.\d+)?|-inf) dBFS", stderr)
    return max(-70.0, float(found[-1])), float(peaks[-1]) if peaks else -math.inf


def normalize(src: Path, out: Path, *, lufs: float = -14.0) -> None:
    """Bring ``src`` to ``lufs`` integrated loudness (EBU R128).

    A linear gain from the ebur128 measurement, exact when the true peak stays under
    -1 dBTP; otherwise a limiter holds the peaks at -1 dBFS and, since limiting lowers
    the loudness a little, the gain is corrected once from a measurement of the result.
    (ffmpeg's loudnorm would do the same at 192 kHz, ten times slower.) Silence cannot be
    normalised and is copied as is.
    """
    src, out = Path(src), Path(out)
    fmt = _audio_format("normalize", out)
    if not math.isfinite(lufs) or not -70 <= lufs <= -5:
        raise MediaError(f"normalize {out}: lufs {lufs} must be between -70 and -5")
    measured, peak = _ebur128("normalize", src, true_peak=True)
    if measured <= -70:
        _edit("normalize", src, out, "", fmt=fmt)
        return
    gain = lufs - measured
    limit = peak + gain > _TRUE_PEAK_CEILING
    ceiling = _num(10 ** (_TRUE_PEAK_CEILING / 20))
    for _attempt in range(2):
        chain = f"volume={_num(gain)}dB"
        if limit:
            chain += f",alimiter=limit={ceiling}:level=0:latency=1"
        _edit("normalize", src, out, chain, fmt=fmt)
        if not limit:
            break
        got, _ = _ebur128("normalize", out, true_peak=False)
        if abs(got - lufs) <= 0.3:
            break
        gain += lufs - got


def loudness(path: Path) -> float:
    """Integrated loudness of ``path`` in LUFS (EBU R128 via the ebur128 filter, to
    0.1 LU); -70.0 for silence."""
    return _ebur128("loudness", Path(path), true_peak=False)[0]


# --------------------------------------------------------------------------- pictures

_IMAGE_CODECS = {
    ".png": ["-c:v", "png", "-pix_fmt", "rgb24"],
    ".jpg": ["-c:v", "mjpeg", "-pix_fmt", "yuvj444p", "-q:v", "3"],
    ".jpeg": ["-c:v", "mjpeg", "-pix_fmt", "yuvj444p", "-q:v", "3"],
}


def _hsv(h: float, s: float, v: float) -> str:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    r, g, b = ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))[i]
    return f"0x{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"


def _artwork(seed: str, size: int) -> str:
    """A filter chain drawing the artwork for ``seed``: a four-colour gradient under
    rippled rings, with a vignette. Only numbers derived from the hash enter the graph."""
    dice = _Dice("sunoflow-cover-v1", seed)
    hue = dice.random()
    spread = dice.uniform(0.06, 0.4)
    colors = [
        _hsv((hue + k * spread) % 1.0, dice.uniform(0.45, 0.9), dice.uniform(0.35, 1.0))
        for k in range(4)
    ]
    kind = dice.choice(("linear", "radial", "square"))
    pts = [dice.randint(0, size - 1) for _ in range(4)]
    cx, cy = dice.randint(size // 5, 4 * size // 5), dice.randint(size // 5, 4 * size // 5)
    wave = _num(size / dice.uniform(30.0, 90.0))
    petals = dice.randint(0, 7)
    wobble = _num(dice.uniform(0.0, 2.5))
    opacity = _num(dice.uniform(0.35, 0.7))
    rings = (
        f"128+110*sin(hypot(X-{cx},Y-{cy})/{wave}+{wobble}*sin({petals}*atan2(Y-{cy},X-{cx})))"
    ).replace(",", "\\,")
    grad = (
        f"gradients=s={size}x{size}:c0={colors[0]}:c1={colors[1]}:c2={colors[2]}"
        f":c3={colors[3]}:nb_colors=4:x0={pts[0]}:y0={pts[1]}:x1={pts[2]}:y1={pts[3]}"
        f":type={kind}:seed={dice.randint(0, 2**31 - 1)}:speed=0:d=1:r=1"
    )
    return (
        f"{grad},format=gbrp[art_g];"
        f"color=c=gray:s={size}x{size}:d=1:r=1,format=gray,geq=lum={rings},"
        f"format=gbrp[art_p];"
        f"[art_g][art_p]blend=all_mode=softlight:all_opacity={opacity},vignette=PI/5"
    )


def cover_image(out: Path, *, seed: str, size: int = 512) -> None:
    """Draw square artwork of ``size`` pixels for ``seed`` into ``out`` (.png or .jpg)."""
    out = Path(out)
    codec = _IMAGE_CODECS.get(out.suffix.lower())
    if codec is None:
        raise MediaError(
            f"cover_image {out}: unsupported image suffix {out.suffix!r} (use .png or .jpg)"
        )
    if not 16 <= size <= 4096:
        raise MediaError(f"cover_image {out}: size {size} must be between 16 and 4096")
    graph = f"{_artwork(seed, size)}[art]"
    with _atomic([out]) as (tmp,):
        _run(
            "cover_image",
            out,
            [
                "-filter_complex_threads",
                "1",
                "-filter_complex",
                graph,
                "-map",
                "[art]",
                "-frames:v",
                "1",
                *codec,
                "-map_metadata",
                "-1",
                "-fflags",
                "+bitexact",
                "-flags:v",
                "+bitexact",
                "-f",
                "image2",
                "-update",
                "1",
                "-y",
                _url(tmp),
            ],
        )


_VIDEO_W, _VIDEO_H, _VIDEO_FPS = 640, 360, 20


def _tag_text(text: str) -> str:
    """A tag value on ffmpeg's command line: one line, no control characters, bounded."""
    return "".join(c if c.isprintable() else " " for c in text)[:200]


def video(audio: Path, out: Path, *, seed: str, image: Path | None = None,
          title: str = "", artist: str = "") -> None:
    """Render an MP4 (H.264 + AAC) as long as ``audio``: the artwork (``image``, or the
    one :func:`cover_image` draws for ``seed``) over a blurred copy of itself, and an
    animated waveform of the audio beside it. ``title`` and ``artist`` go into the MP4's
    tags, which players show (not drawn on the picture: that would need a font, and the
    same bytes on every machine matter more)."""
    audio, out = Path(audio), Path(out)
    _check_input("video", audio)
    if out.suffix.lower() != ".mp4":
        raise MediaError(f"video {out}: the output must be an .mp4 file")
    if image is not None:
        _check_input("video", Path(image))
    dice = _Dice("sunoflow-video-v1", seed)
    wave_colour = _hsv(dice.random(), dice.uniform(0.2, 0.6), 1.0)
    w, h, fps = _VIDEO_W, _VIDEO_H, _VIDEO_FPS
    thumb = 240
    inputs = _input(audio)
    if image is None:
        picture = _artwork(seed, thumb * 2)
    else:
        # The first frame only, should the "image" be an animation.
        picture = "[1:v]trim=end_frame=1,format=gbrp"
        inputs += _input(Path(image))
    top = (h - thumb) // 2
    lines = [
        f"{picture},split=2[pic_a][pic_b]",
        f"[pic_a]scale={w}:{h}:force_original_aspect_ratio=increase,crop={w}:{h},"
        "gblur=sigma=18,eq=brightness=-0.18[bg]",
        f"[pic_b]scale={thumb}:{thumb}:force_original_aspect_ratio=increase,"
        f"crop={thumb}:{thumb}[thumb]",
        # Composed and converted once, then repeated: the still costs one frame, and the
        # per-frame overlay below works in yuv420 without converting whole frames.
        f"[bg][thumb]overlay=40:{top},format=yuv420p,loop=loop=-1:size=1:start=0,fps={fps}[still]",
        f"[0:a]{_NORMALISE},asplit=2[snd][wav_in]",
        # At 8 kHz a frame's worth of audio (400 samples) is about one sample per pixel
        # column: all the waveform can show, at a fifth of the cost.
        f"[wav_in]aresample=8000,showwaves=s=320x{thumb}:mode=cline:rate={fps}"
        f":colors={wave_colour}:draw=full,format=yuva420p[waves]",
        f"[still][waves]overlay=300:{top}:shortest=1:format=yuv420[v]",
    ]
    with _atomic([out]) as (tmp,):
        _run(
            "video",
            out,
            [
                *inputs,
                "-filter_complex_threads",
                "1",
                "-filter_complex",
                ";".join(lines),
                "-map",
                "[v]",
                "-map",
                "[snd]",
                # x264's output depends on its thread count: pin it to one.
                "-c:v",
                "libx264",
                "-preset",
                "superfast",
                "-crf",
                "26",
                "-threads",
                "1",
                "-pix_fmt",
                "yuv420p",
                "-g",
                str(fps * 10),
                "-r",
                str(fps),
                # The native AAC encoder's defaults cost ten times real time here; these
                # switches bring it to about 40x at no audible cost for a teaser.
                "-c:a",
                "aac",
                "-aac_coder",
                "fast",
                "-aac_pns",
                "0",
                "-aac_tns",
                "0",
                "-aac_is",
                "0",
                "-aac_ms",
                "0",
                "-b:a",
                "192k",
                "-ar",
                str(RATE),
                "-ac",
                str(CHANNELS),
                "-map_metadata",
                "-1",
                *(["-metadata", f"title={_tag_text(title)}"] if title else []),
                *(["-metadata", f"artist={_tag_text(artist)}"] if artist else []),
                "-fflags",
                "+bitexact",
                "-flags",
                "+bitexact",
                "-movflags",
                "+faststart",
                "-f",
                "mp4",
                "-y",
                _url(tmp),
            ],
        )
