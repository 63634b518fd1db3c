"""Load a recipe: read it with positions, validate it against the schema, apply defaults and
overrides, and freeze it. Everything after this works on the frozen dataclasses here.

Every schema error is reported (not just the first), each at the YAML node it concerns:
an unknown key points at the key, a missing one at the mapping that lacks it.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jsonschema import ValidationError

from runner.engine import early
from runner.errors import Diagnostic, RecipeError, UsageError
from runner.paths import Outside, Roots
from runner.recipe import schema as schemas
from runner.recipe import source
from runner.recipe.bulk import building
from runner.recipe.include import INPUT_TYPES, Includes, at, fits
from runner.recipe.source import Document
from runner.recipe.template import TemplateError, compile_template, is_template
from runner.steps.types import DEFAULTABLE, TYPES, StepType

PROVIDER_DEFAULTS: dict[str, dict[str, Any]] = {
    "local": {"base_url": None, "rate_limit": None},
    "sunoapi": {"base_url": "https://api.sunoapi.org",
                "rate_limit": {"requests": 20, "per_seconds": 10}},
    "newapi": {"base_url": None, "rate_limit": {"requests": 20, "per_seconds": 10}},
}


DEFAULT_MAX_DOWNLOAD = 512 * 2**20  # bytes of one result file

# The hosts whose upload host is documented (REFERENCE 2.20): uploads carry the key, so
# they go only where the API host's own documentation sends them. A host on this machine
# (a fake, a tunnel's local end) is its own upload host; any other needs
# `upload_base_url`, refused at validation when a step uploads (runner.plan.build).
UPLOAD_HOSTS = {"api.sunoapi.org": "https://sunoapiorg.redpandaai.co"}
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


def upload_host(base_url: str | None) -> str | None:
    """The upload address that serves the API at `base_url`, when it is known."""
    if not base_url:
        return None
    host = (urlsplit(base_url).hostname or "").lower()
    if host in UPLOAD_HOSTS:
        return UPLOAD_HOSTS[host]
    return base_url.rstrip("/") if host in LOOPBACK else None


@dataclass(frozen=True)
class Provider:
    kind: str = "local"
    base_url: str | None = None
    upload_base_url: str | None = None
    api_key_env: str = "SUNO_API_KEY"
    callback_url: str | None = None
    # Whether a song's `first` stage starts its tracks[0] users (runner.engine.early): auto
    # (default), always (`true` in the recipe) or never (`false`).
    release_on_first: str = "auto"
    rate_limit: tuple[int, float] | None = None
    poll_interval: float = 10.0
    max_poll_interval: float = 60.0
    request_timeout: float = 30.0
    max_download_bytes: int = DEFAULT_MAX_DOWNLOAD
    prices: dict[str, float] = field(default_factory=dict)
    take_seconds: float = 30.0
    concat: str = "remote"
    # The shared cache (runner.store.cache); --cache and $SUNOFLOW_CACHE win.
    cache: str | None = None
    # Seconds a remote operation may be waited for, per step type or "*" (runner.engine.deadlines).
    timeouts: dict[str, float] = field(default_factory=dict)


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
    callee: Recipe | None = None  # the recipe `uses` names, once it loaded without error


class _Missing:
    def __repr__(self) -> str:
        return "NO_DEFAULT"


NO_DEFAULT: Any = _Missing()  # "no default" differs from `default: null`


@dataclass(frozen=True)
class Input:
    """One declared input of a reusable recipe."""

    name: str
    type: str = "any"
    default: Any = NO_DEFAULT
    description: str | None = None
    required: bool = True  # without a default, unless the recipe says `required: false`


@dataclass(frozen=True)
class OutputFile:
    index: int
    path: str
    from_: str
    for_each: Any = None
    if_: Any = True
    tags: dict[str, Any] = field(default_factory=dict)
    lrc: str | None = None


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
    inputs: dict[str, Input] = field(default_factory=dict)
    exposed: dict[str, str] = field(default_factory=dict)  # a reusable recipe's outputs
    allow_paths: tuple[Path, ...] = ()  # --allow-path: folders beside its own it may read
    # NAME.takes.yaml beside it (runner.recipe.takes): step instance -> the take kept. Read for the
    # recipe that is run only; the plan applies each to its instance.
    takes: dict[str, int] = field(default_factory=dict)
    takes_doc: Document | None = None

    def input_defaults(self) -> dict[str, Any]:
        """Each input's value when the caller gives none (null for an optional one)."""
        return {k: (None if i.default is NO_DEFAULT else i.default)
                for k, i in self.inputs.items() if not (i.required and i.default is NO_DEFAULT)}

    @property
    def roots(self) -> Roots:
        """The folders its local paths may name (runner.paths)."""
        return Roots.of(self.path, self.allow_paths)


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
_TEMPLATE_REF = "#/$defs/template"


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


