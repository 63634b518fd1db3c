"""How the language speaks to authors: the closest name ("did you mean"), a value shown
briefly, what kind of value the author wrote, and each JSON Schema error said for people,
at the YAML node it concerns, with a hint where one helps. The loader, the plan and the
run's template errors (runner.recipe.blame) all speak through these.
"""

from __future__ import annotations

import difflib
import json
import re
from typing import Any

from jsonschema import ValidationError

from runner.errors import Diagnostic
from runner.recipe import schema as schemas
from runner.recipe.source import Document
from runner.steps.types import TYPES


def suggest(word: str, choices: Any) -> str | None:
    """A "did you mean 'x'?" hint: the choice closest to `word`, if one is close enough."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


def _where(path: tuple[Any, ...]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "the recipe"


def show(v: Any) -> str:
    """`v` as the author would write it, cut to 60 characters."""
    text = json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


_JSON_TYPES = {"object": "a mapping", "array": "a list", "string": "a string",
               "number": "a number", "integer": "a whole number", "boolean": "true or false",
               "null": "null"}
_TEMPLATE_REF = "#/$defs/template"


def kind(v: Any) -> str:
    """What kind of value `v` is, in the words of messages: 'a string', 'a list', ..."""
    if isinstance(v, bool):
        return "true/false"
    if isinstance(v, dict):
        return "a mapping"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, (int, float)):
        return "a number"
    return "null" if v is None else type(v).__name__


def got(v: Any) -> str:
    """'a string 'x'', 'a number 3', 'a list', 'null': what the author wrote, briefly."""
    if v is None or isinstance(v, (dict, list)):
        return kind(v)
    return f"{kind(v)} {show(v)}"


def _is_type(v: Any, t: str) -> bool:
    number = isinstance(v, (int, float)) and not isinstance(v, bool)
    return {"object": isinstance(v, dict), "array": isinstance(v, list),
            "string": isinstance(v, str), "boolean": isinstance(v, bool),
            "null": v is None, "number": number,
            "integer": number and float(v).is_integer()}.get(t, False)


def _fits(v: Any, branch: dict[str, Any]) -> bool:
    """Whether `v` is of the kind a schema branch is about (so that its error is the one
    to show): a string for an enum of strings, a list for an array, and so on."""
    if "type" in branch:
        ts = branch["type"] if isinstance(branch["type"], list) else [branch["type"]]
        return any(_is_type(v, t) for t in ts)
    values = branch.get("enum", [branch["const"]] if "const" in branch else None)
    if values is not None:
        return any(kind(v) == kind(e) for e in values)
    return True


def _expected(branch: dict[str, Any]) -> str:
    if branch.get("$ref") == _TEMPLATE_REF:
        return "a {{ template }}"
    if "enum" in branch:
        return "one of " + ", ".join(map(str, branch["enum"]))
    t = branch.get("type")
    ts: list[str] = t if isinstance(t, list) else [t] if t else []
    return " or ".join(_JSON_TYPES.get(x, x) for x in ts) or "a value"


def _either(kinds: list[str]) -> str:
    kinds = list(dict.fromkeys(kinds))
    if len(kinds) == 1:
        return kinds[0]
    if len(kinds) == 2 and not any(" or " in k for k in kinds):
        return " or ".join(kinds)
    return ", ".join(kinds[:-1]) + ", or " + kinds[-1]


# What each pattern in the schema means, for people: (message, hint).
_PATTERNS: dict[str, tuple[str, str | None]] = {
    schemas.STEP_ID: ("is not a step id",
                      "ids are lower case letters, digits and _, starting with a letter"),
    schemas.DURATION: ("is not a duration", "seconds (a number), or e.g. '90s', '15m', '1h'"),
    schemas.HTTP_URL: ("is not an http(s) URL", "e.g. https://api.sunoapi.org"),
    r"^[A-Za-z_][A-Za-z0-9_]*$": (
        "is not an environment variable name",
        "api_key_env names the variable that holds the key (e.g. SUNO_API_KEY); "
        "never put the key itself in a recipe"),
    r"^[A-Za-z0-9][A-Za-z0-9._ -]*$": (
        "is not a valid name", "letters, digits, '.', '_', '-' and spaces, starting with a "
        "letter or digit"),
}

_TYPE_HINTS: dict[tuple[Any, ...], str] = {
    ("steps",): "map each step id to its step, e.g. song: {uses: generate, with: {...}}",
    ("vars",): "map each name to a value, e.g. theme: rain",
}

_REQUIRED_HINTS = {
    "version": "add 'version: 1' at the top",
    "steps": "add 'steps:' with at least one step, e.g. song: {uses: generate, with: ...}",
    "uses": "a step type (" + ", ".join(sorted(TYPES)) + "), ./path/to/recipe.yaml or "
            "sunoflow:NAME (a stock recipe)",
    "from": "the file to copy, e.g. from: \"{{ steps.song.tracks[0].file }}\"",
    "path": "where to write it under --out, e.g. path: \"01 - Sunrise.mp3\"",
}


def _yaml11_hint(inst: Any, branches: list[dict[str, Any]]) -> str | None:
    """YAML 1.1 read yes/no/on/off as booleans; recipes follow YAML 1.2, where they are
    strings. Say so when a boolean was wanted."""
    if isinstance(inst, str) and inst.lower() in ("yes", "no", "on", "off", "y", "n") \
            and any(b.get("type") == "boolean" for b in branches):
        return "write true or false: in YAML 1.2 'yes', 'no', 'on' and 'off' are strings"
    return None


def describe(err: ValidationError, base: tuple[Any, ...], doc: Document) -> list[Diagnostic]:
    """Turn one jsonschema error into positioned, human messages (one per problem)."""
    path = (*base, *err.absolute_path)
    where = _where(path)
    v, s = err.validator, err.schema if isinstance(err.schema, dict) else {}
    inst = err.instance
    if v == "anyOf":
        branches: list[dict[str, Any]] = s.get("anyOf", [])
        fitting = [i for i, b in enumerate(branches)
                   if b.get("$ref") != _TEMPLATE_REF and _fits(inst, b)]
        if len(fitting) == 1:
            # The author meant this branch (the value is of its kind): explain its errors.
            inner = [e for e in err.context or () if e.relative_schema_path[0] == fitting[0]]
            if inner:
                return [d for e in inner for d in describe(e, base, doc)]
        kinds = [_expected(b) for b in branches]
        return [doc.diag(path, f"{where} must be {_either(kinds)}; got {got(inst)}",
                         _yaml11_hint(inst, branches), key=inst is None)]
    if v == "additionalProperties" and isinstance(inst, dict):
        allowed = list(s.get("properties", {}))
        out = []
        for k in (k for k in inst if k not in allowed):
            hint = suggest(k, allowed) or (f"allowed here: {', '.join(allowed)}"
                                           if allowed else None)
            out.append(doc.diag((*path, k), f"unknown key '{k}' in {where}", hint, key=True))
        return out
    if v == "required":
        m = re.match(r"'(.+?)' is a required property", err.message)
        k = m.group(1) if m else str(err.validator_value)
        return [doc.diag(path, f"{where}: missing required key '{k}'", _REQUIRED_HINTS.get(k),
                         key=True)]
    if v == "type":
        want = s.get("type")
        wants: list[str] = want if isinstance(want, list) else [str(want)]
        return [doc.diag(path, f"{where} must be "
                         + " or ".join(_JSON_TYPES.get(w, w) for w in wants)
                         + f"; got {got(inst)}",
                         _TYPE_HINTS.get(path) or _yaml11_hint(inst, [s]), key=inst is None)]
    if v == "enum":
        enum = s["enum"]
        hint = suggest(inst, [e for e in enum if isinstance(e, str)]) \
            if isinstance(inst, str) else None
        return [doc.diag(path, f"{where}: unknown value {show(inst)}; expected one of "
                         # As YAML spells them: `true`, not Python's `True`.
                         f"{', '.join(e if isinstance(e, str) else json.dumps(e) for e in enum)}",
                         hint)]
    if v == "const":
        return [doc.diag(path, f"{where} must be {show(s['const'])}; got {show(inst)}",
                         "this sunoflow reads recipe language version 1"
                         if path == ("version",) else None)]
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        word = {"minimum": "at least", "maximum": "at most", "exclusiveMinimum": "more than",
                "exclusiveMaximum": "less than"}[v]
        return [doc.diag(path, f"{where} must be {word} {s[v]}; got {show(inst)}")]
    if v == "multipleOf":
        return [doc.diag(path, f"{where} must be a multiple of {s[v]}; got {show(inst)}")]
    if v == "minProperties":
        return [doc.diag(path, f"{where} is empty", "add at least one step"
                         if path == ("steps",) else None)]
    if v == "uniqueItems" and isinstance(inst, list):
        dup = next((x for i, x in enumerate(inst) if x in inst[:i]), None)
        return [doc.diag(path, f"{where} lists {show(dup)} twice")]
    if v == "pattern":
        what, hint = _PATTERNS.get(s[v], (f"does not match {s[v]}", s.get("description")))
        if "needs" in path and isinstance(doc.data.get("steps"), dict):
            hint = suggest(inst, doc.data["steps"]) or hint  # most likely a misspelt step
        return [doc.diag(path, f"{where}: {show(inst)} {what}", hint)]
    return [doc.diag(path, f"{where}: {err.message}")]


_NAMES = {"steps": ("step id", "ids are lower case letters, digits and _, starting with a letter"),
          "vars": ("var name", "letters, digits and _, not starting with a digit, so that "
                               "'vars.NAME' works in a template"),
          "inputs": ("input name", "lower case letters, digits and _, starting with a letter"),
          "outputs": ("output name", "lower case letters, digits and _, starting with a letter")}


def schema_errors(doc: Document) -> list[Diagnostic]:
    if schemas.top_check()(doc.data):
        return []  # valid: nothing for jsonschema to explain (runner.recipe.verdict)
    out: list[Diagnostic] = []
    for err in schemas.top_validator().iter_errors(doc.data):
        parent = tuple(err.absolute_path)
        if err.relative_schema_path and "propertyNames" in err.relative_schema_path \
                and isinstance(err.instance, str) and parent:
            what, hint = _NAMES.get(str(parent[0]), ("name", None))
            out.append(doc.diag((*parent, err.instance), f"invalid {what} '{err.instance}'",
                                hint, key=True))
            continue
        if err.validator == "anyOf" and parent[-1:] == ("uses",) and len(parent) == 3 \
                and isinstance(err.instance, str):
            out.append(doc.diag(parent, f"{_where(parent)}: unknown step type "
                                f"{show(err.instance)}", suggest(err.instance, TYPES)
                                or "a step type (" + ", ".join(sorted(TYPES))
                                + "), a path like ./recipes/x.yaml, or sunoflow:NAME"))
            continue
        out.extend(describe(err, (), doc))
    return out
