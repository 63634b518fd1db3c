"""The local synthesis of music: a take composed from a seed and a style, rendered by one
ffmpeg graph of synthesised voices (``synth``), a continuation of a song (``extend``) and a
layer added to a track (``mix``).

Everything musical is a pure function of (seed, style) drawn from :mod:`runner.studio.dice`
(:func:`_plan`); ffmpeg only renders the numbers. The bytes of a take are pinned: the
example album must stay byte-identical, so the draws and their order must not change.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from runner.studio.dice import Dice
from runner.studio.ffmpeg import (
    NORMALISE,
    RATE,
    MediaError,
    audio_format,
    input_args,
    num,
    render,
    secs,
)
from runner.studio.probe import sample_count

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
    dice = Dice("sunoflow-synth-v1", seed, style)
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
        body = expr.replace("D", num(samples / rate)).replace(",", "\\,")
        lines.append(f"aevalsrc={body}:s={rate}:d={secs(samples, rate)}[{label}{n}]")
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
                f"({num(a1)}*sin({num(w)}*t)+{num(a2)}*sin({num(2 * w)}*t)"
                f"+{num(a3)}*sin({num(3 * w)}*t))"
                f"*min(min(1,90*t),40*(D-t))*exp(-{num(plan.lead_decay)}*t)"
            )
            events.append((onset, length, expr))
        # Vibrato and a beat-long echo make it sing; the band-pass keeps it in 300-2000 Hz.
        fx = (
            f"vibrato=f=5.5:d=0.12,aecho=0.8:0.7:{num(1000 * 4 * step / RATE)}:0.22,"
            "highpass=f=300,lowpass=f=2000"
        )
        return _looped(label, 128, events, step, 22050, total, fx)
    if voice == "bass":
        h = plan.bass_harmonic
        for onset, length, midi in plan.bass:
            w = 2 * math.pi * _midi_hz(midi)
            expr = (
                f"({num(1 / (1 + h))}*sin({num(w)}*t)+{num(h / (1 + h))}"
                f"*sin({num(2 * w)}*t))*min(min(1,300*t),40*(D-t))*exp(-2*t)"
            )
            events.append((onset, length, expr))
        return _looped(label, 64, events, step, 11025, total, "lowpass=f=250,lowpass=f=250")
    if voice == "keyboard":
        for onset, length, midi in plan.keys:
            w = 2 * math.pi * _midi_hz(midi)
            expr = f"sin({num(w)}*t)*exp(-{num(plan.keys_decay)}*t)*min(1,60*(D-t))"
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
        env = "+".join(f"{num(g)}*exp(-{num(d)}*t)" for g, d in hits)
        events.append((s, 1, f"(2*random(0)-1)*({env})*min(1,200*(D-t))"))
    return _looped(label, 32, events, step, RATE, total, "highpass=f=5000,highpass=f=5000")


def _pan(labels: Sequence[str], voices: Sequence[str], out: str, tail: str = "") -> str:
    """Sum mono ``labels`` (playing ``voices``) into stereo ``[out]`` with their gains and
    pans, in one pan filter; ``tail`` is appended to the chain (fades)."""
    left = "+".join(f"{num(_VOICES[v][1] * _VOICES[v][2])}*c{i}" for i, v in enumerate(voices))
    right = "+".join(f"{num(_VOICES[v][1] * _VOICES[v][3])}*c{i}" for i, v in enumerate(voices))
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
    fmt = audio_format("synth", out)
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
    render("synth", outs, maps, lines, [], fmt, fast=True, media_seconds=total / RATE)



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
    fmt = audio_format("extend", out)
    src_total = sample_count("extend", src)
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
        lines.append(f"[0:a]{NORMALISE},atrim=end_sample={head + xfade}[head]")
        lines.append(
            f"[head][{cont}]acrossfade=ns={xfade}:c1=tri:c2=tri,"
            f"apad=whole_len={total},atrim=end_sample={total}[mix]"
        )
    else:
        # Too little source left after the cut for a crossfade: a 10 ms fade-out instead.
        short = min(441, head)
        lines.append(
            f"[0:a]{NORMALISE},atrim=end_sample={head},"
            f"afade=t=out:ss={head - short}:ns={short}[head]"
        )
        lines.append(
            f"[head][{cont}]concat=n=2:v=0:a=1,apad=whole_len={total},atrim=end_sample={total}[mix]"
        )
    render("extend", [out], ["mix"], lines, input_args(src), fmt, fast=True,
           media_seconds=total / RATE)


def mix(base: Path, out: Path, *, seed: str, layer: str) -> None:
    """Synthesise a ``layer`` ("vocals": a lead line; "instrumental": bass, keyboard and
    drums) as long as ``base`` and mix it in; a limiter keeps the sum below full scale."""
    base, out = Path(base), Path(out)
    fmt = audio_format("mix", out)
    if layer not in ("vocals", "instrumental"):
        raise MediaError(f"mix {out}: layer must be 'vocals' or 'instrumental', not {layer!r}")
    total = sample_count("mix", base)
    plan = _plan(seed, "")
    layers = ("vocals",) if layer == "vocals" else _INSTRUMENTAL_LAYERS
    fade_in, fade_out = _fade_lengths(total)
    lines, layer_mix, _ = _take(plan, layers, total, "l_", fade_in=fade_in, fade_out=fade_out)
    lines.append(f"[0:a]{NORMALISE}[base]")
    # amerge + pan is an exact weighted sum (amix would rescale its inputs).
    lines.append(
        f"[base][{layer_mix}]amerge=inputs=2,pan=stereo|c0=0.8*c0+c2|c1=0.8*c1+c3,"
        "aformat=sample_fmts=fltp,alimiter=limit=0.97:level=0:latency=1,"
        f"apad=whole_len={total},atrim=end_sample={total}[mix]"
    )
    render("mix", [out], ["mix"], lines, input_args(base), fmt, fast=True,
           media_seconds=total / RATE)

