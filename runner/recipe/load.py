"""Load a recipe: read it with positions, validate it against the schema, apply defaults and
overrides, and freeze it into the records of runner.recipe.model, which everything after
this works on.

Every schema error is reported (not just the first), each at the YAML node it concerns:
an unknown key points at the key, a missing one at the mapping that lacks it. The language
never plans: what templates refer to is the plan's to check (runner.plan.build.check runs
both, and with errors here still plans what did parse, so the author sees every problem in
one pass).
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from runner.errors import Diagnostic, RecipeError, UsageError
from runner.paths import Outside, Roots
from runner.recipe import schema as schemas
from runner.recipe import source
from runner.recipe.bulk import building
from runner.recipe.include import Includes, Reader
from runner.recipe.messages import describe, got, kind, schema_errors, show, suggest
from runner.recipe.model import (
    DEFAULT_MAX_DOWNLOAD,
    INPUT_TYPES,
    NO_DEFAULT,
    Input,
    OutputFile,
    Provider,
    Recipe,
    Step,
    fits,
    mode_of,
)
from runner.recipe.source import Document, at
from runner.recipe.template import TemplateError, compile_template, is_template
from runner.steps.types import DEFAULTABLE, TYPES

PROVIDER_DEFAULTS: dict[str, dict[str, Any]] = {
    "local": {"base_url": None, "rate_limit": None},
    "sunoapi": {"base_url": "https://api.sunoapi.org",
                "rate_limit": {"requests": 20, "per_seconds": 10}},
    "newapi": {"base_url": None, "rate_limit": {"requests": 20, "per_seconds": 10}},
}

# The hosts whose upload host is documented (REFERENCE 2.20): uploads carry the key, so
# they go only where the API host's own documentation sends them. A host on this machine
# (a fake, a tunnel's local end) is its own upload host; any other needs
# `upload_base_url`, refused at validation when a step uploads (runner.plan.unit).
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


class Unfinished(RecipeError):
    """A recipe's errors, with what of it did parse (`partial`: its steps, vars, inputs and
    outputs, without provider or defaults), for the plan to look for more problems in
    (runner.plan.build.check)."""

    def __init__(self, diagnostics: list[Diagnostic], partial: Recipe) -> None:
        super().__init__(diagnostics)
        self.partial = partial


@building
def load(path: str | Path, *, overrides: dict[str, Any] | None = None,
         display: str | None = None, includes: Includes | None = None,
         read: Reader | None = None) -> Recipe:
    """Read, validate and freeze, with every recipe it uses (each read by `read`: this
    function, unless the caller hands another). Raises RecipeError listing every problem
    found: Unfinished, with what did parse, when the file is a recipe at all."""
    p = Path(path)
    doc = source.read(p, display=display or str(path))
    r = from_document(doc, p, overrides or {}, includes, read)
    if includes is None:  # the recipe that is run, not one it uses
        from runner.recipe import takes

        kept, kdoc = takes.read(p)
        if kdoc is not None:
            r = replace(r, takes=kept, takes_doc=kdoc)
    return r


def from_document(doc: Document, path: Path, overrides: dict[str, Any],
                  includes: Includes | None = None, read: Reader | None = None) -> Recipe:
    if includes is None:
        includes = Includes(roots=Roots.project(path, overrides.get("allow_paths") or ()),
                            read=read or load)
    data = doc.data
    if not isinstance(data, dict):
        raise RecipeError([doc.diag((), f"a recipe is a mapping; got {kind(data)}",
                                    "start with 'version: 1', a 'name' and 'steps'")])
    diags = schema_errors(doc) + _output_path_errors(
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
                    diags.extend(describe(err, ("steps", sid, "with"), doc))
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
        raise Unfinished(diags, Recipe(
            path=path, file=doc.file, name="", provider=Provider(), defaults={}, vars=vars_,
            steps=steps, outputs=(), doc=doc, inputs=inputs, exposed=exposed,
            allow_paths=tuple(overrides.get("allow_paths") or ())))
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
                                  f"be {INPUT_TYPES.get(kind, kind)}; got {got(default)}"))
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
            out.append(doc.diag(("outputs", i, "path"), f"outputs[{i}].path: {show(p)} "
                                "leaves the output folder", "use a path relative to --out, "
                                "without '..'"))
        if isinstance(frm, str) and not is_template(frm):
            out.append(doc.diag(("outputs", i, "from"), f"outputs[{i}].from: {show(frm)} is "
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
        release_on_first=mode_of(base.get("release_on_first", "auto")),
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