def _got(v: Any) -> str:
    """'a string 'x'', 'a number 3', 'a list', 'null': what the author wrote, briefly."""
    if v is None or isinstance(v, (dict, list)):
        return _kind(v)
    return f"{_kind(v)} {_show(v)}"


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
        return any(_kind(v) == _kind(e) for e in values)
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
    r"^https?://": ("is not an http(s) URL", "e.g. https://api.sunoapi.org"),
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


def _describe(err: ValidationError, base: tuple[Any, ...], doc: Document) -> list[Diagnostic]:
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
                return [d for e in inner for d in _describe(e, base, doc)]
        kinds = [_expected(b) for b in branches]
        return [doc.diag(path, f"{where} must be {_either(kinds)}; got {_got(inst)}",
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
                         + f"; got {_got(inst)}",
                         _TYPE_HINTS.get(path) or _yaml11_hint(inst, [s]), key=inst is None)]
    if v == "enum":
        enum = s["enum"]
        hint = suggest(inst, [e for e in enum if isinstance(e, str)]) \
            if isinstance(inst, str) else None
        return [doc.diag(path, f"{where}: unknown value {_show(inst)}; expected one of "
                         # As YAML spells them: `true`, not Python's `True`.
                         f"{', '.join(e if isinstance(e, str) else json.dumps(e) for e in enum)}",
                         hint)]
    if v == "const":
        return [doc.diag(path, f"{where} must be {_show(s['const'])}; got {_show(inst)}",
                         "this sunoflow reads recipe language version 1"
                         if path == ("version",) else None)]
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        word = {"minimum": "at least", "maximum": "at most", "exclusiveMinimum": "more than",
                "exclusiveMaximum": "less than"}[v]
        return [doc.diag(path, f"{where} must be {word} {s[v]}; got {_show(inst)}")]
    if v == "multipleOf":
        return [doc.diag(path, f"{where} must be a multiple of {s[v]}; got {_show(inst)}")]
    if v == "minProperties":
        return [doc.diag(path, f"{where} is empty", "add at least one step"
                         if path == ("steps",) else None)]
    if v == "uniqueItems" and isinstance(inst, list):
        dup = next((x for i, x in enumerate(inst) if x in inst[:i]), None)
        return [doc.diag(path, f"{where} lists {_show(dup)} twice")]
    if v == "pattern":
        what, hint = _PATTERNS.get(s[v], (f"does not match {s[v]}", s.get("description")))
        if "needs" in path and isinstance(doc.data.get("steps"), dict):
            hint = suggest(inst, doc.data["steps"]) or hint  # most likely a misspelt step
        return [doc.diag(path, f"{where}: {_show(inst)} {what}", hint)]
    return [doc.diag(path, f"{where}: {err.message}")]


_NAMES = {"steps": ("step id", "ids are lower case letters, digits and _, starting with a letter"),
          "vars": ("var name", "letters, digits and _, not starting with a digit, so that "
                               "'vars.NAME' works in a template"),
          "inputs": ("input name", "lower case letters, digits and _, starting with a letter"),
          "outputs": ("output name", "lower case letters, digits and _, starting with a letter")}


