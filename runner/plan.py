"""The plan: expand `for_each` into instances, check every reference, find dependencies,
order the graph, and compute each instance's key.

Checks made here, before anything runs: template syntax and names, references to unknown
steps, vars or outputs (with a suggestion), indexes out of range for fan-outs of known
length, `item`/`index` outside a `for_each`, `needs` on a missing step, cycles, a step type
the provider cannot perform, and model limits on inputs whose values are known already.

Dependencies are per instance: `song[2]` waits for `words[2]` only when its templates
say `steps.words[index]`, so one slow track does not hold up the others.
"""

from __future__ import annotations

import graphlib
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from runner import models, paths
from runner.errors import Diagnostic, RecipeError
from runner.recipe import Recipe, Step, _kind, _show, suggest
from runner.template import (
    SCOPE,
    Compiled,
    Part,
    Ref,
    TemplateError,
    compile_template,
    index_value,
    is_template,
    render,
    templates_in,
)

KEY_VERSION = "sunoflow-key-1"


@dataclass(frozen=True)
class Instance:
    id: str
    step: Step
    index: int | None
    item: Any = None  # the loop value, when it is known before the run
    item_from: str | None = None  # for `for_each: steps.X`: the step whose outputs are items
    deps: tuple[str, ...] = ()


@dataclass
class Plan:
    recipe: Recipe
    instances: dict[str, Instance]  # in a topological order
    fan: dict[str, int | None]  # step id -> number of instances, None for a single step
    step_deps: dict[str, set[str]] = field(default_factory=dict)

    def of_step(self, sid: str) -> list[Instance]:
        n = self.fan[sid]
        if n is None:
            return [self.instances[sid]]
        return [self.instances[f"{sid}[{i}]"] for i in range(n)]

    def downstream(self, sids: set[str]) -> set[str]:
        """Step ids that depend on any of `sids`, transitively, including them."""
        out = set(sids)
        changed = True
        while changed:
            changed = False
            for s, deps in self.step_deps.items():
                if s not in out and deps & out:
                    out.add(s)
                    changed = True
        return out

    def upstream(self, sids: set[str]) -> set[str]:
        out = set(sids)
        stack = list(sids)
        while stack:
            for d in self.step_deps.get(stack.pop(), ()):
                if d not in out:
                    out.add(d)
                    stack.append(d)
        return out


