"""A yes/no JSON Schema check, compiled from a schema into plain Python closures.

jsonschema explains every error well but pays for it on every node (a validator object
per descent, a resolver, a generator of errors): on a recipe of 10,000 steps it was the
largest part of loading. Most recipes are valid, and a valid one needs no explanation,
so the loader asks this check first and runs jsonschema only on a "no" (runner.recipe.load);
the messages then come from jsonschema exactly as before.

The verdict must be jsonschema's (Draft 2020-12, default type checker) for the keywords
our schema uses; :func:`compile_schema` refuses any other keyword (:class:`Unsupported`)
rather than guess, and the caller then uses jsonschema alone. tests/test_verdict.py
checks the two agree on generated and mutated documents.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from numbers import Number
from typing import Any

Check = Callable[[Any], bool]

# Keywords that say nothing about validity.
_ANNOTATIONS = frozenset({"$schema", "$id", "$defs", "$comment", "title", "description",
                          "default", "examples", "deprecated", "readOnly", "writeOnly"})
_KNOWN = frozenset({"type", "enum", "const", "pattern", "properties", "additionalProperties",
                    "required", "propertyNames", "minProperties", "items", "uniqueItems",
                    "anyOf", "allOf", "if", "then", "$ref", "minimum", "maximum",
                    "exclusiveMinimum", "exclusiveMaximum", "multipleOf"})


class Unsupported(Exception):
    """The schema uses a keyword (or a form of one) this module does not decide."""


def _is_number(v: Any) -> bool:
    return isinstance(v, Number) and not isinstance(v, bool)


_TYPES: dict[str, Check] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "number": _is_number,
    # Draft 6 and later: 1.0 is an integer.
    "integer": lambda v: not isinstance(v, bool) and (
        isinstance(v, int) or (isinstance(v, float) and v.is_integer())),
}


class _Bool:
    """Stands for True or False where jsonschema keeps them apart from 1 and 0."""


_TRUE, _FALSE = _Bool(), _Bool()


def _unbool(v: Any) -> Any:
    return _TRUE if v is True else _FALSE if v is False else v


def equal(one: Any, two: Any) -> bool:
    """jsonschema's equality: True is not 1, 1 is 1.0, containers compared item by item."""
    if one is two:
        return True
    if isinstance(one, str) or isinstance(two, str):
        return bool(one == two)
    if isinstance(one, Sequence) and isinstance(two, Sequence):
        return len(one) == len(two) and all(equal(i, j) for i, j in zip(one, two, strict=True))
    if isinstance(one, Mapping) and isinstance(two, Mapping):
        return len(one) == len(two) and all(k in two and equal(v, two[k])
                                            for k, v in one.items())
    return bool(_unbool(one) == _unbool(two))


def _unique(items: list[Any]) -> bool:
    """jsonschema's `uniq`, step for step (sorted neighbours, else every pair)."""
    try:
        ordered = sorted(_unbool(i) for i in items)
        return not any(equal(i, j) for i, j in zip(ordered[:-1], ordered[1:], strict=True))
    except (NotImplementedError, TypeError):
        seen: list[Any] = []
        for e in items:
            e = _unbool(e)
            if any(equal(i, e) for i in seen):
                return False
            seen.append(e)
        return True


def _multiple(v: Any, d: Any) -> bool:
    if isinstance(d, float):
        q = v / d
        try:
            return bool(int(q) == q)
        except OverflowError:
            return (Fraction(v) / Fraction(d)).denominator == 1
    return not (v % d)


def compile_schema(schema: Any) -> Check:
    """A function telling whether a value is valid under `schema` (a root schema: `$ref`s
    are `#/...` pointers into it). Raises Unsupported for a keyword it does not know."""
    return _Compiler(schema).compile(schema)


