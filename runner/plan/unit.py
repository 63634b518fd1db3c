"""The checks of one recipe file, made once however often it is used (a reusable recipe
whose loops use inputs: once per distinct value of those, runner.plan.fanin): what its
templates refer to (runner.plan.refs), its `needs` and their order, what the provider can
perform, each call's `with` against what the callee declares, and the album entries of the
recipe that is run.
"""

from __future__ import annotations

import graphlib
from pathlib import Path
from typing import Any

from runner import paths
from runner.paths import Roots
from runner.plan import fanin
from runner.plan.refs import Checker, Unit
from runner.recipe.messages import got, suggest
from runner.recipe.model import INPUT_TYPES, NO_DEFAULT, Provider, Recipe, Step, fits
from runner.recipe.source import at
from runner.recipe.template import (
    Compiled,
    TemplateError,
    compile_template,
    is_template,
    templates_in,
)


def check_unit(recipe: Recipe, provider: Provider, units: dict[tuple[Path, str | None], Unit],
                known: dict[str, Any] | None = None, note: str = "") -> Unit:
    """Check one recipe and, first, every recipe it uses: each file once, but a reusable
    recipe whose loops use inputs once before any call (`known` None: what does not depend
    on them) and then once per distinct value of those inputs (runner.plan.fanin). `note` is
    added to the messages of such a per-value check: the call it was made for."""
    ck_key = fanin.cache_key(recipe, known)
    ident = (recipe.path.resolve(), ck_key)
    if ident in units:
        return units[ident]
    ck = Checker(recipe, provider, known if ck_key is not None else None,
                 note if ck_key else "")
    unit = Unit(recipe, ck)
    units[ident] = unit
    for sid, step in recipe.steps.items():
        if step.callee is not None:
            ck.calls[sid] = check_unit(step.callee, provider, units)
    for sid in recipe.steps:
        ck.fan_out(sid)
    compiled = unit.compiled
    step_deps = unit.step_deps
    step_deps.update({sid: set() for sid in recipe.steps})
    for sid, step in recipe.steps.items():
        lst: list[tuple[tuple[Any, ...], Compiled]] = []
        for path, text in ck.step_templates(step):
            c = ck.compile(path, text)
            if c is None:
                continue
            ck.check_refs(path, c, sid)
            lst.append((path, c))
            for ref in c.refs:
                if ref.root == "steps" and ref.parts and ref.parts[0].kind != "expr":
                    x = str(ref.parts[0].value)
                    if x in recipe.steps and x != sid:
                        step_deps[sid].add(x)
        compiled[sid] = lst
        if ck.item_from.get(sid):
            step_deps[sid].add(ck.item_from[sid])  # type: ignore[arg-type]
        elif isinstance(step.for_each, str):
            try:
                c = compile_template(step.for_each) if is_template(step.for_each) else None
            except TemplateError:
                c = None  # already reported by fan_out()
            if c is not None:
                for ref in c.refs:
                    if ref.root == "steps" and ref.parts and str(ref.parts[0].value) in \
                            recipe.steps:
                        step_deps[sid].add(str(ref.parts[0].value))
        for ni, n in enumerate(step.needs):
            npath = ("steps", sid, "needs") if isinstance(
                recipe.doc.data["steps"][sid].get("needs"), str) else ("steps", sid, "needs", ni)
            if n not in recipe.steps:
                ck.err(npath, f"needs: unknown step '{n}'", suggest(n, recipe.steps))
            elif n == sid:
                ck.err(npath, f"step '{sid}' needs itself")
            else:
                step_deps[sid].add(n)
        _check_provider(ck, step)
        if step.callee is not None:
            _check_call(ck, step)
    for name, src in recipe.exposed.items():
        c = ck.compile(("outputs", name), src)
        if c is not None:
            ck.check_refs(("outputs", name), c, None, looped=False)
            unit.exposed[name] = c
    _check_album(ck)
    if ck.diags:
        return unit
    unit.order = _order(ck, step_deps)
    return unit


def _check_album(ck: Checker) -> None:
    """The `outputs:` entries of the recipe that is run (the album)."""
    for o in ck.r.outputs:
        base = ("outputs", o.index)
        ck.item_type = None
        _n, items, frm = ck._loop(o.for_each, (*base, "for_each"), frozenset())
        typed = frm is not None or ck.item_type is not None  # what `item` is, is known
        _static_album_paths(ck, o, items if frm is None else None)
        for key, val in (("path", o.path), ("from", o.from_), ("lrc", o.lrc)):
            if val is not None and is_template(val):
                c = ck.compile((*base, key), val)
                if c is not None:
                    ck.item_from["\0out"] = frm
                    ck.check_refs((*base, key), c, "\0out" if typed else None,
                                  looped=o.for_each is not None)
                    if key != "path":
                        _album_file_type(ck, (*base, key), c, frm, key)
        for tk, tv in o.tags.items():
            if is_template(tv):
                c = ck.compile((*base, "tags", tk), tv)
                if c is not None:
                    ck.item_from["\0out"] = frm
                    ck.check_refs((*base, "tags", tk), c, "\0out" if typed else None,
                                  looped=o.for_each is not None)
                    if tk == "cover":
                        _album_file_type(ck, (*base, "tags", tk), c, frm, "cover")
    ck.item_from.pop("\0out", None)
    ck.item_type = None


