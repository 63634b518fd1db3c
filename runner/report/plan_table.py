"""What sunoflow tells people: the plan table (its prices: runner.plan.cost)."""

from __future__ import annotations

import json
import sys
from typing import Any

from runner.plan.cost import PAID_ALREADY, price
from runner.plan.model import Instance, Plan
from runner.recipe.template import is_template
from runner.terminal import plural, safe


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
        cost = price(plan, inst)
        paid = 0 if status in PAID_ALREADY else (1 if cost > 0 else 0)
        conditional = is_template(inst.step.if_) or inst.step.if_ is False
        rows.append({"id": inst.id, "uses": inst.step.uses, "needs": plan.waits_for(inst),
                     "waits_for": _deps_text(plan, inst), "status": status,
                     "paid_submissions": paid, "credits": cost if paid else 0.0,
                     "in_flight": status == "in flight" and cost > 0,
                     "conditional": conditional})
    return rows


def _paid_text(x: dict[str, Any]) -> str:
    if x["in_flight"]:
        return "paid, in flight"  # nothing more to pay: the next run polls it
    if x["paid_submissions"]:
        return f"{x['paid_submissions']} ({x['credits']:g} cr)" + (" (if)" if x["conditional"]
                                                                    else "")
    return "-"


def print_plan(plan: Plan, *, as_json: bool = False, done: dict[str, str] | None = None) -> None:
    rows = plan_rows(plan, done)
    total_paid = sum(r["paid_submissions"] for r in rows)
    total_credits = sum(r["credits"] for r in rows)
    reused = sum(1 for r in rows if r["status"] == "done")
    in_flight = sum(1 for r in rows if r["in_flight"])
    r = plan.recipe
    if as_json:
        json.dump({"recipe": r.file, "provider": r.provider.kind, "instances": rows,
                   "paid_submissions": total_paid, "credits": total_credits,
                   "reused": reused, "in_flight": in_flight}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    w_wait = min(max([len(x["waits_for"]) for x in rows] + [9]), 40)
    table = [("INSTANCE", "TYPE", "WAITS FOR", "STATUS", "PAID")]
    for x in rows:
        wait = x["waits_for"] if len(x["waits_for"]) <= w_wait else \
            x["waits_for"][:w_wait - 1] + "…"
        table.append((x["id"], x["uses"], wait, x["status"], _paid_text(x)))
    # Every column as wide as its widest cell, so `in flight` and `missing` line up too.
    widths = [max(len(row[c]) for row in table) for c in range(4)]
    out = [f"{r.file}: {plural(len(rows), 'step instance')} on provider {r.provider.kind}"
           + (f" ({r.provider.base_url})" if r.provider.base_url else "")]
    out += ["  ".join(cell.ljust(widths[c]) if c < 4 else cell
                      for c, cell in enumerate(row)).rstrip() for row in table]
    out.append(f"total: {plural(total_paid, 'paid submission')}, "
               f"{plural(total_credits, 'credit')}; {reused} reused from the state store"
               + (f"; {plural(in_flight, 'paid task')} in flight (already paid: the run "
                  "polls them, at no further cost)" if in_flight else ""))
    print("\n".join(safe(line) for line in out))