class _Compiler:
    def __init__(self, root: Any) -> None:
        self.root = root
        self.refs: dict[str, Check] = {}

    def ref(self, pointer: str) -> Check:
        if pointer in self.refs:
            return self.refs[pointer]
        if not pointer.startswith("#/"):
            raise Unsupported(f"$ref {pointer!r}")
        target = self.root
        for part in pointer[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(target, dict) or part not in target:
                raise Unsupported(f"$ref {pointer!r}")
            target = target[part]
        holder: list[Check] = []
        self.refs[pointer] = lambda v: holder[0](v)  # a recursive schema refers to itself
        holder.append(self.compile(target))
        self.refs[pointer] = holder[0]
        return holder[0]

    def compile(self, s: Any) -> Check:  # noqa: C901 - one branch per keyword
        if s is True or s == {}:
            return lambda v: True
        if s is False:
            return lambda v: False
        if not isinstance(s, dict):
            raise Unsupported(f"schema {s!r}")
        unknown = set(s) - _KNOWN - _ANNOTATIONS
        if unknown:
            raise Unsupported(", ".join(sorted(unknown)))
        checks: list[Check] = []
        if "type" in s:
            ts = s["type"] if isinstance(s["type"], list) else [s["type"]]
            if any(t not in _TYPES for t in ts):
                raise Unsupported(f"type {ts!r}")
            fns = [_TYPES[t] for t in ts]
            checks.append(fns[0] if len(fns) == 1 else lambda v: any(f(v) for f in fns))
        if "enum" in s:
            checks.append(_enum(list(s["enum"])))
        if "const" in s:
            c = s["const"]
            checks.append(lambda v: equal(v, c))
        # Written as jsonschema fails them (`v < m` fails a minimum), so NaN passes alike.
        for key, fn in (("minimum", lambda v, m: not v < m),
                        ("maximum", lambda v, m: not v > m),
                        ("exclusiveMinimum", lambda v, m: not v <= m),
                        ("exclusiveMaximum", lambda v, m: not v >= m),
                        ("multipleOf", _multiple)):
            if key in s:
                checks.append(_numeric(fn, s[key]))
        if "pattern" in s:
            rx = re.compile(s["pattern"])
            checks.append(lambda v: not isinstance(v, str) or rx.search(v) is not None)
        if any(k in s for k in ("properties", "additionalProperties", "required",
                                "propertyNames", "minProperties")):
            checks.append(self._object(s))
        if "items" in s or "uniqueItems" in s:
            checks.append(self._array(s))
        if "anyOf" in s:
            branches = [self.compile(b) for b in s["anyOf"]]
            checks.append(lambda v: any(b(v) for b in branches))
        if "allOf" in s:
            parts = [self.compile(b) for b in s["allOf"]]
            checks.append(lambda v: all(p(v) for p in parts))
        if "if" in s:
            cond = self.compile(s["if"])
            then = self.compile(s.get("then", True))
            checks.append(lambda v: not cond(v) or then(v))
        if "$ref" in s:
            checks.append(self.ref(s["$ref"]))
        if not checks:
            return lambda v: True
        if len(checks) == 1:
            return checks[0]
        return lambda v: all(c(v) for c in checks)

    def _object(self, s: dict[str, Any]) -> Check:
        props = {k: self.compile(v) for k, v in s.get("properties", {}).items()}
        extra_s = s.get("additionalProperties", True)
        extra: Check | None = None if extra_s is True else self.compile(extra_s)
        required = list(s.get("required", ()))
        names = self.compile(s["propertyNames"]) if "propertyNames" in s else None
        least = s.get("minProperties")

        def check(v: Any) -> bool:
            if not isinstance(v, dict):
                return True
            if least is not None and len(v) < least:
                return False
            for k in required:
                if k not in v:
                    return False
            for k, x in v.items():
                if names is not None and not names(k):
                    return False
                p = props.get(k)
                if p is not None:
                    if not p(x):
                        return False
                elif extra is not None and not extra(x):
                    return False
            return True

        return check

    def _array(self, s: dict[str, Any]) -> Check:
        each = self.compile(s["items"]) if "items" in s else None
        unique = bool(s.get("uniqueItems"))

        def check(v: Any) -> bool:
            if not isinstance(v, list):
                return True
            if each is not None and not all(each(x) for x in v):
                return False
            return not unique or _unique(v)

        return check


def _numeric(fn: Callable[[Any, Any], bool], bound: Any) -> Check:
    return lambda v: not _is_number(v) or bool(fn(v, bound))


def _enum(values: list[Any]) -> Check:
    strings = frozenset(x for x in values if isinstance(x, str))
    others = [x for x in values if not isinstance(x, str)]
    if not others:
        return lambda v: isinstance(v, str) and v in strings
    return lambda v: (v in strings) if isinstance(v, str) else any(equal(x, v) for x in others)
