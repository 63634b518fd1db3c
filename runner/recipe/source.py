"""Reading a recipe file into plain values with the position of every node.

We build values from PyYAML's *event* stream rather than its composer so that we, not
the parser, decide the limits: nesting depth (the composer recurses and dies on deep
input), alias expansion (a "billion laughs" document is refused before it is built),
duplicate keys (PyYAML keeps the last silently) and explicit tags (refused). Scalars
follow the YAML 1.2 core schema: ``yes``, ``no``, ``on`` and ``NO`` stay strings.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from runner.errors import Diagnostic, RecipeError

MAX_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 64
MAX_VALUES = 500_000
MAX_INT = 2**63 - 1  # integers in a recipe: what JSON readers and ffmpeg take safely
_MAX_DIGITS = {10: 19, 8: 21, 16: 16}  # digits of MAX_INT in each base

Path_ = tuple[str | int, ...]

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_INT = re.compile(r"^[-+]?[0-9]+$")
_OCT = re.compile(r"^0o[0-7]+$")
_HEX = re.compile(r"^0x[0-9a-fA-F]+$")
_FLOAT = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$")
_INF = re.compile(r"^[-+]?\.(?:inf|Inf|INF)$")
_NAN = re.compile(r"^\.(?:nan|NaN|NAN)$")
_STD_TAG = "tag:yaml.org,2002:"


@dataclass(frozen=True)
class Mark:
    line: int  # 1-based
    col: int  # 1-based


@dataclass
class Document:
    """A parsed file: its values and where each one (and each mapping key) stands."""

    file: str
    data: Any
    text: str
    # The parser's own marks (0-based `line` and `column`), kept as they come: making a
    # Mark for each of 100,000 nodes costs more than parsing them, and few are ever read.
    marks: dict[Path_, Any] = field(default_factory=dict)
    key_marks: dict[Path_, Any] = field(default_factory=dict)
    # Where each string scalar's source text lies: (start index, end index, style), so a
    # position inside a template (a line of a block scalar) maps back to the file.
    spans: dict[Path_, tuple[int, int, str]] = field(default_factory=dict)

    def pos(self, path: Path_, *, key: bool = False) -> Mark:
        """Position of the value at `path` (or of its key); the nearest ancestor if unknown."""
        p = tuple(path)
        if key and p in self.key_marks:
            return _mark(self.key_marks[p])
        while p:
            if p in self.marks:
                return _mark(self.marks[p])
            p = p[:-1]
        return _mark(self.marks[()]) if () in self.marks else Mark(1, 1)

    def diag(self, path: Path_, message: str, hint: str | None = None, *,
             key: bool = False, offset: tuple[int, int] | None = None) -> Diagnostic:
        """A diagnostic at `path`. `offset` is (line, column) inside the string value at
        `path`, 0-based line and 1-based column; column 1 means the line's first
        non-blank character."""
        m = self.pos(path, key=key)
        if offset is not None and not key:
            m = self.locate(path, *offset) or m
        return Diagnostic(self.file, m.line, m.col, message, hint)

    def locate(self, path: Path_, line: int, col: int) -> Mark | None:
        """The file position of (line, col) inside the string at `path`, or None."""
        span = self.spans.get(tuple(path))
        value = self._value(tuple(path))
        if span is None or not isinstance(value, str):
            return None
        lines = value.split("\n")
        if not 0 <= line < len(lines):
            return None
        target = sum(len(x) + 1 for x in lines[:line])
        text_line = lines[line]
        if col <= 1:
            target += len(text_line) - len(text_line.lstrip())
        else:
            target += min(col - 1, len(text_line))
        if target >= len(value):
            return None
        at = _align(self.text, *span, value, target)
        if at is None:
            return None
        row = self.text.count("\n", 0, at)
        return Mark(row + 1, at - self.text.rfind("\n", 0, at))

    def _value(self, path: Path_) -> Any:
        v = self.data
        for p in path:
            try:
                v = v[p]
            except (KeyError, IndexError, TypeError):
                return None
        return v


def at(doc: Document, path: Path_, *, key: bool = False) -> str:
    """`FILE:LINE:COL` of a node, for a message that points into a second file."""
    m = doc.pos(path, key=key)
    return f"{doc.file}:{m.line}:{m.col}"


def _align(text: str, start: int, end: int, style: str, value: str, target: int) -> int | None:
    """Index in `text` of character `target` of the scalar `value` written at
    text[start:end]. The value is the source minus indentation, quotes and escape
    backslashes, with line breaks folded to spaces: walk both, matching greedily."""
    r = start
    if style in ("|", ">"):
        r = text.find("\n", start, end) + 1  # content starts after the header line
        if r == 0:
            return None
    elif style in ("'", '"'):
        r = start + 1
    for i, c in enumerate(value[: target + 1]):
        while True:
            if r >= end:
                return None
            ch = text[r]
            if style == '"' and ch == "\\":
                nxt = text[r + 1: r + 2]
                if nxt in ("\n", "\r"):
                    r += 2  # an escaped line break yields nothing
                    continue
                step = {"x": 4, "u": 6, "U": 10}.get(nxt, 2)
                break
            if ch == c or (c == " " and ch == "\n"):
                step = 1
                break
            r += 1
        if i == target:
            return r
        r += step
    return None


def _tag_error(tag: str) -> str:
    shown = "!!" + tag[len(_STD_TAG):] if tag.startswith(_STD_TAG) else tag
    return f"YAML tag '{shown}' is not allowed in a recipe"


_NUMBER_HINT = "quote it if it is meant as text"
_TAG_HINT = "a recipe is plain data; remove the tag (quote the value if it must stay a string)"


def _scalar(value: str, tag: str | None, implicit: tuple[bool, bool], style: str | None) -> Any:
    if tag and tag != "!":
        if not tag.startswith(_STD_TAG):
            raise ValueError(_tag_error(tag))
        kind = tag[len(_STD_TAG):]
        if kind == "str":
            return value
        if kind in ("int", "float", "bool", "null"):
            v = _plain(value)
            if kind == "null" and v is None:
                return None
            if kind == "bool" and isinstance(v, bool):
                return v
            if kind == "int" and isinstance(v, int) and not isinstance(v, bool):
                return v
            if kind == "float" and isinstance(v, (int, float)) and not isinstance(v, bool):
                return float(v)
            raise ValueError(f"{value!r} is not a valid !!{kind}")
        raise ValueError(_tag_error(tag))
    if style or not implicit[0]:
        return value  # quoted or block scalar: always a string
    return _plain(value)


_NUMERIC_START = frozenset("-+.0123456789")
_NULLS = frozenset({"", "~", "null", "Null", "NULL"})


def _plain(value: str) -> Any:
    if value[:1] not in _NUMERIC_START and value[-1:] != "\n":
        # Most plain values are words: only null and the booleans need a look (the
        # patterns below all start with a sign, a dot or a digit).
        if value in _NULLS:
            return None
        return _BOOL.get(value, value)
    if _NULL.match(value):
        return None
    if value in _BOOL:
        return _BOOL[value]
    if _INT.match(value):
        return _int(value, value.lstrip("+-"), 10)
    if _OCT.match(value):
        return _int(value, value[2:], 8)
    if _HEX.match(value):
        return _int(value, value[2:], 16)
    if _FLOAT.match(value):
        f = float(value)
        if not math.isfinite(f):
            raise ValueError(f"{_brief(value)} is too large a number (at most about 1e308)")
        return f
    if _INF.match(value) or _NAN.match(value):
        raise ValueError(f"{value} is not a number a recipe can use (infinity and NaN are "
                         "refused)")
    return value


def _brief(text: str) -> str:
    return text if len(text) <= 24 else f"{text[:12]}...{text[-6:]} ({len(text)} characters)"


def _int(text: str, digits: str, base: int) -> int:
    """An integer within MAX_INT: longer numbers mean nothing in a recipe, and Python's
    own limit on converting them (4300 digits) would surface as an internal error."""
    if len(digits.lstrip("0")) > _MAX_DIGITS[base]:
        raise ValueError(f"{_brief(text)} is too large a number (at most {MAX_INT:,})")
    n = int(digits, base) * (-1 if text.startswith("-") else 1)
    if abs(n) > MAX_INT:
        raise ValueError(f"{_brief(text)} is too large a number (at most {MAX_INT:,})")
    return n


def _mark(m: Any) -> Mark:
    return Mark(m.line + 1, m.column + 1)


def read(path: str | Path, *, display: str | None = None) -> Document:
    """Read and parse `path`; raise RecipeError with positioned diagnostics on any problem."""
    name = display or str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise RecipeError([Diagnostic(name, 1, 1, "no such file")]) from None
    except IsADirectoryError:
        raise RecipeError([Diagnostic(name, 1, 1, "is a directory, not a recipe file")]) from None
    except OSError as exc:
        raise RecipeError([Diagnostic(name, 1, 1, f"cannot read: {exc.strerror}")]) from None
    return parse(raw, name)


def parse(raw: bytes, name: str) -> Document:
    if len(raw) > MAX_BYTES:
        raise RecipeError([Diagnostic(
            name, 1, 1,
            f"recipe is {len(raw) / 2**20:.1f} MiB; the limit is {MAX_BYTES // 2**20} MiB",
            "is this the right file? repeat steps with for_each over vars instead of "
            "writing each one out")])
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        col = len(before.rsplit(b"\n", 1)[-1].decode("utf-8", "replace")) + 1
        raise RecipeError([Diagnostic(
            name, line, col, f"not UTF-8: byte 0x{raw[exc.start]:02x} cannot be decoded",
            "save the recipe as UTF-8")]) from None
    if "\x00" in text:
        i = text.index("\x00")
        line = text.count("\n", 0, i) + 1
        raise RecipeError([Diagnostic(name, line, i - text.rfind("\n", 0, i),
                                      "NUL byte in recipe", "a recipe is UTF-8 text; is this a "
                                      "binary file, or one saved as UTF-16?")])
    return _build(text, name)


_BARE_TEMPLATE = re.compile(r"^(?P<head>\s*(?:-\s+)?(?:[^\s'\"{][^:]*:\s+)?)"
                            r"(?P<value>\{\{.*\}\}[^#]*?)\s*(?:#.*)?$")


_FLOW_TEMPLATE = re.compile(r"(?<=[:,\[-] )\{\{[^\"']*?\}\}")


def _unquoted_template(text: str, line: int) -> str | None:
    """The hint for `title: {{ item.title }}`: YAML reads an unquoted `{{` as the start of
    a mapping, so the line fails to parse (or parses as a mapping) for a reason a recipe
    author would never guess."""
    lines = text.splitlines()
    if not 0 < line <= len(lines):
        return None
    m = _BARE_TEMPLATE.match(lines[line - 1])
    if m is None:
        inner = _FLOW_TEMPLATE.search(lines[line - 1])  # `with: {prompt: {{ x }}}`
        return None if inner is None else (
            "quote a value that starts with a template, or YAML reads '{{' as a mapping: "
            f'"{inner.group(0)}"')
    value = m.group("value").strip().replace('"', "'")
    return (f"quote a value that starts with a template, or YAML reads '{{{{' as a mapping: "
            f'{m.group("head").strip()} "{value}"'.rstrip())


def _build(text: str, name: str) -> Document:
    doc = Document(name, None, text)
    marks, key_marks, spans = doc.marks, doc.key_marks, doc.spans
    anchors: dict[str, tuple[Any, int]] = {}
    # Stack frames: [container, path, pending_key, anchor, seen_keys, merge_sources,
    # start_mark, values_before]
    stack: list[list[Any]] = []
    total = 0
    docs = 0
    result: Any = None

    def fail(m: Any, message: str, hint: str | None = None) -> RecipeError:
        mk = _mark(m)
        hint = hint or _unquoted_template(text, mk.line)
        return RecipeError([Diagnostic(name, mk.line, mk.col, message, hint)])

    def attach(value: Any, start: Any, anchor: str | None, size: int,
               span: tuple[int, int, str] | None = None) -> None:
        nonlocal result
        if anchor:
            anchors[anchor] = (value, size)
        if not stack:
            result = value
            marks[()] = start
            return
        top = stack[-1]
        container, path = top[0], top[1]
        if type(container) is list:
            p = (*path, len(container))
            container.append(value)
            marks.setdefault(p, start)
            if span:
                spans[p] = span
            return
        if top[2] is _NO_KEY:
            if isinstance(value, (dict, list)):
                raise fail(start, "a mapping key must be a plain value, not a "
                           + ("mapping" if isinstance(value, dict) else "list"))
            top[2] = (value, start)
            return
        (key, key_start), top[2] = top[2], _NO_KEY
        if key == "<<":
            sources = value if isinstance(value, list) else [value]
            if not all(isinstance(s, dict) for s in sources):
                raise fail(key_start, "'<<' merges a mapping (or a list of mappings)")
            top[5].extend(sources)
            return
        if type(key) is not str:
            key = str(key).lower() if isinstance(key, bool) else str(key)
        seen = top[4]
        if key in seen:
            first = _mark(seen[key])
            raise fail(key_start, f"duplicate key '{key}' (first defined at line "
                       f"{first.line}, column {first.col})",
                       "YAML would silently keep only the last one; remove one of them")
        seen[key] = key_start
        container[key] = value
        p = (*path, key)
        key_marks[p] = key_start
        marks[p] = start
        if span:
            spans[p] = span

    ev: Any  # dispatched on its exact class below, which mypy does not narrow
    try:
        for ev in _events(text):
            cls = type(ev)
            if cls is yaml.ScalarEvent:
                total += 1
                tag, value = ev.tag, ev.value
                if tag and tag != "!":
                    try:
                        v = _scalar(value, tag, ev.implicit, ev.style)
                    except ValueError as exc:
                        raise fail(ev.start_mark, str(exc),
                                   _TAG_HINT if "tag" in str(exc) else _NUMBER_HINT) from None
                elif ev.style or not ev.implicit[0]:
                    v = value  # quoted or block scalar: always a string
                else:
                    try:
                        v = _plain(value)
                    except ValueError as exc:
                        raise fail(ev.start_mark, str(exc), _NUMBER_HINT) from None
                start_m, end_m = ev.start_mark, ev.end_mark
                span = (start_m.index, end_m.index, ev.style or "") \
                    if type(v) is str and start_m is not None and end_m is not None else None
                attach(v, start_m, ev.anchor, 1, span)
            elif cls is yaml.MappingStartEvent or cls is yaml.SequenceStartEvent:
                if ev.tag and ev.tag not in ("!", _STD_TAG + "map", _STD_TAG + "seq"):
                    raise fail(ev.start_mark, _tag_error(ev.tag), _TAG_HINT)
                if len(stack) >= MAX_DEPTH:
                    raise fail(ev.start_mark, f"nesting is deeper than {MAX_DEPTH} levels")
                total += 1
                if stack:
                    top = stack[-1]
                    parent_path: Path_ = top[1]
                    if type(top[0]) is list:
                        path: Path_ = (*parent_path, len(top[0]))
                    elif top[2] is _NO_KEY:
                        raise fail(ev.start_mark, "a mapping key must be a plain value")
                    else:
                        k = top[2][0]
                        path = (*parent_path, k if isinstance(k, str) else str(k))
                else:
                    path = ()
                container: Any = {} if cls is yaml.MappingStartEvent else []
                marks.setdefault(path, ev.start_mark)
                stack.append([container, path, _NO_KEY, ev.anchor, {}, [], ev.start_mark, total])
            elif cls is yaml.MappingEndEvent or cls is yaml.SequenceEndEvent:
                container, _p, _k, anchor, _seen, merges, start, first = stack.pop()
                for src in reversed(merges):
                    for k, v in src.items():
                        container.setdefault(k, v)
                attach(container, start, anchor, total - first + 1)
            elif cls is yaml.AliasEvent:
                if ev.anchor not in anchors:
                    raise fail(ev.start_mark, f"unknown alias '*{ev.anchor}'",
                               f"an alias repeats a value marked earlier with '&{ev.anchor}'")
                value, size = anchors[ev.anchor]
                total += size
                if total > MAX_VALUES:
                    raise fail(ev.start_mark, f"the document expands to more than {MAX_VALUES:,} "
                               "values through aliases", "is this a YAML alias bomb?")
                attach(value, ev.start_mark, None, size)
            elif cls is yaml.DocumentStartEvent:
                docs += 1
                if docs > 1:
                    raise fail(ev.start_mark, "a recipe is one YAML document; found a second",
                               "remove the '---' separator")
            if total > MAX_VALUES:
                raise fail(ev.start_mark, f"the document has more than {MAX_VALUES:,} values")
    except yaml.MarkedYAMLError as exc:
        m = exc.problem_mark or exc.context_mark
        line, col = (m.line + 1, m.column + 1) if m else (1, 1)
        problem = (exc.problem or exc.context or "invalid YAML").strip()
        hint = None
        lines = text.splitlines()
        if line > len(lines):
            # The end of a file with no final newline: the parser counts one line too
            # many. Point at the end of the last line instead.
            line = max(len(lines), 1)
            col = len(lines[-1]) + 1 if lines else 1
        at = lines[line - 1][col - 1: col] if 0 < line <= len(lines) else ""
        if at == "\t":
            if lines[line - 1][: col - 1].strip(" \t") == "":
                problem = "a tab cannot indent YAML"
                hint = "indent with spaces only"
            else:
                problem = "a tab is not allowed here"
                hint = "replace the tab with spaces"
        elif "mapping values are not allowed" in problem:
            hint = "check the indentation of this line and the one above; quote a value " \
                   "that contains ': '"
        elif exc.context:
            where = (f"line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1}"
                     if exc.context_mark else "")
            context = exc.context.strip()
            said = next((what for key, what in _CONTEXTS.items() if key in context), None)
            if said and where:
                hint = said.replace("{where}", where)
            elif exc.context_mark is not None and (exc.context_mark.line + 1,
                                                   exc.context_mark.column + 1) != (line, col):
                hint = f"{context} ({where})"
        hint = hint if hint and "mapping values" not in problem else \
            _unquoted_template(text, line) or hint
        if at in ("@", "`") and hint is None:
            hint = f"'{at}' cannot start a plain value; quote the value"
        raise RecipeError([Diagnostic(name, line, col, f"YAML syntax error: {problem}",
                                      hint)]) from None
    except yaml.reader.ReaderError as exc:
        # A character YAML does not allow (a control character): where it is, in one line.
        pos = exc.position if isinstance(exc.position, int) else 0
        line = text.count("\n", 0, pos) + 1
        col = pos - text.rfind("\n", 0, pos)
        char = exc.character if isinstance(exc.character, int) else \
            ord(str(exc.character)[:1] or " ")
        raise RecipeError([Diagnostic(name, line, col, f"character U+{char:04X} is not allowed "
                                      "in YAML (a control character)",
                                      "remove it; inside a double-quoted string write it as an "
                                      "escape such as \\x1b")]) from None
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())  # one line, whatever the parser wrote
        raise RecipeError([Diagnostic(name, 1, 1, f"YAML error: {detail}")]) from None
    if docs == 0 or result is None:
        raise RecipeError([Diagnostic(name, 1, 1, "recipe is empty",
                                      "start with 'version: 1', a 'name' and 'steps'")])
    doc.data = result
    return doc


def _events(text: str) -> Any:
    """PyYAML's events for ``text``, libyaml's when it is there.

    libyaml 0.2.6 (bundled from PyYAML 6.0.4) refuses flow nesting beyond 1,000 levels
    while its scanner reads ahead, before the parser hands us the level at which we refuse
    (MAX_DEPTH). The pure-Python parser has no such limit: replay the stream with it,
    skipping the events already handed out, so our own check speaks, at the position it
    names with every PyYAML release.
    """
    handed = 0
    try:
        for ev in yaml.parse(text, Loader=_Loader):
            handed += 1
            yield ev
        return
    except yaml.MarkedYAMLError as exc:
        if _Loader is yaml.SafeLoader or "nesting depth" not in str(exc.problem):
            raise
    for i, ev in enumerate(yaml.parse(text, Loader=yaml.SafeLoader)):
        if i >= handed:
            yield ev


# PyYAML's "while parsing ..." contexts, said the way an author thinks of them.
_CONTEXTS = {
    "flow mapping": "the '{' at {where} is not closed",
    "flow sequence": "the '[' at {where} is not closed",
    "quoted scalar": "the quoted string at {where} is not closed",
    "block collection": "in the list that starts at {where}: every item starts with '- ' "
                        "at the same indentation",
    "block mapping": "in the mapping that starts at {where}: check the indentation",
}


class _NoKey:
    def __repr__(self) -> str:
        return "<no key>"


_NO_KEY: Any = _NoKey()
