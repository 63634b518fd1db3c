"""One `sunoflow run`: load and plan the recipe, open the state directory, make the
providers, run the engine, export the album and write the report."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import anyio

from runner import export, progress, providers
from runner import plan as planner
from runner import recipe as recipes
from runner.engine import Engine, Options
from runner.errors import FrozenError, Interrupted, StepError, SunoflowError, UsageError
from runner.store import Store


def default_state_dir(recipe_path: Path) -> Path:
    return recipe_path.resolve().parent / ".sunoflow"


def execute(recipe_path: str, *, overrides: dict[str, Any], state_dir: str | None,
            out_dir: str | None, opts: dict[str, Any], report_path: str | None,
            quiet: bool = False) -> int:
    r = recipes.load(recipe_path, overrides=overrides)
    p = planner.build(r)
    for sid in list(opts.get("only", ())) + list(opts.get("force", ())):
        if sid not in r.steps:
            raise UsageError(f"no step '{sid}' in {recipe_path}"
                             + (f"; {s}" if (s := recipes.suggest(sid, r.steps)) else ""))
    sdir = Path(state_dir) if state_dir else default_state_dir(r.path)
    odir = Path(out_dir) if out_dir else r.path.resolve().parent / "out"
    store = Store(sdir).open()
    store.lock()
    provs: dict[str, Any] = {"local": providers.create(recipes.Provider(
        kind="local", take_seconds=r.provider.take_seconds), env={})}
    if r.provider.kind != "local":
        provs[r.provider.kind] = providers.create(r.provider, env=dict(os.environ),
                                                  store=store)
    ui = progress.make(quiet)
    engine = Engine(p, store, provs, Options(state_dir=sdir, **opts), ui)
    status = "failed"
    ui.start(len(engine.selected))
    try:
        status = anyio.run(engine.run)
    finally:
        ui.stop()
        for prov in provs.values():
            anyio.run(prov.aclose)
        store.close()
    exported: list[dict[str, Any]] = []
    error: str | None = None
    if status == "succeeded" and not opts.get("only") and r.outputs:
        try:
            exported = export.export(r, engine.steps_ctx, engine.results, odir,
                                     recipe_sha=_sha(r.path))
        except SunoflowError as exc:
            status, error = "failed", str(exc)
    report = build_report(engine, status, exported, error)
    if report_path:
        Path(report_path).write_text(json.dumps(report, indent=2, default=str) + "\n")
    summary(engine, status, odir if exported else None, error, ui)
    if engine.failed_paid:
        raise FrozenError("--frozen: these steps would need a paid submission: "
                          + ", ".join(engine.failed_paid))
    if status == "interrupted":
        raise Interrupted("interrupted; run the same command again to resume")
    return 0 if status == "succeeded" else 1


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def build_report(engine: Engine, status: str, exported: list[dict[str, Any]],
                 error: str | None) -> dict[str, Any]:
    return {
        "status": status,
        "recipe": engine.recipe.file,
        "provider": engine.recipe.provider.kind,
        "steps": [{"id": rec.id, "status": rec.status if rec.status != "pending" else "skipped",
                   "task_ids": rec.task_ids, "attempts": rec.attempts, "outputs": rec.outputs,
                   "error": rec.error, "key": rec.key, "seconds": rec.seconds}
                  for rec in engine.records.values()],
        "counts": asdict(engine.counts),
        "credits": {"before": None, "after": None, "estimated_spent": engine.spent},
        "outputs": exported,
        "error": error,
    }


def summary(engine: Engine, status: str, out: Path | None, error: str | None,
            ui: Any) -> None:
    by: dict[str, int] = {}
    for rec in engine.records.values():
        by[rec.status] = by.get(rec.status, 0) + 1
    c = engine.counts
    parts = ", ".join(f"{n} {s}" for s, n in sorted(by.items()))
    ui.note(f"{status}: {parts}; {c.submissions} submissions, {c.polls} polls, "
            f"{c.downloads} downloads" + (f", {c.possibly_submitted} possibly submitted"
                                          if c.possibly_submitted else ""))
    for rec in engine.records.values():
        if rec.status == "failed":
            ui.note(f"  failed: {rec.error}")
    if error:
        ui.note(f"  export failed: {error}")
    if out is not None:
        ui.note(f"album written to {out}")


def raise_step(exc: StepError) -> None:
    raise exc
