"""Deterministic text for the offline studio: lyrics, titles, style prompts, word timings;
and the one LRC writer (:func:`lrc`), which the providers of services use too.

The local provider answers the text-producing step types (``lyrics``, ``boost_style``,
``timestamped_lyrics``) with these functions. Everything is a pure function of its
arguments: the choices come from :mod:`runner.studio.dice` keyed by the input, never from
``random`` or the clock, so the same recipe gives the same words on every machine.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

from runner.studio.dice import Dice

MAX_STYLE_CHARS = 999  # the services take fewer than 1000
MAX_TITLE_CHARS = 60

# A lyric line that is only a section tag, e.g. "[Chorus]" or "[Verse 2]".
_TAG_RE = re.compile(r"^\s*\[[^\]]*\]\s*$")
# Words as sung: letters and digits, with inner apostrophes or hyphens ("don't", "x-ray").
_WORD_RE = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")

_STOPWORDS = frozenset(
    """
a about above after again against all am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further
had has have having he her here hers herself him himself his how i if in into is it its
itself just me more most my myself no nor not now of off on once only or other our ours
ourselves out over own same she should so some song songs such than that the their theirs
them themselves then there these they this those through to too under until up very was we
were what when where which while who whom why will with would you your yours yourself
yourselves lyrics lyric write track tune music make made let lets us
""".split()
)

_FALLBACK_WORDS = ("night", "light", "road", "heart", "sky", "river", "home", "fire")

_VERSE_LINES = (
    "I still remember {a} in the morning haze",
    "Walking down the {a} road where the {b} stays",
    "Every little {a} was a door I never tried",
    "We were chasing {a} with the {b} on our side",
    "Counting every {a} like a coin in the rain",
    "Your voice was {a}, it called my name",
    "There's a {a} in the window and a {b} in the hall",
    "I wrote your {a} on the back of the wall",
    "The city hums of {a} and the {b} is slow",
    "Carry me to {a} where the {b} winds blow",
    "Underneath the {a} we were young and wide awake",
    "Holding on to {a} for the {b}'s sake",
)
_CHORUS_LINES = (
    "Oh, {a}, don't let go",
    "We're burning like {a} in the undertow",
    "Sing it out for {a}, sing it loud",
    "{A}, {A}, lift me off the ground",
    "All I need is {a} tonight",
    "Hold on to {a}, hold on tight",
    "Take me back to {a} again",
    "{A} is the song that never ends",
)
_BRIDGE_LINES = (
    "And if the {a} fades, I'll still be here",
    "Every {a} whispers that the {b} is near",
)

_TITLE_PATTERNS = (
    "{A}",
    "{A} {B}",
    "The {A}",
    "{A} in the {B}",
    "Songs of {A}",
    "{A} and {B}",
    "Chasing {A}",
    "{A} Tonight",
)

_GENRES: dict[str, tuple[tuple[int, int], str, str]] = {
    # keyword: ((bpm low, bpm high), instrumentation, mood)
    "folk": (
        (84, 104),
        "fingerpicked acoustic guitar, upright bass, soft brushed drums",
        "warm, intimate, nostalgic",
    ),
    "rock": (
        (112, 140),
        "driving electric guitars, punchy live drums, overdriven bass",
        "energetic, anthemic",
    ),
    "surf": (
        (140, 168),
        "reverb-drenched twangy guitar, fast snare, walking bass",
        "sunny, carefree",
    ),
    "pop": (
        (100, 124),
        "glossy synths, tight programmed drums, sub bass, layered vocals",
        "catchy, bright",
    ),
    "jazz": (
        (88, 132),
        "brushed kit, upright bass, Rhodes piano, muted trumpet",
        "smoky, late-night",
    ),
    "lofi": ((70, 90), "dusty vinyl crackle, mellow keys, swung boom-bap drums", "relaxed, hazy"),
    "hip": (
        (84, 98),
        "hard-hitting 808s, crisp hi-hats, sampled soul chops",
        "confident, streetwise",
    ),
    "edm": (
        (124, 130),
        "supersaw leads, sidechained pads, four-on-the-floor kick",
        "euphoric, festival",
    ),
    "house": (
        (120, 126),
        "four-on-the-floor kick, offbeat hi-hats, piano stabs",
        "groovy, uplifting",
    ),
    "techno": (
        (128, 140),
        "pounding kick, hypnotic synth sequences, industrial textures",
        "dark, relentless",
    ),
    "ambient": (
        (60, 80),
        "evolving pads, granular textures, distant piano",
        "spacious, meditative",
    ),
    "metal": ((140, 180), "down-tuned distorted guitars, double-kick drums", "aggressive, intense"),
    "punk": ((160, 190), "buzzsaw guitars, fast snare, shouted gang vocals", "raw, rebellious"),
    "country": (
        (90, 116),
        "steel guitar, banjo, fiddle, shuffling drums",
        "heartfelt, storytelling",
    ),
    "soul": ((70, 100), "Hammond organ, horn section, tight rhythm section", "soulful, tender"),
    "ballad": (
        (64, 80),
        "grand piano, swelling strings, gentle percussion",
        "emotional, cinematic",
    ),
    "reggae": ((70, 90), "offbeat guitar skank, deep dub bass, one-drop drums", "laid-back, sunny"),
    "classical": ((60, 110), "string quartet, piano, woodwinds", "elegant, dramatic"),
}
_DEFAULT_GENRE = (
    (92, 118),
    "acoustic and electric guitars, bass, live drums, warm keys",
    "hopeful, melodic",
)
_VOCALS = (
    "soaring female vocals",
    "warm male vocals",
    "breathy female vocals",
    "raspy male vocals",
    "layered harmonies",
    "intimate close-mic vocals",
)
_PRODUCTION = (
    "polished modern mix",
    "analog tape warmth",
    "wide stereo image",
    "lush reverb tails",
    "dry, punchy production",
    "vintage room sound",
)
_KEYS = (
    "C major",
    "G major",
    "D major",
    "A minor",
    "E minor",
    "F major",
    "B-flat major",
    "D minor",
)


class Word(TypedDict):
    """One sung word and when it is sung, in seconds from the start of the audio."""

    word: str
    start: float
    end: float


def _keywords(prompt: str) -> list[str]:
    """Content phrases of ``prompt`` in order of first appearance, lower case: runs of
    content words, cut into pairs ("first light over the harbour" gives "first light"
    and "harbour"), so that an adjective keeps its noun."""
    seen: dict[str, None] = {}
    run: list[str] = []

    def flush() -> None:
        for i in range(0, len(run), 2):
            seen.setdefault(" ".join(run[i : i + 2]), None)
        run.clear()

    for word in _WORD_RE.findall(prompt.lower()):
        if len(word) > 2 and word not in _STOPWORDS and not word.isdigit():
            run.append(word)
        else:
            flush()
    flush()
    return list(seen)


def _fill(template: str, a: str, b: str) -> str:
    return template.format(a=a, b=b, A=a.capitalize(), B=b.capitalize())


def title_from(prompt: str) -> str:
    """A short title from the prompt's content words (at most 60 characters)."""
    words = _keywords(prompt) or list(_FALLBACK_WORDS)
    pick = Dice("title", prompt)
    a = words[0]
    b = words[1] if len(words) > 1 else pick.pick(_FALLBACK_WORDS)
    if b == a:
        b = pick.pick([w for w in _FALLBACK_WORDS if w != a])
    pattern = pick.pick(_TITLE_PATTERNS)
    words_ = pattern.format(A=a, B=b).split()
    title = " ".join(
        w if k and w in ("in", "the", "and", "of") else w[:1].upper() + w[1:]
        for k, w in enumerate(words_)
    )
    return title[:MAX_TITLE_CHARS].rstrip()


