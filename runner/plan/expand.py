"""Expanding a checked recipe into instances: `for_each` into one instance per value, each
call of a reusable recipe into the callee's own instances between its two ends, and per
instance the dependencies its templates name (`song[2]` waits for `words[2]` only when it
says `steps.words[index]`), with those it reads only through their first track (early
release). Model limits on the values known before the run are checked here, per instance.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from runner import paths
from runner.errors import Diagnostic
from runner.plan import fanin
from runner.plan.model import ENTER, Instance, Scope, context, direct, static
from runner.plan.refs import Checker, Unit
from runner.plan.unit import check_unit, type_message
from runner.recipe.model import NO_DEFAULT, Recipe, Step, fits
from runner.recipe.source import at
from runner.recipe.template import (
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


class Expander:
    """Makes the instances of a checked recipe, and of every call in it, in order."""

    def __init__(self, top: Recipe, units: dict[tuple[Path, str | None], Unit]) -> None:
        self.top = top
        self.units = units  # the checked recipes (runner.plan.unit.check_unit's cache)
        self.instances: dict[str, Instance] = {}
        self.scopes: dict[str, Scope] = {}
        self.diags: list[Diagnostic] = []

    def unit(self, u: Unit, prefix: str, enter: str | None, known: dict[str, Any],
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

    def called(self, u: Unit, start: Instance, known: dict[str, Any],
               late: set[str]) -> Unit | None:
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
        checked = check_unit(inner.recipe, u.ck.provider, self.units, known, note)
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
            if not all(static(compile_template(t), start, known) for t in texts):
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
                                              type_message(step, name, value,
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
            for d in direct(self.instances, inst):
                s |= paths_of(d)
            s.discard(inst.path)
        return out



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


def makes_takes(step: Step) -> bool:
    """A step whose result is two takes to choose from (a music step's `tracks`)."""
    t = TYPES.get(step.uses or "")
    return t is not None and t.pace == "music"


def _static_limits(ck: Checker, recipe: Recipe, inst: Instance, known: dict[str, Any],
                   ex: Expander) -> None:
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
            if not static(c, inst, known):
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


def _from_input(ex: Expander, inst: Instance, src: Any) -> tuple[Any, tuple[Any, ...]] | None:
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
