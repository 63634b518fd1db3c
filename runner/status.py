"""What the state store already holds for a plan: done, stale, or to run.

A dry walk over the plan in order: an instance whose dependencies are all known renders
its inputs from their recorded outputs, computes its key, and looks it up. Nothing is
submitted and nothing is written.
"""

from __future__ import annotations

from typing import Any

from runner.engine import apply_take, instance_key, route_of
from runner.plan import Plan, render_inputs
from runner.store import Store
from runner.template import TemplateError, compile_template, is_template


def resolve(plan: Plan, store: Store) -> dict[str, dict[str, Any]]:
    """Per instance id: {"status": done | to run | stale | unknown, "key", "route"}.

    `stale`: this step ran before (the journal has a finished run of it) but its inputs
    changed since, so it would run again. `unknown`: it waits for a step not done yet,
    so its inputs (and key) cannot be known before the run.
    """
    ctx: dict[str, Any] = {sid: ([None] * n if n is not None else None)
                           for sid, n in plan.fan.items()}
    results: dict[str, Any] = {}
    finished_steps = {st.step for st in store.states.values() if st.status == "done"}
    out: dict[str, dict[str, Any]] = {}
    for iid, inst in plan.instances.items():
        if any(results.get(d) is None for d in inst.deps):
            out[iid] = {"status": "unknown", "key": None, "route": None}
            continue
        item = results.get(f"{inst.item_from}[{inst.index}]") if inst.item_from else None
        try:
            if is_template(inst.step.if_):
                c: dict[str, Any] = {"vars": plan.recipe.vars, "steps": ctx}
                if inst.index is not None:
                    c.update(index=inst.index, item=item if item is not None else inst.item)
                if not compile_template(inst.step.if_).render(c):
                    out[iid] = {"status": "skipped", "key": None, "route": None}
                    continue
            inputs = render_inputs(plan.recipe, inst, ctx, item)
        except TemplateError:
            out[iid] = {"status": "unknown", "key": None, "route": None}
            continue
        route = route_of(plan.recipe.provider, inst.step.uses, inputs)
        k = instance_key(plan.recipe.provider, inst.step.uses, inputs, route)
        st = store.states.get(k)
        if st is not None and st.status == "done":
            view = apply_take(st.outputs, inst.step.take)
            results[iid] = view
            if inst.index is None:
                ctx[inst.step.id] = view
            else:
                ctx[inst.step.id][inst.index] = view
            missing = [f for f in st.files if not store.has_blob(f)]
            out[iid] = {"status": "missing" if missing else "done", "key": k, "route": route}
        else:
            status = "stale" if iid in finished_steps else "to run"
            if st is not None and st.status == "submitted":
                status = "in flight"
            out[iid] = {"status": status, "key": k, "route": route}
    return out
