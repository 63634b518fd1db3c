"""Text on its way to a terminal or a CI log: control characters escaped.

Titles, lyrics and step ids come from recipes, and task errors, messages and links from
services; both reach the messages sunoflow prints. A carriage return, a line feed or an
escape sequence in them would redraw the terminal, hide a line, or start a line of their
own that a CI runner obeys (GitHub Actions reads `::error::...`, `::add-mask::`,
`::stop-commands::` at the start of any log line). `safe` is applied where text leaves the
process (progress.py, cli.py, report.py), so every message, progress line and summary
line is one line whose every character prints as itself or as a visible escape.
"""

from __future__ import annotations

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(c: str) -> str:
    if c in _NAMED:
        return _NAMED[c]
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def safe(text: str) -> str:
    """`text` as one printable line: every character that is not printable (C0 and C1
    controls, ESC, DEL, line and paragraph separators, bidirectional overrides) as a
    backslash escape; a leading `::` (a CI workflow command) broken with one too."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else _escape(c) for c in text)
    if text.startswith("::"):
        text = "\\x3a" + text[1:]
    return text


def plural(n: int | float, word: str, many: str | None = None) -> str:
    """`1 step instance`, `2 step instances`, `0 credits`, `1000000 credits` (never
    `1e+06`), `2.5 credits`."""
    num = f"{int(n)}" if float(n).is_integer() else f"{n:g}"
    return f"{num} {word if n == 1 else (many or word + 's')}"


HINT = "\n    hint: "


def safe_message(text: str) -> str:
    """A message as printed: sunoflow's own structure kept, everything else made safe.

    A diagnostic's hint (`HINT`) and an export failure's list (a line break after a line
    ending in ':') are sunoflow's line breaks; every other line break, which can only have
    come from a recipe or a service, is escaped with the rest of the text. A service that
    writes HINT itself gets an indented line, which cannot start a CI workflow command."""
    head, colon, rest = text.partition(":\n")
    if colon and "\n" not in head:
        return safe(head) + ":\n" + "\n".join(safe_message(line) for line in rest.split("\n"))
    return HINT.join(safe(part) for part in text.split(HINT))
