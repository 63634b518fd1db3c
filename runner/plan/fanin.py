"""A reusable recipe whose `for_each` loops over its inputs (`for_each: "{{ inputs.songs }}"`):
which inputs its loops use, and, at each call, whether their values are known before the
run, as every loop's length must be.

The plan checks such a recipe once per distinct value of those inputs (runner.plan.unit,
`check_unit`), and first, here, each call that uses it: a value that is known only during
the run (it comes from a step's outputs) is refused, and so is a loop that would not get a
list; each message points at the call's `with` entry in the caller and at the callee's
`for_each`.
"""

from __future__ import annotations

import json
from typing import Any

from runner.errors import Diagnostic
from runner.recipe.messages import kind, show
from runner.recipe.model import Recipe
from runner.recipe.source import at
from runner.recipe.template import Compiled, TemplateError, compile_template, is_template


def input_names(c: Compiled, recipe: Recipe) -> frozenset[str]:
    """The inputs a compiled template uses (all the recipe's when it names one through an
    expression, `inputs[x]`)."""
    out: set[str] = set()
    for ref in c.refs:
        if ref.root == "inputs":
            p = ref.parts[0] if ref.parts else None
            out |= {str(p.value)} if p is not None and p.kind in ("attr", "const") \
                else set(recipe.inputs)
    return frozenset(out)


def loops(recipe: Recipe) -> dict[str, frozenset[str]]:
    """Step id -> the inputs its `for_each` uses, for the steps whose loop uses any."""
    out = {}
    for sid, step in recipe.steps.items():
        src = step.for_each
        if not isinstance(src, str) or not is_template(src):
            continue
        try:
            names = input_names(compile_template(src), recipe)
        except TemplateError:
            continue  # reported by the loader
        if names:
            out[sid] = names
    return out


def loop_inputs(recipe: Recipe) -> frozenset[str]:
    """Every input some `for_each` of the recipe uses."""
    return frozenset().union(*loops(recipe).values())


def cache_key(recipe: Recipe, known: dict[str, Any] | None) -> str | None:
    """What a check of `recipe` depends on beyond its file: the values of the inputs its
    loops use ("" when they use none, None for the check made before any call is known)."""
    names = loop_inputs(recipe)
    if not names:
        return ""
    if known is None:
        return None
    return json.dumps({n: known[n] for n in sorted(names) if n in known}, sort_keys=True,
                      default=str, separators=(",", ":"))


def check_call(caller: Recipe, sid: str, callee: Recipe, known: dict[str, Any],
               unknown: set[str], prefix: str) -> list[Diagnostic]:
    """One call of `callee` by step `sid` of `caller` (`prefix` names the instance, when it
    is one of several): every input a loop
    of the callee uses must be known before the run (`known`; `unknown` holds those given
    by a template that needs the run) and every such loop must give a list. A refusal of
    a value known only during the run is the same for every instance of the call: it
    names the step, so that it is shown once."""
    out: list[Diagnostic] = []
    for lsid, names in loops(callee).items():
        loop_at = at(callee.doc, ("steps", lsid, "for_each"))
        late = sorted(names & unknown)
        if late:
            name = late[0]
            out.append(caller.doc.diag(
                ("steps", sid, "with", name),
                f"steps.{sid}.with.{name}: input '{name}' of {callee.file} is known "
                f"only during the run (it comes from a step's outputs), but "
                f"steps.{lsid}.for_each at {loop_at} loops over it, and a loop's length must "
                "be known before the run",
                f"pass a literal list or vars ({name}: [a, b] or {name}: "
                f"\"{{{{ vars.x }}}}\"); or loop in the caller instead (for_each on "
                f"'{sid}', one call per item) and give {callee.file} one item"))
            continue
        given = sorted(n for n in names if n in caller.steps[sid].with_)
        if not given or not names <= known.keys():
            continue  # a default (checked with the callee) or already refused
        try:
            value = compile_template(callee.steps[lsid].for_each).render(
                {"vars": callee.vars, "inputs": known})
        except TemplateError:
            continue  # reported by the callee's check, in the callee
        if not isinstance(value, list):
            name = given[0]
            out.append(caller.doc.diag(
                ("steps", sid, "with", name),
                f"{prefix}steps.{sid}.with.{name}: steps.{lsid}.for_each of {callee.file} "
                f"({loop_at}) must give a list; with this '{name}' it gives {kind(value)} "
                f"{show(value)}",
                f"pass a list, e.g. {name}: [a, b]"))
    return out