def _album_file_type(ck: Checker, where: tuple[Any, ...], c: Compiled, frm: str | None,
                     key: str) -> None:
    """A `from`, `lrc` or `cover` that is exactly one reference to a step's output must
    name a file output (or, but for `lrc`, an object that has one): a text output such as
    `steps.words.text` can never be a file the steps made, so it is refused before the run
    instead of at export, after every paid step."""
    if not c.is_ref:
        return  # an expression: checked at export, when its value exists
    ref = c.refs[0]
    if ref.root == "steps":
        typ = ck.ref_type(c)
    elif ref.root == "item" and frm is not None and frm in ck.r.steps:
        typ = ck.outputs_of(frm)
        for part in ref.parts:
            if isinstance(typ, dict) and part.kind != "expr" and str(part.value) in typ:
                typ = typ[str(part.value)]
            elif isinstance(typ, tuple) and (part.kind == "expr" or isinstance(part.value, int)):
                typ = typ[1]
            else:
                return
    else:
        return
    ok = typ == "file" or typ in ("any", None) or (
        key != "lrc" and isinstance(typ, dict) and typ.get("file") == "file")
    if not ok:
        shown = c.source.strip("{} ")
        label = f"outputs[{where[1]}]." + ".".join(map(str, where[2:]))
        if isinstance(typ, dict) and "file" in typ:
            ck.err(where, f"{label}: {shown} is an object, not a file", f"name its file: "
                   f"\"{{{{ {shown}.file }}}}\"")
            return
        what = "text" if typ == "str" else "a number" if typ == "num" else \
            "a list" if isinstance(typ, tuple) else "an object without a file"
        ck.err(where, f"{label}: {shown} is {what}, not a file a step made",
               "name a file output, e.g. \"{{ steps.song.tracks[0].file }}\"")


def _static_album_paths(ck: Checker, o: Any, items: list[Any] | None) -> None:
    """The files an album entry reads, checked before the run wherever their templates
    need no step's outputs (export checks them again): `from` and `lrc` must be files
    the steps made, so a value known before the run cannot be one; `cover` must stay
    inside the recipe's folders (runner.paths)."""
    if o.for_each is not None and items is None:
        items = []  # a loop over step outputs: known only after the run
    cases = [(None, None)] if o.for_each is None else list(enumerate(items or []))
    for key, val in (("from", o.from_), ("lrc", o.lrc), ("cover", o.tags.get("cover"))):
        where = ("outputs", o.index, *(("tags",) if key == "cover" else ()), key)
        if not isinstance(val, str) or not val:
            continue
        if not is_template(val):
            if key == "lrc":
                ck.err(where, f"outputs[{o.index}].lrc: {val!r} is not a step's file output",
                       "e.g. lrc: \"{{ steps.timing.lrc }}\"")
            continue  # a literal `from` and `cover` are checked with the recipe
        try:
            c = compile_template(val)
        except TemplateError:
            continue  # reported where the templates are compiled
        if any(r.root == "steps" or r.root == "inputs" for r in c.refs):
            continue
        for index, item in cases:
            ctx: dict[str, Any] = {"vars": ck.r.vars, "steps": {}, "inputs": {}}
            if index is not None:
                ctx.update(index=index, item=item)
            try:
                value = c.render(ctx)
            except TemplateError:
                continue
            if isinstance(value, dict):
                value = value.get("file")
            if not isinstance(value, str) or not value:
                continue
            shown = f"outputs[{o.index}]" + (f" (item {index})" if index is not None else "")
            if key != "cover":
                ck.err(where, f"{shown}.{key}: {value!r} is not a step's file output (it is "
                       "known before the run)", "name a step's file, e.g. "
                       "\"{{ steps.song.tracks[0].file }}\"")
                break
            try:
                Roots.of(ck.r.path, ck.r.allow_paths).resolve(value)
            except paths.Outside as exc:
                ck.err(where, f"{shown}.tags.cover: {exc}", "use a step's image or a file "
                       "beside the recipe")
                break


