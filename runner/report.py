"""What sunoflow tells people: the plan table, and the cost of a plan."""

from __future__ import annotations

import json
import sys
from typing import Any

from runner.plan import Instance, Plan
from runner.template import is_template
from runner.terminal import safe


def price(plan: Plan, inst: Instance) -> float:
    """Credits one submission of `inst` costs on the recipe's provider (0 when local)."""
    t = inst.step.type
    kind = plan.recipe.provider.kind
    if t is None or not t.paid(kind):
        return 0.0
    prices = plan.recipe.provider.prices
    if t.name == "convert" and plan.static_value(inst, "format", "wav") != "wav":
        return 0.0  # only WAV is made by the service; other formats are local ffmpeg
    if t.name == "separate":
        mode = plan.static_value(inst, "type", "separate_vocal")
        if mode == "split_stem":
            return float(prices.get("split_stem", 50))
    return float(prices.get(t.name, t.price))


def _deps_text(plan: Plan, inst: Instance) -> str:
    deps = plan.waits_for(inst)
    if not deps:
        return "-"
    by_step: dict[tuple[str, str], list[str]] = {}
    for d in deps:
        dep = plan.instances[d]
        by_step.setdefault((dep.scope, dep.step.id), []).append(d)
    parts = []
    for (scope, sid), ds in by_step.items():
        n = plan.scopes[scope].fan.get(sid) if scope in plan.scopes else plan.fan.get(sid)
        parts.append(f"{scope}{sid}[*]" if n is not None and n > 1 and len(ds) == n
                     else ", ".join(ds))
    return ", ".join(parts)


def plan_rows(plan: Plan, done: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """One row per instance that does work (a call's steps, not its two ends)."""
    rows = []
    for inst in plan.steps():
        status = (done or {}).get(inst.id, "to run")
        if status == "unknown":
            status = "to run"
        paid = 0 if status == "done" else (1 if price(plan, inst) > 0 else 0)
        conditional = is_template(inst.step.if_) or inst.step.if_ is False
        rows.append({"id": inst.id, "uses": inst.step.uses, "needs": plan.waits_for(inst),
                     "waits_for": _deps_text(plan, inst), "status": status,
                     "paid_submissions": paid, "credits": price(plan, inst) if paid else 0.0,
                     "conditional": conditional})
    return rows


def print_plan(plan: Plan, *, as_json: bool = False, done: dict[str, str] | None = None) -> None:
    rows = plan_rows(plan, done)
    total_paid = sum(r["paid_submissions"] for r in rows)
    total_credits = sum(r["credits"] for r in rows)
    reused = sum(1 for r in rows if r["status"] == "done")
    r = plan.recipe
    if as_json:
        json.dump({"recipe": r.file, "provider": r.provider.kind, "instances": rows,
                   "paid_submissions": total_paid, "credits": total_credits,
                   "reused": reused}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    w_id = max([len(x["id"]) for x in rows] + [8])
    w_uses = max([len(x["uses"]) for x in rows] + [4])
    w_wait = min(max([len(x["waits_for"]) for x in rows] + [9]), 40)
    out = [f"{r.file}: {len(rows)} step instances on provider {r.provider.kind}"
           + (f" ({r.provider.base_url})" if r.provider.base_url else ""),
           f"{'INSTANCE':<{w_id}}  {'TYPE':<{w_uses}}  {'WAITS FOR':<{w_wait}}  "
           f"{'STATUS':<7}  PAID"]
    for x in rows:
        wait = x["waits_for"] if len(x["waits_for"]) <= w_wait else x["waits_for"][:w_wait - 1] \
            + "…"
        paid = f"{x['paid_submissions']} ({x['credits']:g} cr)" if x["paid_submissions"] else "-"
        flag = " (if)" if x["conditional"] else ""
        out.append(f"{x['id']:<{w_id}}  {x['uses']:<{w_uses}}  {wait:<{w_wait}}  "
                   f"{x['status']:<7}  {paid}{flag}")
    out.append(f"total: {total_paid} paid submission{'s' if total_paid != 1 else ''}, "
               f"{total_credits:g} credits; {reused} reused from the state store")
    print("\n".join(safe(line) for line in out))