def lyrics(prompt: str, *, variants: int = 2) -> list[dict[str, str]]:
    """``variants`` sets of lyrics for ``prompt``: [{"title", "text"}].

    Each text has the sections [Verse 1], [Chorus], [Verse 2], [Chorus] (the same chorus
    twice), four lines each, and its lines use the prompt's content words.
    """
    if variants < 1:
        raise ValueError(f"variants must be at least 1, not {variants}")
    words = _keywords(prompt) or list(_FALLBACK_WORDS)
    out = []
    for variant in range(variants):
        pick = Dice("lyrics", prompt, str(variant))

        def word(pick: Dice = pick) -> str:
            return pick.pick(words)

        def section(
            pool: Sequence[str], n: int, first: str | None = None, pick: Dice = pick
        ) -> list[str]:
            chosen: list[str] = []
            # Distinct templates within a section; pools are larger than n.
            available = list(pool)
            for k in range(n):
                template = available.pop(pick.index(len(available)))
                a = first if k == 0 and first is not None else word()
                chosen.append(_fill(template, a, word()))
            return chosen

        # The hook sings the prompt's main word; variants rotate which word that is.
        chorus = section(_CHORUS_LINES, 4, first=words[variant % len(words)])
        verse1 = section(_VERSE_LINES, 4)
        verse2 = section(_VERSE_LINES, 4)
        parts = [
            "[Verse 1]",
            *verse1,
            "",
            "[Chorus]",
            *chorus,
            "",
            "[Verse 2]",
            *verse2,
            "",
            "[Chorus]",
            *chorus,
        ]
        if variant % 2 == 1:
            parts += ["", "[Bridge]", *section(_BRIDGE_LINES, 2), "", "[Chorus]", *chorus]
        title = title_from(prompt) if variant == 0 else title_from(f"{prompt} {variant}")
        out.append({"title": title, "text": "\n".join(parts)})
    return out