def _check_call(ck: Checker, step: Step) -> None:
    """A call's `with` against what its recipe declares: no unknown input, no required
    one missing, and every literal value of the declared type. Each message gives the
    position in the caller and the declaration's in the callee."""
    callee = step.callee
    assert callee is not None
    sid = step.id
    declared = at(callee.doc, ("inputs",), key=True) if callee.inputs else None
    for k, v in step.with_.items():
        spec = callee.inputs.get(k)
        if spec is None:
            ck.err(("steps", sid, "with", k), f"steps.{sid}.with: unknown input '{k}' for "
                   f"{callee.file} " + (f"(inputs declared at {declared})" if declared else
                                        f"(it declares no inputs; see {at(callee.doc, ())})"),
                   suggest(k, callee.inputs) or (f"inputs: {', '.join(callee.inputs)}"
                                                 if callee.inputs else None), key=True)
        elif not any(True for _ in templates_in(v)) and v is not None \
                and not fits(spec.type, v):
            ck.err(("steps", sid, "with", k), type_message(step, k, v))
    raw = ck.doc.data["steps"][sid]
    for name, spec in callee.inputs.items():
        if spec.required and spec.default is NO_DEFAULT and name not in step.with_:
            where = ("steps", sid, "with") if "with" in raw else ("steps", sid)
            ck.err(where, f"step '{sid}' ({step.uses}) needs input '{name}' in 'with' "
                   f"(declared at {at(callee.doc, ('inputs', name), key=True)})",
                   f"{name}: {spec.description}" if spec.description else None, key=True)


def type_message(step: Step, name: str, value: Any, prefix: str = "") -> str:
    callee = step.callee
    assert callee is not None
    spec = callee.inputs[name]
    return (f"{prefix}steps.{step.id}.with.{name}: input '{name}' of {callee.file} must be "
            f"{INPUT_TYPES.get(spec.type, spec.type)}; got {got(value)} (declared at "
            f"{at(callee.doc, ('inputs', name), key=True)})")


def _order(ck: Checker, deps: dict[str, set[str]]) -> list[str]:
    ts = graphlib.TopologicalSorter({k: sorted(v) for k, v in deps.items()})
    try:
        return list(ts.static_order())
    except graphlib.CycleError as exc:
        cycle = list(exc.args[1])
        first = cycle[0] if cycle else next(iter(deps))
        ck.err(("steps", first), "dependency cycle: " + " -> ".join(cycle),
               "a step cannot depend, directly or through others, on itself", key=True)
        return []


# Remote operations that address a track by the service's own ids (taskId + audioId): they
# cannot take a file made on this machine.
NEEDS_SERVICE_TRACK = frozenset({"extend", "cover", "video", "separate", "timestamped_lyrics"})


def _made_locally(step: Step, kind: str) -> bool:
    if step.type is None:
        return False
    if step.type.support.get(kind) == "local":
        return True
    return step.type.local_by_value(step.with_.get)  # convert to a non-WAV format


def _check_service_tracks(ck: Checker, step: Step) -> None:
    kind = ck.provider.kind
    if step.type is None or step.uses not in NEEDS_SERVICE_TRACK or \
            step.type.support.get(kind) != "remote" or not is_template(step.with_.get("audio")):
        return
    try:
        c = compile_template(step.with_["audio"])
    except TemplateError:
        return
    sources = [str(r.parts[0].value) for r in c.refs if r.root == "steps" and r.parts
               and r.parts[0].kind != "expr"]
    if any(r.root == "item" for r in c.refs) and ck.item_from.get(step.id):
        sources.append(ck.item_from[step.id])  # type: ignore[arg-type]
    for x in sources:
        src = ck.r.steps.get(x)
        if src is not None and _made_locally(src, kind):
            hint = ("to extend a file, use upload_extend" if step.uses == "extend" else
                    "take the audio from a step the service ran (generate, extend, ...)")
            ck.err(("steps", step.id, "with", "audio"), f"step '{step.id}': {step.uses} on "
                   f"{kind} needs a track the service made, but '{x}' ({src.uses}) is made "
                   "on this machine", hint)
            return


# Step types whose sunoapi request carries an uploaded file (REFERENCE 2.3-2.6): a local
# path or a stored track is uploaded first, with the key; only a literal URL is not.
UPLOADS = frozenset({"upload_cover", "upload_extend", "add_vocals", "add_instrumental"})


def _check_upload_host(ck: Checker, step: Step) -> None:
    prov = ck.provider
    audio = step.with_.get("audio")
    if prov.kind != "sunoapi" or prov.upload_base_url or step.uses not in UPLOADS or \
            isinstance(audio, str) and not is_template(audio) and paths.is_url(audio):
        return
    ck.err(("steps", step.id, "with", "audio") if "audio" in step.with_ else
           ("steps", step.id), f"step '{step.id}' ({step.uses}) uploads its audio with the "
           f"key, and no upload host is known for {prov.base_url} (only api.sunoapi.org's "
           "is documented)", "set provider.upload_base_url to the upload address your "
           "provider documents, or give audio as an http(s) URL")


def _check_provider(ck: Checker, step: Step) -> None:
    _check_service_tracks(ck, step)
    _check_upload_host(ck, step)
    kind = ck.provider.kind
    if step.type is not None and kind not in step.type.support:
        can = [k for k in step.type.support]
        ck.err(("steps", step.id, "uses"), f"step '{step.id}': provider '{kind}' cannot "
               f"perform '{step.uses}'", f"providers that can: {', '.join(can)}")
