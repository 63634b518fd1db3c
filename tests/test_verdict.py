"""runner.recipe.verdict must say "valid" exactly when jsonschema does: the loader skips
jsonschema on its "valid", so a wrong yes would hide a user's mistake. Checked on every
schema the loader uses and every fragment of them, with generated values and with
mutated example recipes."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from runner.recipe import schema, source, verdict
from runner.steps.types import TYPES

ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted(p for p in (ROOT / "examples").glob("*.yaml")) \
    + sorted((ROOT / "recipes").glob("*.yaml"))


def _vocabulary(s: Any, names: set[str], values: list[Any]) -> None:
    """Every property name, enum value and constant in a schema: what generated values
    are made of, so that they are often nearly valid."""
    if isinstance(s, dict):
        for k, v in s.items():
            if k == "properties" and isinstance(v, dict):
                names.update(v)
            if k in ("enum",):
                values.extend(v)
            elif k in ("const", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
                       "multipleOf"):
                values.append(v)
            _vocabulary(v, names, values)
    elif isinstance(s, list):
        for v in s:
            _vocabulary(v, names, values)


def _whole() -> list[tuple[str, dict[str, Any]]]:
    out = [("top", schema.top_validator().schema), ("published", schema.published())]
    out += [(f"with_{t}", schema.with_validator(t).schema) for t in sorted(TYPES)]
    return out


SCHEMAS = _whole()
NAMES: set[str] = {"song", "x", "Bad Name", "1a", "_y", "kind"}
VALUES: list[Any] = ["{{ steps.song.tracks[0] }}", "{% if x %}", "./other.yaml", "15m", "90x",
                     "https://x", "ftp://x", "yes", "", "a b", 0, 1, -1, 0.5, 0.015, 1.0,
                     True, False, None, 10**20, math.inf, -math.inf, math.nan, 480, 481]
for _name, _s in SCHEMAS:
    _vocabulary(_s, NAMES, VALUES)


def _fragments() -> list[tuple[str, dict[str, Any]]]:
    """Each sub-schema of each schema, as a root of its own (with the `$defs` it may
    refer to)."""
    out: list[tuple[str, dict[str, Any]]] = []

    def walk(name: str, s: Any, defs: dict[str, Any]) -> None:
        if not isinstance(s, dict):
            return
        out.append((name, {**s, "$defs": defs}))
        for k in ("additionalProperties", "propertyNames", "items", "if", "then"):
            walk(f"{name}/{k}", s.get(k), defs)
        for k in ("anyOf", "allOf"):
            for i, sub in enumerate(s.get(k, ())):
                walk(f"{name}/{k}/{i}", sub, defs)
        for k in ("properties", "$defs"):
            for prop, sub in s.get(k, {}).items():
                walk(f"{name}/{k}/{prop}", sub, defs)

    for name, s in SCHEMAS:
        walk(name, s, s.get("$defs", {}))
    return out


FRAGMENTS = _fragments()

scalars = st.one_of(st.sampled_from(VALUES), st.integers(-3, 3), st.floats(allow_nan=True),
                    st.text(max_size=4))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.sampled_from(sorted(NAMES)), inner, max_size=5)), max_leaves=20)


_PAIRS: dict[int, tuple[Draft202012Validator, verdict.Check]] = {}


def agree(s: dict[str, Any], value: Any) -> None:
    if id(s) not in _PAIRS:
        _PAIRS[id(s)] = (Draft202012Validator(s), verdict.compile_schema(s))
    slow, quick = _PAIRS[id(s)]
    assert quick(value) is slow.is_valid(value), value


def test_every_schema_compiles() -> None:
    """No keyword the loader's schemas use falls back to jsonschema alone."""
    for _name, s in SCHEMAS + FRAGMENTS:
        verdict.compile_schema(s)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(FRAGMENTS), values)
def test_fragments_agree_with_jsonschema(fragment: tuple[str, dict[str, Any]],
                                         value: Any) -> None:
    agree(fragment[1], value)


def _mutations(data: Any, rnd: st.DataObject) -> Any:
    """`data` with a few changes: a value replaced, a key removed or added."""
    if isinstance(data, dict) and data and rnd.draw(st.booleans()):
        k = rnd.draw(st.sampled_from(sorted(data)))
        action = rnd.draw(st.sampled_from(["replace", "remove", "add", "descend"]))
        out = dict(data)
        if action == "replace":
            out[k] = rnd.draw(values)
        elif action == "remove":
            del out[k]
        elif action == "add":
            out[rnd.draw(st.sampled_from(sorted(NAMES)))] = rnd.draw(values)
        else:
            out[k] = _mutations(data[k], rnd)
        return out
    if isinstance(data, list) and data and rnd.draw(st.booleans()):
        i = rnd.draw(st.integers(0, len(data) - 1))
        out_l = list(data)
        out_l[i] = _mutations(data[i], rnd) if rnd.draw(st.booleans()) else rnd.draw(values)
        return out_l
    return rnd.draw(values) if rnd.draw(st.integers(0, 4)) == 0 else data


DOCUMENTS = [source.read(p).data for p in RECIPES]


def test_recipes_as_written_are_valid() -> None:
    for data in DOCUMENTS:
        agree(schema.top_validator().schema, data)
        assert schema.top_check()(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(range(len(DOCUMENTS))), st.data())
def test_mutated_recipes_agree_with_jsonschema(which: int, rnd: st.DataObject) -> None:
    data = DOCUMENTS[which]
    for _ in range(rnd.draw(st.integers(1, 3))):
        data = _mutations(data, rnd)
    agree(schema.top_validator().schema, data)
    agree(schema.published(), data)
    steps = data.get("steps") if isinstance(data, dict) else None
    for step in steps.values() if isinstance(steps, dict) else ():
        if isinstance(step, dict) and isinstance(step.get("uses"), str) \
                and step["uses"] in TYPES:
            agree(schema.with_validator(step["uses"]).schema, step.get("with"))


@pytest.mark.parametrize(("s", "value", "valid"), [
    ({"type": "integer"}, 1.0, True), ({"type": "integer"}, True, False),
    ({"enum": [0, 1, "both"]}, False, False), ({"enum": [0, 1, "both"]}, 1.0, True),
    ({"const": 1}, True, False), ({"minimum": 0}, math.nan, True),
    ({"uniqueItems": True}, [1, True], True), ({"uniqueItems": True}, [1, 1.0], False),
    ({"uniqueItems": True}, [[1], [True]], True), ({"multipleOf": 0.01}, 0.5, True),
    ({"multipleOf": 0.01}, 0.29, False),  # 0.29 / 0.01 is 28.999999999999996
    ({"multipleOf": 0.01}, 0.015, False), ({"pattern": "^a"}, 3, True),
    ({"additionalProperties": False, "properties": {"a": {}}}, {"a": 1, "b": 2}, False),
    ({"if": {"required": ["a"]}, "then": {"required": ["b"]}}, {"a": 1}, False),
])
def test_jsonschema_corners(s: dict[str, Any], value: Any, valid: bool) -> None:
    assert Draft202012Validator(s).is_valid(value) is valid
    assert verdict.compile_schema(s)(value) is valid


def test_unknown_keywords_are_refused() -> None:
    with pytest.raises(verdict.Unsupported):
        verdict.compile_schema({"type": "object", "patternProperties": {"^a": {}}})
    with pytest.raises(verdict.Unsupported):
        verdict.compile_schema({"$ref": "https://example.com/other.json"})
