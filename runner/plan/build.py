"""The plan: expand `for_each` into instances, check every reference, find dependencies,
order the graph, and compute each instance's key.

Checks made here (and, for what a template may refer to, in runner.plan.refs), before
anything runs: template syntax and names, references to unknown steps, vars, inputs or
outputs (with a suggestion), indexes out of range for fan-outs of known length,
`item`/`index` outside a `for_each`, `needs` on a missing step, cycles, a step type the
provider cannot perform, model limits on inputs whose values are known already, and each
use of a reusable recipe against what it declares (inputs, their types, its outputs, and
for a loop over its inputs, that their values are known before the run).

Dependencies are per instance: `song[2]` waits for `words[2]` only when its templates
say `steps.words[index]`, so one slow track does not hold up the others.

A step that uses a reusable recipe is expanded here, per instance, into the callee's own
instances, `song[2]/long` (`song/long` with no fan-out), between two ends that do no work:
`song[2]:inputs` renders the call's `with` once its dependencies are done (every inner
instance waits for it), and `song[2]` renders the callee's `outputs` once every inner
instance is done (the call is one step: what the caller's templates and `needs` wait
for). Inner instances are
ordinary instances with ordinary keys, so caching, the journal and resume need nothing
more.
"""

from __future__ import annotations

import graphlib
import hashlib
import json
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from runner import paths
from runner.errors import Diagnostic, RecipeError
from runner.paths import Roots
from runner.plan import fanin
from runner.plan.refs import Checker
from runner.recipe.bulk import building
from runner.recipe.include import INPUT_TYPES, at, fits
from runner.recipe.load import NO_DEFAULT, Provider, Recipe, Step, _got, suggest
from runner.recipe.template import (
    Compiled,
    Ref,
    TemplateError,
    compile_template,
    index_value,
    is_template,
    render,
    templates_in,
)
from runner.steps import models
from runner.steps.types import TYPES

KEY_VERSION = "sunoflow-key-1"
ENTER = ":inputs"  # suffix of a call's first end: `song[2]:inputs`


@dataclass(frozen=True, slots=True)
class Instance:
    id: str
    step: Step
    index: int | None
    item: Any = None  # the loop value, when it is known before the run
    item_from: str | None = None  # for `for_each: steps.X`: X's id (with its call prefix)
    deps: tuple[str, ...] = ()
    scope: str = ""  # "" at the top; "song[2]/" for the instances of that call
    path: str = ""  # the step's path, without indexes: "song/long"; the step id at the top
    kind: str = "step"  # "step", or a call's two ends: "enter" (`with`), "leave" (outputs)
    # Of `deps`, the music steps this one reads only through their first track
    # (`tracks[0]`, `file`, `task_id`): it may start when that track is ready (the task's
    # `first` stage, by callback or poll), before the other take is (runner.engine, "early
    # release").
    early: tuple[str, ...] = ()

    @property
    def call(self) -> str:
        """The call an end belongs to, as people name it (`song[2]`)."""
        return self.id[:-len(ENTER)] if self.kind == "enter" else self.id


@dataclass(frozen=True)
class Scope:
    """The recipe whose templates an instance renders: the top one (prefix ""), or one call
    of a reusable recipe (prefix "song[2]/")."""

    prefix: str
    recipe: Recipe
    fan: dict[str, int | None]
    enter: str | None = None  # the call's enter instance; None at the top
    known: dict[str, Any] = field(default_factory=dict)  # inputs known before the run