class _Checker:
    def __init__(self, recipe: Recipe) -> None:
        self.r = recipe
        self.doc = recipe.doc
        self.diags: list[Diagnostic] = []
        self.fan: dict[str, int | None] = {}
        self.items: dict[str, list[Any] | None] = {}
        self.item_from: dict[str, str | None] = {}
        self.broken: set[str] = set()  # steps whose for_each failed: their length is unknown
        self.roots = recipe.roots

    def err(self, path: tuple[Any, ...], msg: str, hint: str | None = None,
            line: int = 1, key: bool = False) -> None:
        self.diags.append(self.doc.diag(path, msg, hint, key=key,
                                        offset=(line - 1, 1) if line > 1 else None))

    def compile(self, path: tuple[Any, ...], src: str) -> Compiled | None:
        try:
            return compile_template(src)
        except TemplateError as exc:
            self.err(path, str(exc), None, exc.line)
            return None

    # --- for_each lengths ------------------------------------------------------------

    def fan_out(self, sid: str, visiting: frozenset[str] = frozenset()) -> int | None:
        if sid in self.fan:
            return self.fan[sid]
        step = self.r.steps[sid]
        path = ("steps", sid, "for_each")
        n, items, frm = self._loop(step.for_each, path, visiting | {sid})
        self.fan[sid], self.items[sid], self.item_from[sid] = n, items, frm
        return n

    def _loop(self, fe: Any, path: tuple[Any, ...],
              visiting: frozenset[str]) -> tuple[int | None, list[Any] | None, str | None]:
        if fe is None:
            return None, None, None
        if isinstance(fe, list):
            return len(fe), fe, None
        c = self.compile(path, fe)
        if c is None:
            return 0, [], None
        roots = {r.root for r in c.refs}
        if roots == {"steps"} and c.native and len(c.refs) == 1 and len(c.refs[0].parts) == 1 \
                and c.refs[0].parts[0].kind in ("attr", "const"):
            x = str(c.refs[0].parts[0].value)
            if x not in self.r.steps:
                self.err(path, f"for_each refers to unknown step '{x}'",
                         suggest(x, self.r.steps))
                return 0, [], None
            if x in visiting:
                self.err(path, f"for_each over steps.{x} loops back to this step")
                return 0, [], None
            n = self.fan_out(x, visiting)
            if n is None:
                self.err(path, f"for_each over steps.{x}, but '{x}' is a single step, not a "
                         "fan-out", "for_each takes a list, vars, or '{{ steps.X }}' of a "
                         f"fan-out step; use {x}'s outputs in 'with' instead, e.g. "
                         f"audio: \"{{{{ steps.{x}.tracks[0] }}}}\"")
                return 0, [], None
            return n, None, x
        if roots - {"vars"}:
            self.err(path, "for_each may use vars, a literal list, or exactly "
                     "'{{ steps.X }}' of a fan-out step X; its length must be known before "
                     "the run")
            return 0, [], None
        before = len(self.diags)
        self.check_refs(path, c, None)
        if len(self.diags) > before:
            self.broken.add(path[1] if path[0] == "steps" else "")
            return 0, [], None
        try:
            value = c.render({"vars": self.r.vars})
        except TemplateError as exc:
            self.err(path, f"for_each: {exc}")
            self.broken.add(path[1] if path[0] == "steps" else "")
            return 0, [], None
        if not isinstance(value, list):
            self.err(path, f"for_each must give a list; '{fe}' gives {_kind(value)} "
                     f"{_show(value)}")
            return 0, [], None
        return len(value), value, None

    # --- references ------------------------------------------------------------------

    def check_refs(self, path: tuple[Any, ...], c: Compiled, sid: str | None,
                   *, looped: bool | None = None) -> None:
        looped = (sid is not None and self.r.steps[sid].for_each is not None) \
            if looped is None else looped
        for name in sorted(c.names - set(SCOPE)):
            self.err(path, f"unknown name '{name}' in template",
                     suggest(name, SCOPE) or "templates can use vars, steps, item and index "
                     "(never the environment)")
        for ref in c.refs:
            if ref.root == "vars":
                self._check_var(path, ref)
            elif ref.root == "steps":
                self._check_step_ref(path, ref, sid)
            elif ref.root in ("item", "index"):
                if not looped:
                    self.err(path, f"'{ref.root}' is only defined inside a for_each",
                             None, ref.line)
                elif ref.root == "item" and sid is not None and self.item_from.get(sid):
                    src = self.item_from[sid]
                    assert src is not None
                    self._check_outputs(path, ref, src, list(ref.parts), "item")
            elif ref.root == "inputs" and not self.r.inputs:
                self.err(path, "'inputs' is only defined in a reusable recipe that declares "
                         "inputs", None, ref.line)

    def _check_var(self, path: tuple[Any, ...], ref: Ref) -> None:
        if not ref.parts:
            return
        p = ref.parts[0]
        if p.kind in ("attr", "const") and str(p.value) not in self.r.vars:
            self.err(path, f"unknown var '{p.value}'",
                     suggest(str(p.value), self.r.vars)
                     or f"vars: {', '.join(self.r.vars) or 'none are defined'}", ref.line)

    def _check_step_ref(self, path: tuple[Any, ...], ref: Ref, sid: str | None) -> None:
        if not ref.parts:
            self.err(path, "'steps' must name a step, e.g. steps.song", None, ref.line)
            return
        p0 = ref.parts[0]
        if p0.kind == "expr":
            return
        x = str(p0.value)
        if x not in self.r.steps:
            self.err(path, f"unknown step '{x}' in {ref.text()}",
                     suggest(x, self.r.steps) or f"steps: {', '.join(self.r.steps)}", ref.line)
            return
        if x == sid:
            self.err(path, f"step '{x}' refers to its own outputs", None, ref.line)
            return
        n = self.fan_out(x)
        rest = list(ref.parts[1:])
        if x in self.broken:
            return
        if n is not None:
            if not rest:
                return  # the whole list of instances' outputs
            if rest[0].kind == "attr":
                self.err(path, f"steps.{x} is a fan-out of {n}; index it before naming an "
                         f"output", f"e.g. steps.{x}[index].{rest[0].value} or "
                         f"steps.{x}[0].{rest[0].value}", ref.line)
                return
            v = index_value(rest[0], None)
            if v is not None and not -n <= v < n:
                self.err(path, f"{ref.text(2)}: '{x}' has {n} instance"
                         f"{'s' if n != 1 else ''} (0-{n - 1})", None, ref.line)
            rest = rest[1:]
        elif rest and rest[0].kind in ("const", "expr") and not isinstance(rest[0].value, str):
            self.err(path, f"steps.{x} is a single step, not a list; it cannot be indexed",
                     f"name one of its outputs, e.g. steps.{x}.{_first_output(self.r.steps[x])}",
                     ref.line)
            return
        self._check_outputs(path, ref, x, rest, f"steps.{x}")

    def _check_outputs(self, path: tuple[Any, ...], ref: Ref, x: str, parts: list[Part],
                       shown: str) -> None:
        step = self.r.steps[x]
        if step.type is None:
            return  # a reusable recipe: checked when recipes are loaded (issue 7)
        typ: Any = step.type.outputs
        trail = shown
        for part in parts:
            if part.kind == "expr":
                if isinstance(typ, tuple):
                    typ = typ[1]
                    trail += "[…]"
                    continue
                return
            if isinstance(typ, dict):
                name = str(part.value)
                if name not in typ:
                    what = "output" if trail == shown else "field"
                    self.err(path, f"{trail} has no {what} '{name}' ({step.uses} outputs: "
                             f"{', '.join(typ)})" if what == "output" else
                             f"{trail} has no field '{name}' (fields: {', '.join(typ)})",
                             suggest(name, typ), ref.line)
                    return
                typ = typ[name]
                trail += f".{name}"
            elif isinstance(typ, tuple):
                if part.kind == "attr":
                    return  # a filter-like attribute of a list; let the render judge
                typ = typ[1]
                trail += f"[{part.value}]"
            else:
                return

    # --- dependencies ----------------------------------------------------------------

    def step_templates(self, step: Step) -> Iterator[tuple[tuple[Any, ...], str]]:
        base = ("steps", step.id)
        for p, src in templates_in(step.with_):
            yield (*base, "with", *p), src
        for key, val in (("if", step.if_), ("take", step.take)):
            if is_template(val):
                yield (*base, key), val


