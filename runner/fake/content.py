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


def aligned_words(lyrics: str, style: str = "plain") -> list[str]:
    """The `word` of each aligned word the timestamped-lyrics answer gives, in one of the
    readings of the service (REFERENCE 2.10 lists `alignedWords[].word` and says no more):

    - ``plain``: the sung words alone, no line break, no section tag;
    - ``leading``: as Suno's own pages show them, a word with its trailing space, and the
      first word of a line carrying the break before it and the section tags above it
      (``"[Chorus]\nWe "``, ``"\nunder "``);
    - ``trailing``: the last word of a line ends with the break (``"sky\n"``), and a
      section tag is a word of its own (``"[Chorus]\n"``).
    """
    if style == "plain":
        return sung_words(lyrics)
    out: list[str] = []
    above = ""  # leading: the break and the tags waiting for the next sung line
    for line in lyrics.splitlines():
        if _SECTION.match(line):
            if style == "trailing":
                out.append(f"{line.strip()}\n")
            else:
                above += f"{line.strip()}\n"
            continue
        words = [f"{w} " for w in line.split()]
        if not words:
            continue
        if style == "trailing":
            words[-1] = f"{words[-1].rstrip()}\n"
        else:
            words[0] = ("\n" if out else "") + above + words[0]
            above = ""
        out += words
    return out
