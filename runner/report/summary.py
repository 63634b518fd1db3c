"""What a finished run says: the summary on the terminal (a row per step, the counts, the
credits, the failures once more), and the JSON report of `--report`.

Handed the finished engine as a `Finished` (what is read of it), never importing the
engine: the report is a view of a run, not a part of it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol, TextIO

from runner.callbacks.registry import Callbacks
from runner.terminal import plural


class Finished(Protocol):
    """What the summary reads of a run's engine (runner.engine.scheduler.Engine)."""

    @property
    def plan(self) -> Any: ...
    @property
    def recipe(self) -> Any: ...
    @property
    def records(self) -> Mapping[str, Any]: ...
    @property
    def counts(self) -> Any: ...
    @property
    def spent(self) -> float: ...
    @property
    def speculation(self) -> Any: ...


def write_report(report: dict[str, Any], f: TextIO) -> None:
    """Streamed into the file: the report lists every step instance with its outputs, and
    its text whole was as large as everything else the run held. The same text as
    `json.dumps(report, indent=2, default=str)`, written a few thousand pieces at a time
    (a write per piece, as json.dump does, made a 10,000-step resume 0.3 s slower)."""
    pieces: list[str] = []
    for piece in json.JSONEncoder(indent=2, default=str).iterencode(report):
        pieces.append(piece)
        if len(pieces) >= 4096:
            f.write("".join(pieces))
            pieces.clear()
    pieces.append("\n")
    f.write("".join(pieces))


def callback_summary(callbacks: Callbacks, ui: Any) -> None:
    st = callbacks.stats
    rejected = sum(st.rejected.values())
    reasons = ", ".join(f"{n} {why}" for why, n in sorted(st.rejected.items()))
    ui.note(f"callbacks: {st.received} received, {st.used} completed a task, {st.ignored} "
            f"ignored (duplicates or late)"
            + (f", {rejected} rejected ({reasons})" if rejected else ""))


def _reported(engine: Finished, rec: Any) -> bool:
    """Every step instance; of a call's two ends, the call itself (its outputs), and its
    entry only when it did not start (why its steps did not run)."""
    kind = engine.plan.instances[rec.id].kind
    return kind != "enter" or rec.status not in ("succeeded", "pending")


def build_report(engine: Finished, status: str, exported: list[dict[str, Any]],
                 error: str | None) -> dict[str, Any]:
    return {
        "status": status,
        "recipe": engine.recipe.file,
        "provider": engine.recipe.provider.kind,
        "steps": [{"id": rec.id, "status": rec.status if rec.status != "pending" else "skipped",
                   "task_ids": rec.task_ids, "attempts": rec.attempts, "outputs": rec.outputs,
                   "error": rec.error, "key": rec.key, "seconds": rec.seconds,
                   "notes": rec.notes}
                  for rec in engine.records.values() if _reported(engine, rec)],
        "counts": asdict(engine.counts),
        "credits": {"before": None, "after": None, "estimated_spent": engine.spent},
        "outputs": exported,
        "error": error,
        # Early release (runner.engine.early): the mode, the operations this host is known to
        # refuse before a task finishes, and what this run learned.
        "early_release": {"mode": engine.speculation.mode, "host": engine.speculation.host,
                          "refusing": engine.speculation.refusing(),
                          "learned": engine.speculation.learned},
    }


def summary_table(engine: Finished) -> list[str]:
    """One row per step: its type and how its instances ended."""
    cols = ("succeeded", "cached", "failed", "skipped")
    rows: dict[str, dict[str, Any]] = {}
    for rec in engine.records.values():
        inst = engine.plan.instances[rec.id]
        if inst.kind != "step":
            continue
        row = rows.setdefault(inst.path, {"uses": inst.step.uses, "n": 0, "seconds": 0.0,
                                             **{c: 0 for c in cols}})
        row["n"] += 1
        row["seconds"] = max(row["seconds"], rec.seconds)
        if rec.status in cols:
            row[rec.status] += 1
    if not rows:
        return []
    w = max(4, *(len(k) for k in rows))
    t = max(4, *(len(r["uses"]) for r in rows.values()))
    lines = [f"{'STEP':<{w}}  {'TYPE':<{t}}  {'N':>4}  {'DONE':>4}  {'CACHED':>6}  "
             f"{'FAILED':>6}  {'SKIPPED':>7}  {'LONGEST':>8}"]
    for sid, r in rows.items():
        lines.append(f"{sid:<{w}}  {r['uses']:<{t}}  {r['n']:>4}  {r['succeeded']:>4}  "
                     f"{r['cached']:>6}  {r['failed']:>6}  {r['skipped']:>7}  "
                     f"{r['seconds']:>7.1f}s")
    return lines


def summary(engine: Finished, status: str, out: Path | None, error: str | None,
            ui: Any, credits: dict[str, Any] | None = None) -> None:
    for line in summary_table(engine):
        ui.note(line)
    by: dict[str, int] = {}
    for rec in engine.records.values():
        if engine.plan.instances[rec.id].kind == "step":
            by[rec.status] = by.get(rec.status, 0) + 1
    c = engine.counts
    order = ("succeeded", "cached", "failed", "skipped", "pending")
    parts = ", ".join(f"{by[s]} {s}" for s in order if by.get(s)) or "nothing to do"
    total = sum(by.values())
    ui.note(f"steps: {parts} (of {plural(total, 'step instance')}); "
            f"{c.submissions} submissions, {c.polls} polls, {c.downloads} downloads"
            + (f", {c.possibly_submitted} possibly submitted" if c.possibly_submitted else "")
            + (f", {c.early_refused} early requests refused (none paid)"
               if c.early_refused else "")
            + (f", {c.lag_refused} refused while the host's record lagged (none paid)"
               if c.lag_refused else ""))
    for line in credit_lines(engine, credits or {}):
        ui.note(line)
    # Each error was shown when its step failed; here once more (a live view does not keep
    # them on screen), each message once. Every message names its step.
    for msg in dict.fromkeys(rec.error or f"{rec.id}: failed" for rec in
                             engine.records.values() if rec.status == "failed"):
        ui.note(f"failed: {msg}")
    if error:
        ui.note(f"export failed (the other album files were written):\n{error}"
                if out is not None else f"export failed:\n{error}")
    if out is not None:
        ui.note(f"album written to {out}")
    ui.note(f"run {status}")


def credit_lines(engine: Finished, credits: dict[str, Any]) -> list[str]:
    """What the run cost: the balance before and after and the spend where the service
    reports a balance, else the spend at the plan's prices."""
    line = credits_line(credits)
    if line is not None:
        return [line]
    if engine.spent or engine.counts.submissions:
        return [f"credits: about {engine.spent:g} spent (the plan's prices)"]
    return []


def credits_line(credits: dict[str, Any]) -> str | None:
    """The balance before and after and the spend, where the service reports a balance."""
    before, after = credits.get("before"), credits.get("after")
    estimated = credits.get("estimated_spent") or 0
    if before is None:
        return None
    if after is None:
        return f"credits: {before:.10g} (nothing submitted)" if not estimated else \
            f"credits: {before:.10g} before; estimated spend {estimated:.10g}"
    return (f"credits: {before:.10g} before, {after:.10g} after: {before - after:.10g} spent "
            f"(estimated {estimated:.10g})")
