"""Edits of existing audio: trim, fade, concat, normalize (and loudness), transcode and
separate (a filter bank into stems). Each is one ffmpeg graph written atomically."""

from __future__ import annotations

import math
import re
from pathlib import Path

from runner.studio.ffmpeg import (
    AUDIO_FORMATS,
    NORMALISE,
    RATE,
    MediaError,
    audio_format,
    check_input,
    input_args,
    num,
    render,
    run,
)
from runner.studio.probe import sample_count

SEPARATE_VOCAL_STEMS = ("vocals", "instrumental")
SPLIT_STEMS = ("vocals", "bass", "keyboard", "drums", "fx")


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
    check_input("separate", src)
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
    lines = [f"[0:a]{NORMALISE},asplit={len(copies)}{''.join(f'[{c}]' for c in copies)}"]
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
    render("separate", list(outs.values()), list(names), lines, input_args(src), "wav")
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
    fmt = fmt or audio_format(op, out)
    lines = [f"[0:a]{NORMALISE}{',' + chain if chain else ''}[out]"]
    render(op, [out], ["out"], lines, input_args(src), fmt, bitrate_kbps)


def transcode(src: Path, out: Path, *, fmt: str, bitrate_kbps: int | None = None) -> None:
    """Re-encode ``src`` as ``fmt`` (wav, flac or mp3; mp3 at ``bitrate_kbps``, default
    192). ``out`` must carry the matching suffix; the bitrate of a lossless format is
    ignored."""
    src, out = Path(src), Path(out)
    check_input("transcode", src)
    if fmt not in AUDIO_FORMATS:
        raise MediaError(f"transcode {out}: format must be wav, flac or mp3, not {fmt!r}")
    if audio_format("transcode", out) != fmt:
        raise MediaError(f"transcode {out}: suffix {out.suffix!r} does not match format {fmt!r}")
    _edit("transcode", src, out, "", fmt=fmt, bitrate_kbps=bitrate_kbps if fmt == "mp3" else None)


def concat(srcs: list[Path], out: Path) -> None:
    """Join ``srcs`` end to end (any formats and rates) into ``out``."""
    out = Path(out)
    fmt = audio_format("concat", out)
    if not srcs:
        raise MediaError(f"concat {out}: nothing to join")
    inputs: list[str] = []
    for src in srcs:
        check_input("concat", Path(src))
        inputs += input_args(Path(src))
    lines = [f"[{i}:a]{NORMALISE}[a{i}]" for i in range(len(srcs))]
    lines.append(
        "".join(f"[a{i}]" for i in range(len(srcs))) + f"concat=n={len(srcs)}:v=0:a=1[out]"
    )
    render("concat", [out], ["out"], lines, inputs, fmt)


def trim(src: Path, out: Path, *, start: float = 0.0, end: float | None = None) -> None:
    """Keep ``src`` from ``start`` to ``end`` seconds (``end`` past the source is clamped).

    Raises MediaError unless 0 <= start < length and start < end."""
    src, out = Path(src), Path(out)
    total = sample_count("trim", src)
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
    total = sample_count("fade", src)
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
    check_input(op, path)
    peak = "true" if true_peak else "none"
    stderr = run(
        op,
        path,
        [
            *input_args(path),
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
    fmt = audio_format("normalize", out)
    if not math.isfinite(lufs) or not -70 <= lufs <= -5:
        raise MediaError(f"normalize {out}: lufs {lufs} must be between -70 and -5")
    measured, peak = _ebur128("normalize", src, true_peak=True)
    if measured <= -70:
        _edit("normalize", src, out, "", fmt=fmt)
        return
    gain = lufs - measured
    limit = peak + gain > _TRUE_PEAK_CEILING
    ceiling = num(10 ** (_TRUE_PEAK_CEILING / 20))
    for _attempt in range(2):
        chain = f"volume={num(gain)}dB"
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