@dataclass
class Plan:
    recipe: Recipe
    instances: dict[str, Instance]  # in a topological order
    fan: dict[str, int | None]  # step id -> number of instances, None for a single step
    step_deps: dict[str, set[str]] = field(default_factory=dict)  # by step path
    scopes: dict[str, Scope] = field(default_factory=dict)

    def of_step(self, sid: str) -> list[Instance]:
        n = self.fan[sid]
        if n is None:
            return [self.instances[sid]]
        return [self.instances[f"{sid}[{i}]"] for i in range(n)]

    @property
    def paths(self) -> set[str]:
        """What --only and --force accept: step ids, and `call/inner` paths."""
        return set(self.step_deps)

    def _under(self, paths: set[str]) -> set[str]:
        """Every path inside the calls named (a call stands for all of its steps)."""
        return {p for p in self.step_deps if any(p.startswith(q + "/") for q in paths)}

    def downstream(self, sids: set[str]) -> set[str]:
        """Step paths that depend on any of `sids`, transitively, including them and
        everything inside a call they name."""
        out = set(sids) | self._under(sids)
        changed = True
        while changed:
            changed = False
            for s, deps in self.step_deps.items():
                if s not in out and deps & out:
                    out.add(s)
                    changed = True
        return out

    def upstream(self, sids: set[str]) -> set[str]:
        out = set(sids) | self._under(sids)
        stack = list(out)
        while stack:
            for d in self.step_deps.get(stack.pop(), ()):
                if d not in out:
                    out.add(d)
                    stack.append(d)
        return out

    def select(self, only: set[str]) -> set[str]:
        """Instance ids that `--only` keeps: the paths named, what they need, and the
        entry of every call they reach into."""
        keep = self.upstream(only)
        return {i.id for i in self.instances.values()
                if i.path in keep and i.kind != "enter"
                or i.kind == "enter" and any(k == i.path or k.startswith(i.path + "/")
                                             for k in keep)}

    def waits_for(self, inst: Instance) -> list[str]:
        """The instances `inst` waits for, as people see them: a call's entry stands for
        what it waits for itself."""
        out: list[str] = []
        for d in _direct(self.instances, inst):
            dep = self.instances[d]
            out.extend(self.waits_for(dep) if dep.kind == "enter" else [d])
        return list(dict.fromkeys(out))

    def static_value(self, inst: Instance, name: str, default: Any = None) -> Any:
        """A `with` value of `inst` as known before the run (rendered when it needs no
        step's outputs), or `default` when it cannot be known yet."""
        return self._static_render(inst, inst.step.with_.get(name, default), default)

    def static_condition(self, inst: Instance) -> bool | None:
        """Whether a step instance's `if:` holds, when that is known before the run (it
        needs no step's outputs); None when it is not. (A call's entry: always None.)"""
        if inst.kind != "step":
            return None
        cond = self._static_render(inst, inst.step.if_, None)
        return None if cond is None else truthy(cond)

    def _static_render(self, inst: Instance, v: Any, default: Any) -> Any:
        if not is_template(v):
            return v
        scope = self.scopes.get(inst.scope)
        known = scope.known if scope is not None else {}
        c = compile_template(v)
        if not _static(c, inst, known):
            return default
        try:
            return c.render(context(scope.recipe if scope else self.recipe, inst, None, known))
        except TemplateError:
            return default

    def steps(self) -> list[Instance]:
        """The instances that do work (no call ends)."""
        return [i for i in self.instances.values() if i.kind == "step"]