def _schema_errors(doc: Document) -> list[Diagnostic]:
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
                                f"{_show(err.instance)}", suggest(err.instance, TYPES)
                                or "a step type (" + ", ".join(sorted(TYPES))
                                + "), a path like ./recipes/x.yaml, or sunoflow:NAME"))
            continue
        out.extend(_describe(err, (), doc))
    return out


@building
def load(path: str | Path, *, overrides: dict[str, Any] | None = None,
         display: str | None = None, includes: Includes | None = None) -> Recipe:
    """Read, validate and freeze, with every recipe it uses. Raises RecipeError listing
    every problem found."""
    p = Path(path)
    doc = source.read(p, display=display or str(path))
    r = from_document(doc, p, overrides or {}, includes)
    if includes is None:  # the recipe that is run, not one it uses
        from runner.recipe import takes

        kept, kdoc = takes.read(p)
        if kdoc is not None:
            r = replace(r, takes=kept, takes_doc=kdoc)
    return r


def from_document(doc: Document, path: Path, overrides: dict[str, Any],
                  includes: Includes | None = None) -> Recipe:
    if includes is None:
        includes = Includes(roots=Roots.project(path, overrides.get("allow_paths") or ()))
    data = doc.data
    if not isinstance(data, dict):
        raise RecipeError([doc.diag((), f"a recipe is a mapping; got {_kind(data)}",
                                    "start with 'version: 1', a 'name' and 'steps'")])
    diags = _schema_errors(doc) + _output_path_errors(
        data.get("outputs"), doc, Roots.of(path, overrides.get("allow_paths") or ()))
    defaults: dict[str, Any] = data["defaults"] if isinstance(data.get("defaults"), dict) else {}
    steps: dict[str, Step] = {}
    raw_steps: dict[str, Any] = data["steps"] if isinstance(data.get("steps"), dict) else {}
    for sid, raw in raw_steps.items():
        if not isinstance(raw, dict) or not isinstance(raw.get("uses"), str):
            continue
        uses = raw["uses"]
        stype = TYPES.get(uses)
        with_: dict[str, Any] = raw["with"] if isinstance(raw.get("with"), dict) else {}
        if stype is not None:
            if not schemas.with_check(uses)(with_):
                for err in schemas.with_validator(uses).iter_errors(with_):
                    diags.extend(_describe(err, ("steps", sid, "with"), doc))
            merged = {k: v for k, v in defaults.items() if k in stype.fields and k in DEFAULTABLE}
            merged.update(with_)
            for req in stype.required:
                if req not in merged:
                    at = ("steps", sid, "with") if "with" in raw else ("steps", sid)
                    diags.append(doc.diag(at, f"step '{sid}' ({uses}) needs '{req}' in 'with'",
                                          _required_hint(uses, req), key=True))
            with_ = merged
        callee: Recipe | None = None
        if stype is None and re.match(schemas.RECIPE_PATH, uses):
            callee, found = includes.load(doc, path, sid, uses)
            diags.extend(found)
            if found:
                # Point from here to problems shown in other files (a loop of inclusions
                # is shown here already, with both positions).
                others = [d for d in found if d.file != doc.file and d not in includes.cycles]
                elsewhere = sorted({d.file for d in others})
                if elsewhere:
                    n = len(others)
                    diags.append(doc.diag(("steps", sid, "uses"), f"steps.{sid}.uses: "
                                          f"{', '.join(elsewhere)}: {n} problem"
                                          f"{'s' if n != 1 else ''}, shown at "
                                          f"{'their positions' if n != 1 else 'its position'}"))
            diags.extend(_call_errors(doc, sid, raw, callee))
        fe = raw.get("for_each")
        if isinstance(fe, str) and is_template(fe):
            # Checked here because plan.build would recompile a broken for_each unguarded.
            try:
                compile_template(fe)
            except TemplateError as exc:
                diags.append(doc.diag(("steps", sid, "for_each"), str(exc),
                                      offset=(exc.line - 1, 1) if exc.line > 1 else None))
        needs = raw.get("needs", ())
        needs_t = (needs,) if isinstance(needs, str) else tuple(
            n for n in needs if isinstance(n, str)) if isinstance(needs, list) else ()
        steps[sid] = Step(
            id=sid, uses=uses, type=stype, with_=with_, needs=needs_t,
            for_each=raw.get("for_each"), if_=raw.get("if", True),
            retry=raw.get("retry", 0) if isinstance(raw.get("retry"), int) else 0,
            timeout=parse_duration(raw.get("timeout")), take=raw.get("take", "both"),
            name=raw.get("name") if isinstance(raw.get("name"), str) else None,
            callee=callee,
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
                                      o.get("if", True), dict(o.get("tags") or {}),
                                      o.get("lrc")))
    elif isinstance(outputs_raw, dict):
        exposed = dict(outputs_raw)
    inputs = _inputs(data.get("inputs"), doc, diags)
    if diags:
        seen = {(d.file, d.line, d.col) for d in diags}
        raise RecipeError(diags + _later_diagnostics(data, doc, path, steps, vars_, inputs,
                                                     exposed, seen,
                                                     overrides.get("allow_paths") or ()))
    return Recipe(
        path=path, file=doc.file, name=str(data.get("name") or path.stem),
        provider=provider_from(data.get("provider"), overrides), defaults=dict(defaults),
        vars=vars_, steps=steps, outputs=tuple(outputs), doc=doc,
        inputs=inputs, exposed=exposed,
        allow_paths=tuple(overrides.get("allow_paths") or ()),
    )


