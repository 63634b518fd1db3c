"""Reference checks for one recipe file: the length of each `for_each`, and what every
template may name (vars, steps and their outputs, fields of those, `item`, `index`, a
reusable recipe's inputs and the outputs of the recipes its steps use). Each problem is a
positioned diagnostic in that file; the plan (runner.plan.build) collects them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from runner.errors import Diagnostic
from runner.plan import fanin
from runner.recipe.messages import kind, show, suggest
from runner.recipe.model import Provider, Recipe, Step
from runner.recipe.source import at
from runner.recipe.template import (
    SCOPE,
    Compiled,
    Part,
    Ref,
    TemplateError,
    compile_template,
    index_value,
    is_template,
    templates_in,
)
from runner.steps import models
from runner.steps.types import TRACK


class Checker:
    """Checks one recipe file. `known`: the values of its inputs known before the run (the
    defaults for the recipe that is run, a call's known inputs for a reusable recipe whose
    loops use inputs); None to check a reusable recipe before any call of it is known,
    where a loop over inputs has a length yet to be known (`deferred`) and only what does
    not depend on it is checked (runner.plan.fanin)."""

    def __init__(self, recipe: Recipe, provider: Provider,
                 known: dict[str, Any] | None = None, note: str = "") -> None:
        self.r = recipe
        self.provider = provider  # the run's: a reusable recipe runs on its caller's
        self.known = known
        self.note = note  # appended to every message: which call a check is for
        self.deferred: set[str] = set()  # loops whose length depends on a call's inputs
        self.unset: dict[str, str] = {}  # step -> an input without default its loop uses
        self.doc = recipe.doc
        self.calls: dict[str, Unit] = {}  # call step id -> the checked callee
        self.diags: list[Diagnostic] = []
        self.fan: dict[str, int | None] = {}
        self.items: dict[str, list[Any] | None] = {}
        self.item_from: dict[str, str | None] = {}
        self.broken: set[str] = set()  # steps whose for_each failed: their length is unknown
        # The type of `item` in the album entry being checked, when its loop is a list the
        # outputs' types describe (`steps.all.tracks`, a flattened list of tracks).
        self.item_type: Any = None

    def err(self, path: tuple[Any, ...], msg: str, hint: str | None = None,
            line: int = 1, key: bool = False) -> None:
        self.diags.append(self.doc.diag(path, msg + self.note, hint, key=key,
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
                and c.refs[0].parts[0].kind in ("attr", "const") \
                and (c.is_ref or path[0] != "outputs"):
            x = str(c.refs[0].parts[0].value)
            if x not in self.r.steps:
                self.err(path, f"for_each refers to unknown step '{x}'",
                         suggest(x, self.r.steps))
                return 0, [], None
            if x in visiting:
                self.err(path, f"for_each over steps.{x} loops back to this step")
                return 0, [], None
            n = self.fan_out(x, visiting)
            if x in self.deferred and path[0] == "steps":
                self.deferred.add(path[1])
            if n is None:
                self.err(path, f"for_each over steps.{x}, but '{x}' is a single step, not a "
                         "fan-out", "for_each takes a list, vars, or '{{ steps.X }}' of a "
                         f"fan-out step; use {x}'s outputs in 'with' instead, e.g. "
                         f"audio: \"{{{{ steps.{x}.tracks[0] }}}}\"")
                return 0, [], None
            return n, None, x
        if roots - {"vars"} and path[0] == "outputs" and roots <= {"vars", "steps"}:
            # An album entry is written after the run, so its list may come from outputs
            # (e.g. a folder per stem: "{{ steps.stems.stems | dictsort }}").
            self.check_refs(path, c, None, looped=False)
            typ = self.loop_type(c)
            if isinstance(typ, dict):
                self.err(path, f"for_each over a mapping: '{fe}' gives one value per name "
                         f"({', '.join(list(typ)[:4])}{', ...' if len(typ) > 4 else ''}), "
                         "not a list", "loop over its pairs: add '| dictsort' (item[0] is "
                         "the name, item[1] the value)")
                return 0, [], None
            self.item_type = typ[1] if isinstance(typ, tuple) else None
            return None, None, None
        if roots - {"vars", "inputs"} or ("inputs" in roots and path[0] != "steps"):
            # (An album entry's loop is rendered after the run, where inputs are not seen.)
            self.err(path, "for_each may use vars, " + ("inputs, " if self.r.inputs and
                                                        path[0] == "steps" else "")
                     + "a literal list, or exactly '{{ steps.X }}' of a fan-out step X; its "
                     "length must be known before the run")
            return 0, [], None
        before = len(self.diags)
        self.check_refs(path, c, None)
        if len(self.diags) > before:
            self.broken.add(path[1] if path[0] == "steps" else "")
            return 0, [], None
        inputs: dict[str, Any] = {}
        if "inputs" in roots:
            if self.known is None:
                self.deferred.add(path[1])  # checked again at each call (runner.plan.expand)
                return 0, None, None
            missing = sorted(n for n in fanin.input_names(c, self.r) if n not in self.known)
            if missing:
                # Only the recipe that is run lacks a value (a call's are checked before,
                # runner.plan.fanin): its loop is checked as before any call, and planning it
                # for a run is refused (runner.plan.build.build, `unset`).
                self.deferred.add(path[1])
                self.unset[path[1]] = missing[0]
                return 0, None, None
            inputs = self.known
        try:
            value = c.render({"vars": self.r.vars, "inputs": inputs})
        except TemplateError as exc:
            self.err(path, f"for_each: {exc}")
            self.broken.add(path[1] if path[0] == "steps" else "")
            return 0, [], None
        if not isinstance(value, list):
            self.err(path, f"for_each must give a list; '{fe}' gives {kind(value)} "
                     f"{show(value)}")
            return 0, [], None
        return len(value), value, None

    # --- references ------------------------------------------------------------------

    def check_refs(self, path: tuple[Any, ...], c: Compiled, sid: str | None,
                   *, looped: bool | None = None) -> None:
        looped = (sid is not None and self.r.steps[sid].for_each is not None) \
            if looped is None else looped
        for name in sorted(c.names - set(SCOPE)):
            scoped = next((f"did you mean '{scope}.{name}'?" for scope, names in
                           (("vars", self.r.vars), ("inputs", self.r.inputs))
                           if name in names), None)
            self.err(path, f"unknown name '{name}' in template",
                     scoped or suggest(name, SCOPE) or "templates can use vars, steps, item "
                     "and index (never the environment)")
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
                elif ref.root == "item" and sid == "\0out" and self.item_type is not None:
                    self._check_fields(path, ref, self.item_type, list(ref.parts), "item")
            elif ref.root == "inputs":
                self._check_input(path, ref)

    def _check_input(self, path: tuple[Any, ...], ref: Ref) -> None:
        if not self.r.inputs:
            self.err(path, "'inputs' is only defined in a reusable recipe that declares "
                     "inputs", None, ref.line)
            return
        p = ref.parts[0] if ref.parts else None
        if p is not None and p.kind in ("attr", "const") and str(p.value) not in self.r.inputs:
            self.err(path, f"unknown input '{p.value}'",
                     suggest(str(p.value), self.r.inputs)
                     or f"inputs: {', '.join(self.r.inputs)}", ref.line)

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
            # A deferred loop's length depends on the call: each call's check judges it.
            if v is not None and not -n <= v < n and x not in self.deferred:
                self.err(path, f"{ref.text(2)}: '{x}' has {n} instance"
                         f"{'s' if n != 1 else ''} (0-{n - 1})", None, ref.line)
            rest = rest[1:]
        elif rest and rest[0].kind in ("const", "expr") and not isinstance(rest[0].value, str):
            self.err(path, f"steps.{x} is a single step, not a list; it cannot be indexed",
                     f"name one of its outputs, e.g. steps.{x}.{first_output(self, x)}",
                     ref.line)
            return
        self._check_outputs(path, ref, x, rest, f"steps.{x}")

    def _check_outputs(self, path: tuple[Any, ...], ref: Ref, x: str, parts: list[Part],
                       shown: str) -> None:
        step = self.r.steps[x]
        typ: Any = self.outputs_of(x)
        if typ is None:
            return  # a call whose recipe did not load: reported there
        trail = shown
        count: int | None = None  # how many items the list at hand holds, when known
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
                    if trail != shown:
                        msg = f"{trail} has no field '{name}' (fields: {', '.join(typ)})"
                    elif step.callee is not None:
                        callee = step.callee
                        msg = (f"{trail} has no output '{name}' ({callee.file} outputs: "
                               f"{', '.join(typ)}; declared at "
                               f"{at(callee.doc, ('outputs',), key=True)})" if typ else
                               f"{trail} has no output '{name}' ({callee.file} declares no "
                               f"outputs; see {at(callee.doc, ())})")
                    else:
                        msg = f"{trail} has no output '{name}' ({step.uses} outputs: " \
                              f"{', '.join(typ)})"
                    self.err(path, msg, suggest(name, typ), ref.line)
                    return
                typ = typ[name]
                count = models.takes(step.type, step.take) \
                    if trail == shown and name == "tracks" else None
                trail += f".{name}"
            elif isinstance(typ, tuple):
                if part.kind == "attr":
                    return  # a filter-like attribute of a list; let the render judge
                if count is not None and isinstance(part.value, int) \
                        and not isinstance(part.value, bool) and not -count <= part.value < count:
                    kept = " (take keeps one)" if count == 1 and step.type is not None \
                        and step.type.pace == "music" else ""
                    self.err(path, f"{trail}[{part.value}] cannot exist: {step.uses} gives "
                             f"{count} track{'s' if count != 1 else ''}{kept}",
                             f"tracks[0]{' or tracks[1]' if count == 2 else ''}", ref.line)
                    return
                count = None
                typ = typ[1]
                trail += f"[{part.value}]"
            else:
                return

    def _check_fields(self, path: tuple[Any, ...], ref: Ref, typ: Any, parts: list[Part],
                      trail: str) -> None:
        """`parts` against an output type that is not a step's own outputs (the item of a
        loop over a list of tracks, say)."""
        for part in parts:
            if part.kind == "expr" and isinstance(typ, tuple):
                typ, trail = typ[1], trail + "[…]"
            elif isinstance(typ, dict) and part.kind != "expr":
                name = str(part.value)
                if name not in typ:
                    what = "a track" if typ is TRACK else trail
                    self.err(path, f"{trail} has no field '{name}' ({what} has: "
                             f"{', '.join(typ)})", suggest(name, typ), ref.line)
                    return
                typ, trail = typ[name], f"{trail}.{name}"
            elif isinstance(typ, tuple) and part.kind == "const":
                typ, trail = typ[1], f"{trail}[{part.value}]"
            else:
                return

    def loop_type(self, c: Compiled) -> Any:
        """The type of an album loop's list: one reference (`steps.one.tracks`), or one
        through list filters that keep what the list holds (`sort`, `list`, ...), take a
        field of each (`map(attribute='tracks')`) or flatten (`sum(start=[])`). None when
        it cannot be told."""
        if c.is_ref:
            return self.ref_type(c)
        if len(c.refs) != 1 or c.refs[0].root != "steps":
            return None
        import jinja2
        from jinja2 import nodes

        try:
            body = jinja2.Environment().parse(c.source).body
        except jinja2.TemplateError:
            return None
        if len(body) != 1 or not isinstance(body[0], nodes.Output) \
                or len(body[0].nodes) != 1:
            return None

        def of(node: Any) -> Any:
            if not isinstance(node, nodes.Filter):
                return self.ref_type(compile_template("{{ " + c.refs[0].text() + " }}"))
            inner = of(node.node)
            if not isinstance(inner, tuple):
                return None
            kw: dict[str, Any] = {str(k.key): k.value.value for k in node.kwargs
                                  if isinstance(k.value, nodes.Const)}
            kw |= {str(k.key): [] for k in node.kwargs
                   if isinstance(k.value, nodes.List) and not k.value.items}
            if node.name in ("list", "sort", "reverse", "unique", "selectattr", "rejectattr"):
                return inner
            if node.name == "map" and isinstance(inner[1], dict) \
                    and kw.get("attribute") in inner[1]:
                return ("list", inner[1][kw["attribute"]])
            if node.name == "sum" and kw.get("start") == [] and isinstance(inner[1], tuple):
                return inner[1]
            return None

        return of(body[0].nodes[0])

    def outputs_of(self, x: str) -> dict[str, Any] | None:
        """What step `x` outputs: its type's outputs, or for a call, the callee's outputs
        with the type of each where it names a step's output directly."""
        step = self.r.steps[x]
        if step.type is not None:
            return step.type.outputs
        unit = self.calls.get(x)
        return unit.output_types() if unit is not None else None

    def ref_type(self, c: Compiled) -> Any:
        """The type of a template that is exactly one reference to a step's output, or
        None when it cannot be known before the run."""
        if not c.is_ref or c.refs[0].root != "steps":
            return None
        parts = list(c.refs[0].parts)
        if not parts or parts[0].kind not in ("attr", "const") or str(parts[0].value) \
                not in self.r.steps:
            return None
        x = str(parts[0].value)
        typ: Any = self.outputs_of(x)
        rest = parts[1:]
        if self.fan.get(x) is not None:
            if rest and (rest[0].kind == "expr" or isinstance(rest[0].value, int)):
                rest = rest[1:]
            else:
                typ = ("list", typ)
        for part in rest:
            if isinstance(typ, dict) and part.kind != "expr" and str(part.value) in typ:
                typ = typ[str(part.value)]
            elif isinstance(typ, tuple) and (part.kind == "expr"
                                             or isinstance(part.value, int)):
                typ = typ[1]
            else:
                return None
        return typ

    # --- dependencies ----------------------------------------------------------------

    def step_templates(self, step: Step) -> Iterator[tuple[tuple[Any, ...], str]]:
        base = ("steps", step.id)
        for p, src in templates_in(step.with_):
            yield (*base, "with", *p), src
        for key, val in (("if", step.if_), ("take", step.take)):
            if is_template(val):
                yield (*base, key), val


def first_output(ck: Checker, x: str) -> str:
    outs = ck.outputs_of(x)
    return next(iter(outs), "<output>") if outs else "<output>"


@dataclass
class Unit:
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