def _first_output(step: Step) -> str:
    return next(iter(step.type.outputs)) if step.type is not None else "<output>"


def build(recipe: Recipe) -> Plan:
    """Check and expand the recipe. Raises RecipeError with every problem found."""
    ck = _Checker(recipe)
    for sid in recipe.steps:
        ck.fan_out(sid)
    compiled: dict[str, list[tuple[tuple[Any, ...], Compiled]]] = {}
    step_deps: dict[str, set[str]] = {sid: set() for sid in recipe.steps}
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
    for o in recipe.outputs:
        base = ("outputs", o.index)
        _n, _items, frm = ck._loop(o.for_each, (*base, "for_each"), frozenset())
        for key, val in (("path", o.path), ("from", o.from_), ("lrc", o.lrc)):
            if val is not None and is_template(val):
                c = ck.compile((*base, key), val)
                if c is not None:
                    ck.item_from["\0out"] = frm
                    ck.check_refs((*base, key), c, "\0out" if frm else None,
                                  looped=o.for_each is not None)
        for tk, tv in o.tags.items():
            if is_template(tv):
                c = ck.compile((*base, "tags", tk), tv)
                if c is not None:
                    ck.item_from["\0out"] = frm
                    ck.check_refs((*base, "tags", tk), c, "\0out" if frm else None,
                                  looped=o.for_each is not None)
    ck.item_from.pop("\0out", None)
    if ck.diags:
        raise RecipeError(ck.diags)

    order = _order(ck, step_deps)
    if ck.diags:
        raise RecipeError(ck.diags)
    instances: dict[str, Instance] = {}
    for sid in order:
        step = recipe.steps[sid]
        fan = ck.fan[sid]
        indexes: list[int | None] = [None] if fan is None else list(range(fan))
        for i in indexes:
            iid = sid if i is None else f"{sid}[{i}]"
            deps: list[str] = []
            for path, c in compiled[sid]:
                for ref in c.refs:
                    if ref.root == "steps":
                        deps.extend(_ref_deps(ck, path, ref, i, iid))
            src: str | None = ck.item_from.get(sid)
            if src is not None and i is not None:
                deps.append(f"{src}[{i}]")
            for nd in step.needs:
                deps.extend(_all(ck, nd))
            loop_items = ck.items.get(sid)
            item = loop_items[i] if (i is not None and loop_items is not None) else None
            inst = Instance(iid, step, i, item, src, tuple(dict.fromkeys(deps)))
            instances[iid] = inst
            _static_limits(ck, recipe, inst)
    if ck.diags:
        raise RecipeError(ck.diags)
    return Plan(recipe, instances, ck.fan, step_deps)


def _all(ck: _Checker, sid: str) -> list[str]:
    n = ck.fan.get(sid)
    return [sid] if n is None else [f"{sid}[{j}]" for j in range(n)]


