"""The words the fake invents: titles, style tags and lyrics, derived from the request.

Deterministic (the studio's one stream, runner.studio.dice, keyed by the input; never the
RNG), so the same request gives the same song text whatever else the server has seen.
"""

from __future__ import annotations

import re

from runner.studio.dice import Dice

_STYLES = [
    "indie pop, dreamy",
    "lo-fi hip hop, mellow",
    "synthwave, retro",
    "folk, acoustic",
    "surf rock, upbeat",
    "ambient, airy",
    "funk, groovy",
    "dream pop, shimmering",
]
_SECTION = re.compile(r"^\s*\[[^\]]*\]\s*$")


def title_from(prompt: str, limit: int = 80) -> str:
    words = re.findall(r"[\w']+", prompt)[:4]
    return (" ".join(w.capitalize() for w in words) or "Untitled")[:limit]


def tags_from(prompt: str) -> str:
    return Dice("fake-tags", prompt).pick(_STYLES)


def lyrics_from(prompt: str, variant: int = 0) -> str:
    words = re.findall(r"[\w']+", prompt.lower()) or ["la"]
    line = " ".join(words[:8])
    hook = " ".join(words[-4:])
    if variant % 2:
        return f"[Verse]\n{line}\nall night long\n\n[Chorus]\n{hook}, {hook}\n"
    return f"[Verse]\n{line}\nunder the open sky\n\n[Chorus]\n{hook}\noh {hook}\n"


def sung_words(lyrics: str) -> list[str]:
    """The words a singer would sing: section markers such as [Chorus] are not sung."""
    lines = [ln for ln in lyrics.splitlines() if not _SECTION.match(ln)]
    return re.findall(r"[\w']+", " ".join(lines))