def _inputs(raw: Any, doc: Document, diags: list[Diagnostic]) -> dict[str, Input]:
    """The declared inputs; a default must be of the declared type."""
    out: dict[str, Input] = {}
    for name, spec in (raw.items() if isinstance(raw, dict) else ()):
        if not isinstance(spec, dict):
            continue
        kind = spec.get("type", "any")
        default = spec.get("default", NO_DEFAULT)
        if default is not NO_DEFAULT and default is not None and not fits(kind, default):
            diags.append(doc.diag(("inputs", name, "default"), f"inputs.{name}.default must "
                                  f"be {INPUT_TYPES.get(kind, kind)}; got {_got(default)}"))
        out[name] = Input(name, kind, default, spec.get("description"),
                          bool(spec.get("required", default is NO_DEFAULT)))
    return out


def _call_errors(doc: Document, sid: str, raw: dict[str, Any],
                 callee: Recipe | None) -> list[Diagnostic]:
    """What a call step may not say: the settings of one service task, and a callee that
    writes album files (only the recipe that is run writes the album)."""
    out: list[Diagnostic] = []
    for k in ("take", "retry", "timeout"):
        if k in raw:
            out.append(doc.diag(("steps", sid, k), f"steps.{sid}.{k}: applies to a step type, "
                                f"not to a reusable recipe ({raw['uses']})", "set it on the "
                                "steps inside the reusable recipe", key=True))
    if callee is not None and isinstance(callee.doc.data.get("outputs"), list):
        out.append(doc.diag(("steps", sid, "uses"), f"steps.{sid}.uses: {callee.file} writes "
                            f"album files (its outputs at {at(callee.doc, ('outputs',), key=True)}"
                            " are a list); a reusable recipe exposes values instead",
                            "give it outputs: {name: \"{{ steps.x.file }}\"} and write the album "
                            "in the recipe you run"))
    return out


def _escapes(path: str) -> bool:
    p = path.replace("\\", "/")
    return p.startswith("/") or re.match(r"^[A-Za-z]:", p) is not None \
        or ".." in p.split("/")


