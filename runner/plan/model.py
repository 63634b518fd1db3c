"""The plan as the engine, the store and the reports read it: each instance of a step
(`song[2]`, `song[2]/long`, a call's two ends), the scopes their templates render in, and
what is known of them before the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from runner.recipe.model import Recipe, Step
from runner.recipe.template import Compiled, TemplateError, compile_template, is_template

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
        for d in direct(self.instances, inst):
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
        if not static(c, inst, known):
            return default
        try:
            return c.render(context(scope.recipe if scope else self.recipe, inst, None, known))
        except TemplateError:
            return default

    def steps(self) -> list[Instance]:
        """The instances that do work (no call ends)."""
        return [i for i in self.instances.values() if i.kind == "step"]


def direct(instances: dict[str, Instance], inst: Instance) -> tuple[str, ...]:
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


def static(c: Compiled, inst: Instance, known: dict[str, Any]) -> bool:
    """Whether a template can be rendered before the run: no step outputs, no item that
    comes from one, no input whose value is not known yet."""
    for ref in c.refs:
        if ref.root == "steps" or (ref.root == "item" and inst.item_from):
            return False
        if ref.root == "inputs" and (not ref.parts or str(ref.parts[0].value) not in known):
            return False
    return True


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