def boost_style(content: str) -> str:
    """Expand a short style (``"indie folk"``) into a fuller description: genre, tempo,
    key, instrumentation, vocals, mood and production, under 1000 characters."""
    base = " ".join(content.split())
    low = base.lower()
    pick = Dice("style", base)
    tokens = set(_WORD_RE.findall(low))
    genre = next((g for g in _GENRES if g in tokens or (g == "hip" and "hip-hop" in low)), None)
    (lo, hi), instruments, mood = _GENRES[genre] if genre else _DEFAULT_GENRE
    bpm = lo + pick.index(hi - lo + 1)
    described = base or "modern song"
    parts = [
        described,
        f"{bpm} BPM",
        pick.pick(_KEYS),
        instruments,
        pick.pick(_VOCALS),
        f"{mood} mood",
        pick.pick(_PRODUCTION),
    ]
    text = ", ".join(parts)
    if len(text) > MAX_STYLE_CHARS:
        # Only a very long input gets here: keep the expansion, shorten what was given.
        tail = ", ".join(parts[1:])
        keep = MAX_STYLE_CHARS - len(tail) - 5
        text = f"{described[: max(keep, 0)].rstrip()}..., {tail}"[:MAX_STYLE_CHARS]
    return text


def _lyric_lines(text: str) -> list[list[str]]:
    """The words of each sung line of ``text`` (tags and blank lines dropped)."""
    lines = []
    for line in text.splitlines():
        if _TAG_RE.match(line):
            continue
        words = _WORD_RE.findall(line)
        if words:
            lines.append(words)
    return lines


