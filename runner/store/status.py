"""What the state store already holds for a plan: done, stale, or to run.

A dry walk over the plan in order: an instance whose dependencies are all known renders
its inputs from their recorded outputs, computes its key, and looks it up: the engine's
own identify() (runner.plan.scopes), so the keys are the run's. Nothing is submitted and
nothing is written.
"""

from __future__ import annotations

from typing import Any

from runner import paths
from runner.errors import StepError
from runner.plan.model import Plan
from runner.plan.scopes import Scopes, Unrendered, apply_take
from runner.recipe.template import TemplateError
from runner.store.journal import Store


def resolve(plan: Plan, store: Store) -> dict[str, dict[str, Any]]:
    """Per instance id: {"status": done | to run | stale | unknown, "key", "route"}.

    `stale`: this step ran before (the journal has a finished run of it) but its inputs
    changed since, so it would run again. `unknown`: it waits for a step not done yet,
    so its inputs (and key) cannot be known before the run. The two ends of a call of a
    reusable recipe are walked too (their rendering is what the inner steps see) but not
    listed.
    """
    scopes = Scopes(plan)
    roots = paths.Roots.of(plan.recipe.path, plan.recipe.allow_paths, store.blobs)
    hashes: dict[tuple[Any, ...], str] = {}
    results: dict[str, Any] = {}
    finished_steps = {st.step for st in store.states.values() if st.status == "done"}
    out: dict[str, dict[str, Any]] = {}
    for iid, inst in plan.instances.items():
        if any(results.get(d) is None for d in inst.deps):
            if inst.kind == "step":
                out[iid] = {"status": "unknown", "key": None, "route": None}
            continue
        item = results.get(f"{inst.item_from}[{inst.index}]") if inst.item_from else None
        if inst.kind != "step":
            try:
                if inst.kind == "leave":
                    results[iid] = scopes.leave(inst)
                elif scopes.enter(inst, item):
                    results[iid] = True
            except (TemplateError, StepError):
                pass  # a call that cannot start: its steps stay unknown
            continue
        try:
            ident = scopes.identify(inst, item, roots, hashes, aliases=store.aliases)
        except Unrendered:
            out[iid] = {"status": "unknown", "key": None, "route": None}
            continue
        if ident is None:
            out[iid] = {"status": "skipped", "key": None, "route": None}
            continue
        k, route = ident.key, ident.route
        st = store.states.get(k)
        if st is not None and st.status == "done":
            view = apply_take(st.outputs, inst.step.take)
            results[iid] = view
            scopes.publish(inst, view)
            missing = [f for f in st.files if not store.has_blob(f)]
            out[iid] = {"status": "missing" if missing else "done", "key": k, "route": route}
        else:
            status = "stale" if iid in finished_steps else "to run"
            if st is not None and st.status == "submitted":
                status = "in flight"
            out[iid] = {"status": status, "key": k, "route": route}
    return out