def _ref_deps(ck: _Checker, path: tuple[Any, ...], ref: Ref, i: int | None,
              iid: str) -> list[str]:
    if not ref.parts or ref.parts[0].kind == "expr":
        return [d for s in ck.r.steps for d in _all(ck, s) if s != path[1]]
    x = str(ref.parts[0].value)
    if x not in ck.r.steps:
        return []
    n = ck.fan[x]
    if n is None:
        return [x]
    if x in ck.broken:
        return []
    if len(ref.parts) < 2:
        return _all(ck, x)
    v = index_value(ref.parts[1], i)
    if v is None:
        return _all(ck, x)
    if not -n <= v < n:
        ck.err(path, f"{ref.text(2)} for {iid} refers to {x}[{v}], but '{x}' has {n} "
               f"instance{'s' if n != 1 else ''} (0-{n - 1})", None, ref.line)
        return []
    return [f"{x}[{v % n}]"]


def _order(ck: _Checker, deps: dict[str, set[str]]) -> list[str]:
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
    return step.uses == "convert" and step.with_.get("format", "wav") != "wav"


def _check_service_tracks(ck: _Checker, step: Step) -> None:
    kind = ck.r.provider.kind
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


def _check_provider(ck: _Checker, step: Step) -> None:
    _check_service_tracks(ck, step)
    kind = ck.r.provider.kind
    if step.type is not None and kind not in step.type.support:
        can = [k for k in step.type.support]
        ck.err(("steps", step.id, "uses"), f"step '{step.id}': provider '{kind}' cannot "
               f"perform '{step.uses}'", f"providers that can: {', '.join(can)}")


def _static_limits(ck: _Checker, recipe: Recipe, inst: Instance) -> None:
    """Model limits on inputs that can be rendered before the run (no step outputs)."""
    step = inst.step
    if step.type is None or (inst.index not in (None, 0) and inst.item is None):
        return
    ctx = context(recipe, inst, steps=None)
    values: dict[str, Any] = {}
    for k, v in step.with_.items():
        if is_template(v):
            c = compile_template(v)
            if any(r.root == "steps" for r in c.refs) or (
                    inst.item_from and any(r.root == "item" for r in c.refs)):
                continue
            try:
                values[k] = c.render(ctx)
            except TemplateError as exc:
                ck.err(("steps", step.id, "with", k), f"{inst.id}: {exc}")
                continue
        else:
            values[k] = v
    for fld, msg, hint in models.check(step.uses, values):
        where = ("steps", step.id, "with", fld)
        prefix = f"{inst.id}: " if inst.index is not None else ""
        ck.err(where if fld in step.with_ else ("steps", step.id), prefix + msg, hint)
    for where, text in paths.local_paths(values):
        try:
            ck.roots.resolve(text)
        except paths.Outside as exc:
            # A literal names the step (every instance says the same: one message); a value
            # rendered from `item` names the instance.
            rendered = any(True for _ in templates_in(step.with_.get(where[0])))
            who = inst.id if rendered and inst.index is not None else step.id
            ck.err(("steps", step.id, "with", *where), f"{paths.label(who, step.uses)}: {exc}")


def context(recipe: Recipe, inst: Instance, steps: Any) -> dict[str, Any]:
    ctx: dict[str, Any] = {"vars": recipe.vars, "steps": steps if steps is not None else {}}
    if inst.index is not None:
        ctx["index"] = inst.index
        ctx["item"] = inst.item
    return ctx


def render_inputs(recipe: Recipe, inst: Instance, steps: Any, item: Any = None) -> dict[str, Any]:
    ctx = context(recipe, inst, steps)
    if item is not None:
        ctx["item"] = item
    return {k: render(v, ctx) for k, v in inst.step.with_.items()}


def key(step_type: str, inputs: dict[str, Any], provider_kind: str, base_url: str | None,
        extra: dict[str, Any] | None = None) -> str:
    """The identity of a piece of paid work. Equal keys are the same work and are never run
    twice. Volatile fields (result URLs, which expire and are refreshed) are left out, and
    store paths appear as their content hash, so moving the state directory changes
    nothing."""
    blob = json.dumps([KEY_VERSION, step_type, canonical(inputs), provider_kind, base_url,
                       extra or {}], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


VOLATILE = frozenset({"audio_url", "image_url", "url", "stream_audio_url", "video_url"})


def canonical(value: Any) -> Any:
    if isinstance(value, dict):
        drop = VOLATILE if ("file" in value or "id" in value) else frozenset()
        return {k: canonical(v) for k, v in value.items() if k not in drop}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    if isinstance(value, str) and "/blobs/sha256/" in value:
        return "blob:" + value.rsplit("/", 1)[-1]
    return value