@dataclass
class _Unit:
    """One recipe file, checked once however often it is used (a reusable recipe whose
    loops use inputs: once per distinct value of those, runner.plan.fanin): its fan-outs,
    compiled templates, order, and the checked recipes its steps use."""

    recipe: Recipe
    ck: Checker
    compiled: dict[str, list[tuple[tuple[Any, ...], Compiled]]] = field(default_factory=dict)
    step_deps: dict[str, set[str]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    exposed: dict[str, Compiled] = field(default_factory=dict)  # its outputs, compiled
    _types: dict[str, Any] | None = None

    def output_types(self) -> dict[str, Any]:
        """Each output's type where it names a step's output directly, else "any" (not
        checked further). Outputs that did not compile were reported; they count as any."""
        if self._types is None:
            self._types = {n: "any" for n in self.recipe.exposed}
            self._types.update({n: self.ck.ref_type(c) or "any"
                                for n, c in self.exposed.items()})
        return self._types


def output_types(recipe: Recipe) -> dict[str, Any]:
    """A reusable recipe's outputs, with the type of each that names a step's output
    directly (what `sunoflow steps RECIPE` lists; the checker judges callers by it)."""
    return _check_unit(recipe, recipe.provider, {}, None).output_types()


@building
def build(recipe: Recipe, *, partial: bool = False) -> Plan:
    """Check and expand the recipe. Raises RecipeError with every problem found (each
    once, however many checks of a file found it). A reusable recipe whose loop uses an
    input without default has no length to plan that loop with: `partial` (validate)
    checks everything else and plans the loop empty; otherwise it is refused."""
    units: dict[tuple[Path, str | None], _Unit] = {}
    top = _check_unit(recipe, recipe.provider, units, recipe.input_defaults())
    diags = [d for u in units.values() for d in u.ck.diags]
    if not partial:
        diags += [recipe.doc.diag(("steps", sid, "for_each"), f"for_each uses input "
                                  f"'{name}', which has no default: its length is known only "
                                  "where a recipe uses this one", f"give '{name}' a default "
                                  "to plan or run this recipe on its own, or use it from "
                                  "another (uses: ./path/to/it.yaml, with: {...})")
                  for sid, name in top.ck.unset.items()]
    if diags:
        raise RecipeError(diags)
    if top.ck.unset:  # partial: what needs the loops' lengths waits for a call
        return Plan(recipe, {}, top.ck.fan, {}, {})
    ex = _Expander(recipe, units)
    ex.unit(top, "", None, recipe.input_defaults(), "")
    diags = [d for u in units.values() for d in u.ck.diags] + ex.diags
    if recipe.takes:
        from runner.recipe import takes

        music = {iid: i.kind == "step" and _makes_takes(i.step)
                 for iid, i in ex.instances.items() if i.kind == "step"}
        diags += takes.unknown(recipe.takes, recipe.takes_doc, music, suggest)
    if diags:
        raise RecipeError(diags)
    return Plan(recipe, ex.instances, top.ck.fan, ex.path_deps(), ex.scopes)


def _check_unit(recipe: Recipe, provider: Provider, units: dict[tuple[Path, str | None], _Unit],
                known: dict[str, Any] | None = None, note: str = "") -> _Unit:
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
    unit = _Unit(recipe, ck)
    units[ident] = unit
    for sid, step in recipe.steps.items():
        if step.callee is not None:
            ck.calls[sid] = _check_unit(step.callee, provider, units)
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
            ck.err(("steps", sid, "with", k), _type_message(step, k, v))
    raw = ck.doc.data["steps"][sid]
    for name, spec in callee.inputs.items():
        if spec.required and spec.default is NO_DEFAULT and name not in step.with_:
            where = ("steps", sid, "with") if "with" in raw else ("steps", sid)
            ck.err(where, f"step '{sid}' ({step.uses}) needs input '{name}' in 'with' "
                   f"(declared at {at(callee.doc, ('inputs', name), key=True)})",
                   f"{name}: {spec.description}" if spec.description else None, key=True)


def _type_message(step: Step, name: str, value: Any, prefix: str = "") -> str:
    callee = step.callee
    assert callee is not None
    spec = callee.inputs[name]
    return (f"{prefix}steps.{step.id}.with.{name}: input '{name}' of {callee.file} must be "
            f"{INPUT_TYPES.get(spec.type, spec.type)}; got {_got(value)} (declared at "
            f"{at(callee.doc, ('inputs', name), key=True)})")


class _Expander:
    """Makes the instances of a checked recipe, and of every call in it, in order."""

    def __init__(self, top: Recipe, units: dict[tuple[Path, str | None], _Unit]) -> None:
        self.top = top
        self.units = units  # the checked recipes (runner.plan.build._check_unit's cache)
        self.instances: dict[str, Instance] = {}
        self.scopes: dict[str, Scope] = {}
        self.diags: list[Diagnostic] = []

    def unit(self, u: _Unit, prefix: str, enter: str | None, known: dict[str, Any],
             path: str) -> list[str]:
        """Make the instances of unit `u` under `prefix`, and return the ids of those at
        this level (steps and calls, not their insides). `known`: the inputs whose values
        are known before the run (for the static checks)."""
        ck, r = u.ck, u.recipe
        takes = self.top.takes
        mine: list[str] = []
        self.scopes[prefix] = Scope(prefix, r, ck.fan, enter, known)
        for sid in u.order:
            step = r.steps[sid]
            fan = ck.fan[sid]
            src = ck.item_from.get(sid)
            loop_items = ck.items.get(sid)
            indexes: list[int | None] = [None] if fan is None else list(range(fan))
            for i in indexes:
                local = sid if i is None else f"{sid}[{i}]"
                deps: list[str] = []
                whole: set[str] = set()  # deps read beyond their first track
                item_first = True  # every `item` reference reads only the first track
                for tpath, c in u.compiled[sid]:
                    for ref in c.refs:
                        if ref.root == "steps":
                            got = _ref_deps(ck, tpath, ref, i, local)
                            deps.extend(got)
                            if not _first_track_ref(ck, ref):
                                whole.update(got)
                        elif ref.root == "item":
                            item_first = item_first and _first_track(ref.parts)
                if src is not None and i is not None:
                    deps.append(f"{src}[{i}]")
                    if not item_first:
                        whole.add(f"{src}[{i}]")
                for nd in step.needs:
                    got = _all(ck, nd)
                    deps.extend(got)
                    whole.update(got)  # `needs` waits for the whole step
                # A take kept for one song (runner.recipe.takes) counts as that instance's
                # `take:`: a step reading `tracks[0]` of a song whose kept take is 1 must
                # wait for the whole task, not start from its first track.
                early = [d for d in dict.fromkeys(deps) if d not in whole and
                         _staged(r.steps[d.split("[", 1)[0]], takes.get(prefix + d))] \
                    if step.callee is None else []
                if prefix:
                    deps = [prefix + d for d in deps]
                    early = [prefix + d for d in early]
                if enter is not None:
                    deps.append(enter)  # every inner instance waits for its call's inputs
                item = loop_items[i] if (i is not None and loop_items is not None) else None
                kept = takes.get(prefix + local)
                inst = Instance(prefix + local, step if kept is None else replace(step, take=kept),
                                i, item,
                                prefix + src if src is not None else None,
                                tuple(dict.fromkeys(deps)), prefix, path + sid,
                                early=tuple(early))
                mine.append(inst.id)
                if step.callee is None:
                    self.instances[inst.id] = inst
                    _static_limits(ck, r, inst, known, self)
                    continue
                start = replace(inst, id=inst.id + ENTER, kind="enter")
                self.instances[start.id] = start
                inner_known, late = self.call_inputs(ck, start, known)
                called = self.called(u, start, inner_known, late)
                # A call is one step: it ends when every step of it has (a nested call's
                # end stands for the steps inside it).
                inside = [] if called is None else self.unit(
                    called, inst.id + "/", start.id, inner_known, path + sid + "/")
                self.instances[inst.id] = replace(inst, deps=(*inside, start.id), kind="leave")
        return mine

    def called(self, u: _Unit, start: Instance, known: dict[str, Any],
               late: set[str]) -> _Unit | None:
        """The checked recipe one call runs: the file's one check, or for a recipe whose
        loops use inputs, its check for this call's values of them (None when the call is
        refused: those values are not known before the run, or a loop gets no list)."""
        inner = u.ck.calls[start.step.id]
        if not fanin.loop_inputs(inner.recipe):
            return inner
        step = start.step
        prefix = f"{start.call}: " if start.index is not None or start.scope else ""
        refused = fanin.check_call(u.recipe, step.id, inner.recipe, known, late, prefix)
        if refused:
            self.diags.extend(refused)
            return None
        given = sorted(n for n in fanin.loop_inputs(inner.recipe) if n in step.with_)
        note = f" (for the call {start.call} at " \
            f"{at(u.recipe.doc, ('steps', step.id, 'with', given[0]))})" if given else ""
        checked = _check_unit(inner.recipe, u.ck.provider, self.units, known, note)
        return None if checked.ck.diags else checked

    def call_inputs(self, ck: Checker, start: Instance,
                    known: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
        """The inputs of one call whose values are known before the run (defaults, and
        `with` values that need no step's outputs), and those given by a template that
        needs the run. Their types are checked here."""
        step = start.step
        callee = step.callee
        assert callee is not None
        ctx = context(ck.r, start, None, known)
        out: dict[str, Any] = {}
        late: set[str] = set()
        for name, spec in callee.inputs.items():
            if name not in step.with_:
                if spec.default is not NO_DEFAULT or not spec.required:
                    out[name] = None if spec.default is NO_DEFAULT else spec.default
                continue
            v = step.with_[name]
            texts = [t for _p, t in templates_in(v)]
            if not texts:
                out[name] = v
                if spec.type == "file" and isinstance(v, str) and not start.scope \
                        and not (self.top.path.parent / v).is_file():
                    self.diags.append(ck.doc.diag(
                        ("steps", step.id, "with", name), f"steps.{step.id}.with.{name}: no "
                        f"file '{v}' beside {self.top.file}", "a file input is a path "
                        "relative to the folder of the recipe that is run"))
                continue  # literal types were checked with the recipe
            if not all(_static(compile_template(t), start, known) for t in texts):
                late.add(name)
                continue
            try:
                value = render(v, ctx)
            except TemplateError as exc:
                self.diags.append(ck.doc.diag(("steps", step.id, "with", name),
                                              f"{start.call}: {exc}"))
                continue
            if value is not None and not fits(spec.type, value):
                self.diags.append(ck.doc.diag(("steps", step.id, "with", name),
                                              _type_message(step, name, value,
                                                            f"{start.call}: ")))
                continue
            out[name] = value
        return out, late

    def path_deps(self) -> dict[str, set[str]]:
        """Step path -> the step paths it waits for (a call's entry is transparent)."""
        out: dict[str, set[str]] = {}
        seen: dict[str, set[str]] = {}  # entry id -> the paths it stands for

        def paths_of(iid: str) -> set[str]:
            dep = self.instances[iid]
            if dep.kind != "enter":
                return {dep.path}
            if iid not in seen:
                seen[iid] = {p for d in dep.deps for p in paths_of(d)}
            return seen[iid]

        for inst in self.instances.values():
            if inst.kind == "enter":
                continue
            s = out.setdefault(inst.path, set())
            for d in _direct(self.instances, inst):
                s |= paths_of(d)
            s.discard(inst.path)
        return out


def _direct(instances: dict[str, Instance], inst: Instance) -> tuple[str, ...]:
    """`inst`'s dependencies, without its call's entry when it waits for another instance
    of the call too (which waits for the entry itself)."""
    if inst.kind == "leave":
        enter = inst.id + ENTER
    elif inst.kind == "step" and inst.scope:
        enter = inst.scope[:-1] + ENTER
    else:
        return inst.deps
    if len(inst.deps) < 2 or enter not in inst.deps:
        return inst.deps
    return tuple(d for d in inst.deps if d != enter)


def _static(c: Compiled, inst: Instance, known: dict[str, Any]) -> bool:
    """Whether a template can be rendered before the run: no step outputs, no item that
    comes from one, no input whose value is not known yet."""
    for ref in c.refs:
        if ref.root == "steps" or (ref.root == "item" and inst.item_from):
            return False
        if ref.root == "inputs" and (not ref.parts or str(ref.parts[0].value) not in known):
            return False
    return True


def _all(ck: Checker, sid: str) -> list[str]:
    n = ck.fan.get(sid)
    return [sid] if n is None else [f"{sid}[{j}]" for j in range(n)]


def _ref_deps(ck: Checker, path: tuple[Any, ...], ref: Ref, i: int | None,
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


def _first_track(parts: tuple[Any, ...] | list[Any]) -> bool:
    """Whether a reference into one step's outputs reads only its first track: `tracks[0]`
    (and anything under it), `file` (the first track's file) or `task_id`."""
    if not parts or parts[0].kind == "expr":
        return False
    head = parts[0].value
    if head in ("file", "task_id"):
        return True
    return head == "tracks" and len(parts) > 1 and parts[1].kind == "const" and \
        parts[1].value == 0 and not isinstance(parts[1].value, bool)


def _first_track_ref(ck: Checker, ref: Ref) -> bool:
    """`steps.X...` reading only the first track of X (of each instance it names)."""
    parts = ref.parts
    if not parts or parts[0].kind == "expr" or str(parts[0].value) not in ck.r.steps:
        return False
    if ck.fan.get(str(parts[0].value)) is None:
        return _first_track(parts[1:])
    return len(parts) > 1 and parts[1].kind != "attr" and _first_track(parts[2:])


def _staged(step: Step, kept: int | None = None) -> bool:
    """A music step whose service reports its first track before the second (its `first`
    stage), read with its first take: only those can release a step early. `kept`: the
    take kept for this instance (runner.recipe.takes), which stands for the step's `take:`."""
    t = TYPES.get(step.uses or "")
    take = step.take if kept is None else kept
    return t is not None and t.pace == "music" and take in ("both", 0) and \
        step.callee is None


def _makes_takes(step: Step) -> bool:
    """A step whose result is two takes to choose from (a music step's `tracks`)."""
    t = TYPES.get(step.uses or "")
    return t is not None and t.pace == "music"


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


def _static_limits(ck: Checker, recipe: Recipe, inst: Instance, known: dict[str, Any],
                   ex: _Expander) -> None:
    """Model limits on inputs that can be rendered before the run (no step outputs, no
    input of a call whose value is not known yet)."""
    step = inst.step
    if step.type is None or (inst.index not in (None, 0) and inst.item is None):
        return
    ctx = context(recipe, inst, None, known)
    values: dict[str, Any] = {}
    for k, v in step.with_.items():
        if is_template(v):
            c = compile_template(v)
            if not _static(c, inst, known):
                # Known only during the run: the rules that depend on it are checked by
                # the engine when it is rendered, before the step's request.
                values[k] = models.UNKNOWN
                continue
            try:
                values[k] = c.render(ctx)
            except TemplateError as exc:
                ck.err(("steps", step.id, "with", k), f"{inst.id}: {exc}")
                values[k] = models.UNKNOWN
                continue
        else:
            values[k] = v
    if values.get("audio") is models.UNKNOWN:
        values["audio"] = _known_source(ck, step)
    kind = ck.provider.kind if step.type.support.get(ck.provider.kind) == "remote" \
        else "local"
    raw = ck.doc.data["steps"].get(step.id) if isinstance(ck.doc.data.get("steps"), dict) \
        else None
    for fld, msg, hint in models.check(step.uses, values, kind):
        where = ("steps", step.id, "with", fld)
        prefix = f"{inst.id}: " if inst.index is not None or inst.scope else ""
        src = step.with_.get(fld)
        via = _from_input(ex, inst, src) if inst.scope else None
        if via is not None:
            # The value came from the caller: say so where the caller wrote it.
            doc, cpath = via
            ex.diags.append(doc.diag(cpath, f"{prefix}{msg} ({at(ck.doc, where)} uses it as "
                                     f"{fld})", hint))
        elif fld in step.with_:
            ck.err(where, prefix + msg, hint)
        else:
            # A missing field: point at the `with` key (or the step, without one).
            has_with = isinstance(raw, dict) and "with" in raw
            ck.err(("steps", step.id, "with") if has_with else ("steps", step.id),
                   prefix + msg, hint, key=True)
    for where, text in paths.local_paths(values):
        try:
            ex.top.roots.resolve(text)  # every local path: against the top recipe's folder
        except paths.Outside as exc:
            # A literal names the step (every instance says the same: one message); a value
            # rendered from `item` names the instance.
            rendered = any(True for _ in templates_in(step.with_.get(where[0])))
            who = inst.id if rendered and inst.index is not None else step.id
            ck.err(("steps", step.id, "with", *where), f"{paths.label(who, step.uses)}: {exc}")


class _Partial(dict[str, Any]):
    """A track known only in part before the run: every other field is UNKNOWN."""

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key, models.UNKNOWN)


def _known_source(ck: Checker, step: Step) -> Any:
    """What is known before the run of the track an extend continues: the model of a
    generate or upload_cover it names (`steps.X.tracks[i]`, or `item.tracks[i]` over X),
    which the service requires the extend to match (REFERENCE 2.2)."""
    if step.uses != "extend":
        return models.UNKNOWN
    try:
        c = compile_template(step.with_["audio"])
    except TemplateError:
        return models.UNKNOWN
    if not c.is_ref:
        return models.UNKNOWN
    ref = c.refs[0]
    parts = list(ref.parts)
    if ref.root == "steps" and parts and parts[0].kind != "expr":
        x: str | None = str(parts[0].value)
    elif ref.root == "item":
        x = ck.item_from.get(step.id)
    else:
        return models.UNKNOWN
    src = ck.r.steps.get(x or "")
    if src is None or src.uses not in ("generate", "upload_cover") or src.callee is not None:
        return models.UNKNOWN
    model = src.with_.get("model", models.DEFAULT_MODEL)
    if not isinstance(model, str) or is_template(model) or "mv" in src.with_:
        return models.UNKNOWN
    return _Partial(model=model)


def _from_input(ex: _Expander, inst: Instance, src: Any) -> tuple[Any, tuple[Any, ...]] | None:
    """Where the caller wrote the value of a callee's field that is `{{ inputs.NAME }}`."""
    if not isinstance(src, str) or not is_template(src):
        return None
    c = compile_template(src)
    if not c.is_ref or c.refs[0].root != "inputs" or not c.refs[0].parts:
        return None
    name = str(c.refs[0].parts[0].value)
    enter = ex.instances.get(ex.scopes[inst.scope].enter or "")
    if enter is None or name not in enter.step.with_:
        return None
    caller = ex.scopes[enter.scope].recipe
    return caller.doc, ("steps", enter.step.id, "with", name)


def truthy(cond: Any) -> bool:
    """What an `if:` means by its value: false, 0, empty and the strings "false", "0" and
    "" (any case, spaces around) are false."""
    return not (not cond or (isinstance(cond, str)
                             and cond.strip().lower() in ("false", "0", "")))


def context(recipe: Recipe, inst: Instance, steps: Any,
            inputs: dict[str, Any] | None = None) -> dict[str, Any]:
    ctx: dict[str, Any] = {"vars": recipe.vars, "steps": steps if steps is not None else {},
                           "inputs": inputs if inputs is not None else {}}
    if inst.index is not None:
        ctx["index"] = inst.index
        ctx["item"] = inst.item
    return ctx


def key(step_type: str, inputs: dict[str, Any], provider_kind: str, base_url: str | None,
        extra: dict[str, Any] | None = None) -> str:
    """The identity of a piece of paid work. Equal keys are the same work and are never run
    twice. Volatile fields (result URLs, which expire and are refreshed) are left out, and
    store paths appear as their content hash, so moving the state directory changes
    nothing."""
    blob = json.dumps([KEY_VERSION, step_type, canonical(inputs), provider_kind, base_url,
                       extra or {}], sort_keys=True, separators=(",", ":"), default=str)
    # Interned: the engine, the store and the journal's reader hold one string per key.
    return sys.intern(hashlib.sha256(blob.encode()).hexdigest()[:32])


VOLATILE = frozenset({"audio_url", "image_url", "url", "stream_audio_url", "stream_url",
                      "video_url"})


def canonical(value: Any) -> Any:
    if isinstance(value, dict):
        drop = VOLATILE if ("file" in value or "id" in value) else frozenset()
        return {k: canonical(v) for k, v in value.items() if k not in drop}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    if isinstance(value, str) and "/blobs/sha256/" in value:
        return "blob:" + value.rsplit("/", 1)[-1]
    return value