def _output_path_errors(outputs: Any, doc: Document, roots: Roots) -> list[Diagnostic]:
    """Album entries must not reach outside: `path` stays under --out, `from` names a file
    output (a literal path could copy any file on the machine that builds the album into
    it), a literal `cover` stays beside the recipe (runner.paths). Templated paths are
    checked again when rendered; in a templated `path` only the literal text can make
    folders (inserted values are sanitised), so its shape is checked here too."""
    out: list[Diagnostic] = []
    for i, o in enumerate(outputs if isinstance(outputs, list) else []):
        if not isinstance(o, dict):
            continue
        p, frm = o.get("path"), o.get("from")
        if isinstance(p, str) and _escapes(p):
            out.append(doc.diag(("outputs", i, "path"), f"outputs[{i}].path: {_show(p)} "
                                "leaves the output folder", "use a path relative to --out, "
                                "without '..'"))
        if isinstance(frm, str) and not is_template(frm):
            out.append(doc.diag(("outputs", i, "from"), f"outputs[{i}].from: {_show(frm)} is "
                                "not a step's file output",
                                "e.g. from: \"{{ steps.song.tracks[0].file }}\""))
        cover = o.get("tags", {}).get("cover") if isinstance(o.get("tags"), dict) else None
        if isinstance(cover, str) and cover and not is_template(cover):
            try:
                roots.resolve(cover)
            except Outside as exc:
                out.append(doc.diag(("outputs", i, "tags", "cover"),
                                    f"outputs[{i}].tags.cover: {exc}",
                                    "use a step's image (e.g. \"{{ steps.art.images[0].file "
                                    "}}\") or a file beside the recipe"))
    return out


def _later_diagnostics(data: dict[str, Any], doc: Document, path: Path,
                       steps: dict[str, Step], vars_: dict[str, Any], inputs: dict[str, Input],
                       exposed: dict[str, str],
                       seen: set[tuple[str, int, int]],
                       allow_paths: tuple[Path, ...] = ()) -> list[Diagnostic]:
    """With schema errors present, still look for reference errors in what did parse, so
    the author sees every problem in one pass. A recipe too broken to plan yields none."""
    from runner.plan import build as plan

    try:
        r = Recipe(path=path, file=doc.file, name="", provider=Provider(), defaults={},
                   vars=vars_, steps=steps, outputs=(), doc=doc, inputs=inputs,
                   exposed=exposed, allow_paths=allow_paths)
        plan.build(r)
    except RecipeError as exc:
        # One message per position: where the schema already spoke, it said it better.
        return [d for d in exc.diagnostics if (d.file, d.line, d.col) not in seen]
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
                          "request_timeout", "take_seconds", "max_download_bytes",
                          "timeouts", "cache")}
    base = {**PROVIDER_DEFAULTS[kind], **{k: v for k, v in block.items() if k != "kind"}}
    if overrides.get("base_url"):
        moved = _host(overrides["base_url"]) != _host(base.get("base_url"))
        base["base_url"] = overrides["base_url"]
        if moved:
            # The recipe's upload host belongs to the API host it named: with another API
            # host on the command line, the key must not go to the old one's uploads.
            base.pop("upload_base_url", None)
    if kind == "sunoapi" and not base.get("upload_base_url"):
        base["upload_base_url"] = upload_host(base.get("base_url"))
    rl = base.get("rate_limit")
    return Provider(
        kind=kind,
        base_url=(base.get("base_url") or None) and str(base["base_url"]).rstrip("/"),
        upload_base_url=(base.get("upload_base_url") or None)
        and str(base["upload_base_url"]).rstrip("/"),
        api_key_env=base.get("api_key_env", "SUNO_API_KEY"),
        callback_url=base.get("callback_url"),
        release_on_first=early.mode_of(base.get("release_on_first", "auto")),
        rate_limit=(int(rl["requests"]), float(rl["per_seconds"])) if rl else None,
        poll_interval=float(base.get("poll_interval", 10.0)),
        max_poll_interval=float(base.get("max_poll_interval", 60.0)),
        request_timeout=float(base.get("request_timeout", 30.0)),
        max_download_bytes=int(base.get("max_download_bytes", DEFAULT_MAX_DOWNLOAD)),
        prices=dict(base.get("prices") or {}),
        take_seconds=float(base.get("take_seconds", 30.0)),
        concat=base.get("concat", "remote"),
        cache=base.get("cache") or None,
        timeouts={str(k): t for k, v in dict(base.get("timeouts") or {}).items()
                  if (t := parse_duration(v)) is not None},
    )


def _host(url: Any) -> str | None:
    """The server a URL names (host and port): another one is another operator."""
    return urlsplit(url).netloc.lower() if isinstance(url, str) else None


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