def align_words(text: str, duration: float, *, start: float = 0.0) -> list[Word]:
    """Spread the sung words of ``text`` over [start, duration] seconds.

    Section tags such as ``[Chorus]`` are not words. Each word gets time in proportion to
    its length plus a fixed share, and each line ends with a breath (a short gap), so the
    timings are monotonic, never overlap and stay within [start, duration].
    Returns [{"word", "start", "end"}] with times rounded to milliseconds.
    """
    if not start >= 0 or not duration > start:
        raise ValueError(f"need 0 <= start < duration, got start={start}, duration={duration}")
    lines = _lyric_lines(text)
    if not lines:
        return []
    weight = 0.0
    plan: list[tuple[str, float, bool]] = []  # (word, weight, last of its line)
    for words in lines:
        for i, word in enumerate(words):
            w = 1.0 + len(word) / 4
            plan.append((word, w, i == len(words) - 1))
            weight += w
    breath = 0.6  # in weight units, after each line
    weight += breath * len(lines)
    unit = (duration - start) / weight
    out: list[Word] = []
    t = start
    for word, w, last in plan:
        # Rounding is monotonic, and the clamps keep rounded times inside the span.
        begin = min(max(round(t, 3), start), duration)
        # Words are sung for 90% of their slot, so an end never passes the next start.
        end = min(max(round(t + 0.9 * w * unit, 3), begin), duration)
        t += w * unit
        out.append({"word": word, "start": begin, "end": end})
        if last:
            t += breath * unit
    return out


def _norm(word: str) -> str:
    return "".join(ch for ch in word.lower() if ch.isalnum())


def _stamp(seconds: float) -> str:
    centis = max(0, round(seconds * 100))
    minutes, centis = divmod(centis, 6000)
    return f"[{minutes:02d}:{centis // 100:02d}.{centis % 100:02d}]"


# Without the lyrics' own lines, at most this many of the service's words make a line.
_WORDS_PER_LINE = 8


def lrc(words: Sequence[Mapping[str, Any]], text: str = "") -> str:
    """LRC lyrics: one ``[mm:ss.xx]line`` per sung line, timed by the start of its first
    word; the one LRC writer (the local provider and the services' aligned words).

    The lines are those of ``text``, the lyrics as written (section tags such as
    ``[Chorus]`` and blank lines dropped); ``words`` (as :func:`align_words` returns, or a
    service's aligned words) are matched to it in order, ignoring case and punctuation,
    and a line whose words cannot be found takes the time of the line before it. Without
    a ``text`` that has a sung line, the lines come from the words themselves: a line
    break inside a word ends a line, at most eight words make one, and a line that is
    only a section tag is dropped. A time is rounded to whole hundredths before it is
    split into minutes and seconds, so 59.996 s is ``[01:00.00]``, never ``[00:60.00]``.
    """
    rows = _rows_from_text(words, text) if _lyric_lines(text) else _rows_from_words(words)
    return "".join(f"{_stamp(when)}{line}\n" for when, line in rows)


def _rows_from_text(words: Sequence[Mapping[str, Any]], text: str) -> list[tuple[float, str]]:
    stream = [(_norm(str(w["word"])), float(w["start"])) for w in words if _norm(str(w["word"]))]
    pos = 0
    last = 0.0
    out = []
    for line in text.splitlines():
        if _TAG_RE.match(line) or not _WORD_RE.findall(line):
            continue
        tokens = [_norm(w) for w in _WORD_RE.findall(line)]
        when = None
        # Look a little ahead for the line's first word: services split words their way.
        for k in range(pos, min(pos + 8, len(stream))):
            if stream[k][0] == tokens[0] or stream[k][0].startswith(tokens[0][:3]):
                when = stream[k][1]
                pos = k + len(tokens)
                break
        if when is None and pos < len(stream):
            when = stream[pos][1]
            pos += len(tokens)
        if when is not None:
            last = max(last, when)
        out.append((last, line.strip()))
    return out


def _rows_from_words(words: Sequence[Mapping[str, Any]]) -> list[tuple[float, str]]:
    rows: list[tuple[float, list[str]]] = []
    new_line = True
    for w in words:
        # "[Verse]\nWaking ": the text before a break ends a line, the rest starts one.
        for k, piece in enumerate(str(w["word"]).split("\n")):
            new_line = new_line or k > 0
            clean = " ".join(piece.split())
            if not clean:
                continue
            if new_line or len(rows[-1][1]) >= _WORDS_PER_LINE:
                rows.append((float(w["start"]), []))
                new_line = False
            rows[-1][1].append(clean)
    lines = [(when, " ".join(ws)) for when, ws in rows]
    return [(when, line) for when, line in lines if not _TAG_RE.match(line)]
