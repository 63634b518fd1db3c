"""Load a recipe: read it with positions, validate it against the schema, apply defaults and
overrides, and freeze it. Everything after this works on the frozen dataclasses here.

Every schema error is reported (not just the first), each at the YAML node it concerns:
an unknown key points at the key, a missing one at the mapping that lacks it.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsonschema import ValidationError

from runner import schema as schemas
from runner import source
from runner.errors import Diagnostic, RecipeError, UsageError
from runner.source import Document
from runner.steps import DEFAULTABLE, TYPES, StepType

PROVIDER_DEFAULTS: dict[str, dict[str, Any]] = {
    "local": {"base_url": None, "rate_limit": None},
    "sunoapi": {"base_url": "https://api.sunoapi.org",
                "upload_base_url": "https://sunoapiorg.redpandaai.co",
                "rate_limit": {"requests": 20, "per_seconds": 10}},
    "newapi": {"base_url": None, "rate_limit": {"requests": 20, "per_seconds": 10}},
}


@dataclass(frozen=True)
class Provider:
    kind: str = "local"
    base_url: str | None = None
    upload_base_url: str | None = None
    api_key_env: str = "SUNO_API_KEY"
    callback_url: str | None = None
    rate_limit: tuple[int, float] | None = None
    poll_interval: float = 10.0
    max_poll_interval: float = 60.0
    request_timeout: float = 30.0
    prices: dict[str, float] = field(default_factory=dict)
    take_seconds: float = 30.0
    concat: str = "remote"


@dataclass(frozen=True)
class Step:
    id: str
    uses: str
    type: StepType | None  # None for a reusable recipe (`uses: ./x.yaml`)
    with_: dict[str, Any]
    needs: tuple[str, ...] = ()
    for_each: Any = None
    if_: Any = True
    retry: int = 0
    timeout: float | None = None
    take: Any = "both"
    name: str | None = None


@dataclass(frozen=True)
class OutputFile:
    index: int
    path: str
    from_: str
    for_each: Any = None
    if_: Any = True
    tags: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Recipe:
    path: Path
    file: str
    name: str
    provider: Provider
    defaults: dict[str, Any]
    vars: dict[str, Any]
    steps: dict[str, Step]
    outputs: tuple[OutputFile, ...]
    doc: Document
    inputs: dict[str, Any] = field(default_factory=dict)
    exposed: dict[str, str] = field(default_factory=dict)


def suggest(word: str, choices: Any) -> str | None:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


def _where(path: tuple[Any, ...]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "the recipe"


def _show(v: Any) -> str:
    text = json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


_JSON_TYPES = {"object": "a mapping", "array": "a list", "string": "a string",
               "number": "a number", "integer": "a whole number", "boolean": "true or false",
               "null": "null"}


def _kind(v: Any) -> str:
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


def _describe(err: ValidationError, base: tuple[Any, ...], doc: Document) -> Diagnostic:
    """Turn one jsonschema error into a positioned, human message."""
    path = (*base, *err.absolute_path)
    where = _where(path)
    v, s = err.validator, err.schema if isinstance(err.schema, dict) else {}
    inst = err.instance
    if v == "anyOf" and isinstance(s, dict):
        # A field that also takes a template: report against the non-template branch.
        branches = [b for b in s.get("anyOf", []) if b.get("$ref") != "#/$defs/template"]
        if len(branches) == 1 and err.context:
            inner = [e for e in err.context if e.relative_schema_path[0] == s["anyOf"].index(
                branches[0])]
            if inner:
                best = min(inner, key=lambda e: len(e.path))
                d = _describe(best, base, doc)
                if "template" not in d.message:
                    return Diagnostic(d.file, d.line, d.col,
                                      d.message + " (or a {{ template }})", d.hint)
                return d
        if "enum" in str(branches) and isinstance(inst, str):
            enums = [x for b in branches for x in b.get("enum", [])]
            if enums:
                return doc.diag(path, f"{where}: unknown value {_show(inst)}; expected one of "
                                f"{', '.join(map(str, enums))}", suggest(inst, enums))
        kinds = " or ".join(_JSON_TYPES.get(b.get("type", ""), "") or
                            ("one of " + ", ".join(map(str, b["enum"])) if "enum" in b else
                             "a value") for b in s.get("anyOf", []))
        return doc.diag(path, f"{where} must be {kinds}; got {_kind(inst)}")
    if v == "additionalProperties" and isinstance(inst, dict):
        allowed = list(s.get("properties", {}))
        extra = [k for k in inst if k not in allowed]
        k = extra[0] if extra else "?"
        hint = suggest(k, allowed) or (f"allowed here: {', '.join(allowed)}" if allowed else None)
        return doc.diag((*path, k), f"unknown key '{k}' in {where}", hint, key=True)
    if v == "required":
        m = re.match(r"'(.+?)' is a required property", err.message)
        k = m.group(1) if m else str(err.validator_value)
        return doc.diag(path, f"{where}: missing required key '{k}'")
    if v == "type":
        want = s.get("type")
        wants = want if isinstance(want, list) else [want]
        return doc.diag(path, f"{where} must be "
                        + " or ".join(_JSON_TYPES.get(w, w) for w in wants)
                        + f"; got {_kind(inst)} {_show(inst)}")
    if v == "enum":
        return doc.diag(path, f"{where}: unknown value {_show(inst)}; expected one of "
                        f"{', '.join(map(str, s['enum']))}", suggest(inst, s["enum"]))
    if v == "const":
        return doc.diag(path, f"{where} must be {_show(s['const'])}; got {_show(inst)}",
                        "this sunoflow reads recipe language version 1"
                        if path == ("version",) else None)
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        word = {"minimum": "at least", "maximum": "at most", "exclusiveMinimum": "more than",
                "exclusiveMaximum": "less than"}[v]
        return doc.diag(path, f"{where} must be {word} {s[v]}; got {_show(inst)}")
    if v == "multipleOf":
        return doc.diag(path, f"{where} must be a multiple of {s[v]}; got {_show(inst)}")
    if v == "minProperties":
        return doc.diag(path, f"{where} is empty", "add at least one step")
    if v == "uniqueItems":
        return doc.diag(path, f"{where} lists the same value twice")
    if v == "pattern":
        if err.absolute_path and err.relative_schema_path and \
                "propertyNames" in err.relative_schema_path:
            pass
        if path and path[0] == "steps" and len(path) == 3 and path[2] == "uses":
            return doc.diag(path, f"{where}: unknown step type {_show(inst)}",
                            suggest(inst, TYPES) or f"step types: {', '.join(sorted(TYPES))}")
        return doc.diag(path, f"{where}: {_show(inst)} does not match {s[v]}")
    if v == "propertyNames":
        return doc.diag(path, f"{where}: bad name", None)
    return doc.diag(path, f"{where}: {err.message}")


def _schema_errors(doc: Document) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    for err in schemas.top_validator().iter_errors(doc.data):
        if err.validator == "propertyNames" or (
                err.relative_schema_path and "propertyNames" in err.relative_schema_path):
            name = err.instance
            parent = tuple(err.absolute_path)
            what = "step id" if parent[:1] == ("steps",) else "name"
            hint = "ids are lower case letters, digits and _, starting with a letter" \
                if what == "step id" else None
            if isinstance(name, str) and parent and isinstance(doc.data, dict):
                out.append(doc.diag((*parent, name), f"invalid {what} '{name}'", hint, key=True))
                continue
        if err.validator == "anyOf" and tuple(err.absolute_path)[-1:] == ("uses",):
            path = tuple(err.absolute_path)
            inst = err.instance
            if isinstance(inst, str):
                out.append(doc.diag(path, f"{_where(path)}: unknown step type {_show(inst)}",
                                    suggest(inst, TYPES)
                                    or "a step type or a path like ./recipes/x.yaml"))
                continue
        if err.validator == "anyOf" and tuple(err.absolute_path) == ("provider",):
            inst = err.instance
            if isinstance(inst, dict):
                sub = schemas.PROVIDER["anyOf"][1]
                from jsonschema import Draft202012Validator
                for e in Draft202012Validator(sub).iter_errors(inst):
                    out.append(_describe(e, ("provider",), doc))
                continue
        out.append(_describe(err, (), doc))
    return out


def load(path: str | Path, *, overrides: dict[str, Any] | None = None,
         display: str | None = None) -> Recipe:
    """Read, validate and freeze. Raises RecipeError listing every problem found."""
    p = Path(path)
    doc = source.read(p, display=display or str(path))
    return from_document(doc, p, overrides or {})


def from_document(doc: Document, path: Path, overrides: dict[str, Any]) -> Recipe:
    data = doc.data
    if not isinstance(data, dict):
        raise RecipeError([doc.diag((), f"a recipe is a mapping; got {_kind(data)}",
                                    "start with 'version: 1', a 'name' and 'steps'")])
    diags = _schema_errors(doc)
    defaults = data.get("defaults") if isinstance(data.get("defaults"), dict) else {}
    steps: dict[str, Step] = {}
    raw_steps = data.get("steps") if isinstance(data.get("steps"), dict) else {}
    for sid, raw in raw_steps.items():
        if not isinstance(raw, dict) or not isinstance(raw.get("uses"), str):
            continue
        uses = raw["uses"]
        stype = TYPES.get(uses)
        with_ = raw.get("with") if isinstance(raw.get("with"), dict) else {}
        if stype is not None:
            for err in schemas.with_validator(uses).iter_errors(with_):
                diags.append(_describe(err, ("steps", sid, "with"), doc))
            merged = {k: v for k, v in defaults.items() if k in stype.fields and k in DEFAULTABLE}
            merged.update(with_)
            for req in stype.required:
                if req not in merged:
                    at = ("steps", sid, "with") if "with" in raw else ("steps", sid)
                    diags.append(doc.diag(at, f"step '{sid}' ({uses}) needs '{req}' in 'with'",
                                          _required_hint(uses, req)))
            with_ = merged
        needs = raw.get("needs", ())
        needs_t = (needs,) if isinstance(needs, str) else tuple(n for n in needs
                                                                if isinstance(n, str))
        steps[sid] = Step(
            id=sid, uses=uses, type=stype, with_=with_, needs=needs_t,
            for_each=raw.get("for_each"), if_=raw.get("if", True),
            retry=raw.get("retry", 0) if isinstance(raw.get("retry"), int) else 0,
            timeout=parse_duration(raw.get("timeout")), take=raw.get("take", "both"),
            name=raw.get("name") if isinstance(raw.get("name"), str) else None,
        )
    schema_ok = not diags
    vars_ = dict(data.get("vars") or {}) if isinstance(data.get("vars"), dict) else {}
    for k, v in overrides.get("vars", {}).items():
        if k not in vars_:
            raise UsageError(f"--var {k}: the recipe has no var '{k}'"
                             + (f"; {s}" if (s := suggest(k, vars_)) else
                                f" (vars: {', '.join(vars_) or 'none'})"))
        vars_[k] = v
    outputs_raw = data.get("outputs")
    outputs: list[OutputFile] = []
    exposed: dict[str, str] = {}
    if isinstance(outputs_raw, list) and schema_ok:
        for i, o in enumerate(outputs_raw):
            outputs.append(OutputFile(i, o["path"], o["from"], o.get("for_each"),
                                      o.get("if", True), dict(o.get("tags") or {})))
    elif isinstance(outputs_raw, dict):
        exposed = dict(outputs_raw)
    if not schema_ok:
        raise RecipeError(diags + _later_diagnostics(data, doc, path, steps, vars_))
    return Recipe(
        path=path, file=doc.file, name=str(data.get("name") or path.stem),
        provider=provider_from(data.get("provider"), overrides), defaults=dict(defaults),
        vars=vars_, steps=steps, outputs=tuple(outputs), doc=doc,
        inputs=dict(data.get("inputs") or {}), exposed=exposed,
    )


def _later_diagnostics(data: dict[str, Any], doc: Document, path: Path,
                       steps: dict[str, Step], vars_: dict[str, Any]) -> list[Diagnostic]:
    """With schema errors present, still look for reference errors in what did parse, so
    the author sees every problem in one pass. A recipe too broken to plan yields none."""
    from runner import plan

    try:
        r = Recipe(path=path, file=doc.file, name="", provider=Provider(), defaults={},
                   vars=vars_, steps=steps, outputs=(), doc=doc)
        plan.build(r)
    except RecipeError as exc:
        return exc.diagnostics
    except Exception:  # noqa: BLE001 - best effort only; the schema errors stand on their own
        return []
    return []


def _required_hint(uses: str, req: str) -> str | None:
    if req == "audio":
        return "e.g. audio: \"{{ steps.song.tracks[0] }}\""
    return None


def provider_from(raw: Any, overrides: dict[str, Any]) -> Provider:
    block: dict[str, Any] = {"kind": raw} if isinstance(raw, str) else dict(raw or {})
    kind = overrides.get("provider") or block.get("kind") or "local"
    if overrides.get("provider") and overrides["provider"] != block.get("kind"):
        # Switching provider on the command line drops settings that belong to the other one.
        block = {k: v for k, v in block.items()
                 if k in ("api_key_env", "prices", "poll_interval", "max_poll_interval",
                          "request_timeout", "take_seconds")}
    base = {**PROVIDER_DEFAULTS[kind], **{k: v for k, v in block.items() if k != "kind"}}
    if overrides.get("base_url"):
        base["base_url"] = overrides["base_url"]
        if kind == "sunoapi" and "upload_base_url" not in block:
            base["upload_base_url"] = overrides["base_url"]
    rl = base.get("rate_limit")
    return Provider(
        kind=kind,
        base_url=(base.get("base_url") or None) and str(base["base_url"]).rstrip("/"),
        upload_base_url=(base.get("upload_base_url") or None)
        and str(base["upload_base_url"]).rstrip("/"),
        api_key_env=base.get("api_key_env", "SUNO_API_KEY"),
        callback_url=base.get("callback_url"),
        rate_limit=(int(rl["requests"]), float(rl["per_seconds"])) if rl else None,
        poll_interval=float(base.get("poll_interval", 10.0)),
        max_poll_interval=float(base.get("max_poll_interval", 60.0)),
        request_timeout=float(base.get("request_timeout", 30.0)),
        prices=dict(base.get("prices") or {}),
        take_seconds=float(base.get("take_seconds", 30.0)),
        concat=base.get("concat", "remote"),
    )


def parse_duration(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    m = re.match(r"^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)$", str(v))
    if not m:
        return None
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def parse_var(text: str) -> tuple[str, Any]:
    """`--var key=value`: the value is read as YAML, so numbers and lists work."""
    if "=" not in text:
        raise UsageError(f"--var {text!r}: expected KEY=VALUE")
    k, _, v = text.partition("=")
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", k):
        raise UsageError(f"--var {text!r}: '{k}' is not a valid var name")
    if v.strip() == "":
        return k, ""
    try:
        return k, source.parse(v.encode(), f"--var {k}").data
    except RecipeError:
        return k, v
