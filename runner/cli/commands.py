"""One function per subcommand: `cmd_NAME(args) -> exit code`, called by runner.cli.main
with the parsed arguments. Each loads what it needs (lazily: `sunoflow validate` never
imports the HTTP stack) and hands the work to the part that does it; a user mistake is
raised as a runner.errors.SunoflowError for main's one handler to print.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from runner.errors import RecipeError, SunoflowError, UsageError
from runner.terminal import plural, safe


def cmd_status(args: argparse.Namespace) -> int:
    from runner.cli.run import state_dir_of
    from runner.plan import build as planner
    from runner.store import cache, lock, sync
    from runner.store.journal import Store
    from runner.store.status import resolve

    p = planner.check(args.recipe, overrides=overrides(args))
    r = p.recipe
    store = lock.reading(Store(state_dir_of(args.state_dir, r.path), readonly=True), r.path)
    url = cache.choose(args.cache, r.provider.cache)
    rows = resolve(p, store) if url is None else sync.status_rows(p, store, cache.open_cache(url))
    width = max(len(i) for i in rows)
    counts: dict[str, int] = {}
    for iid, row in rows.items():
        status = "to run" if row["status"] == "unknown" else row["status"]
        counts[status] = counts.get(status, 0) + 1
        print(safe(f"{iid:<{width}}  {status}"))
    print(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    _say_elsewhere(p, store, sys.stdout, rows if url is None else None)
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    from runner.cli.run import state_dir_of
    from runner.store import cache, ledger, lock, sync
    from runner.store.journal import Store

    recipe_path = Path(args.recipe)
    lock_path = lock.path_for(recipe_path)
    state = state_dir_of(args.state_dir, recipe_path)
    store = Store(state)
    if args.forget:
        if not state.exists():
            raise UsageError(f"no state directory {state}")
        store.lock()  # the list is written by runs too
        try:
            gone = ledger.forget(state, recipe_path)
        finally:
            store.close()
        print(safe(f"{recipe_path}: " + ("forgotten; clean no longer keeps files for it"
                                        if gone else f"not in the list of {state}")))
        return 0
    if not lock_path.exists():
        raise UsageError(f"no lock file {lock_path}: run the recipe first (clean keeps what "
                         "the locks reference)")
    if not state.exists():
        print(safe(f"nothing to clean: no state directory {state}"))
        return 0
    # A run holds this lock from before its first submit to its end: deleting under it
    # would take away files the run has just recorded or is about to read.
    store.lock(purpose="clean")
    try:
        url = cache.choose(args.cache, None)
        swept = ledger.sweep(
            state, ledger.User(Path(os.path.abspath(recipe_path)),
                               Path(os.path.abspath(lock_path))),
            dry_run=args.dry_run, say=lambda line: print(safe(line)),
            keep_copies=(lambda files: sync.keep_copies(files, url))
            if url is not None else None)
    finally:
        store.close()
    print(safe(f"{'would delete' if args.dry_run else 'deleted'} {swept.removed} files "
               f"({swept.freed / 1e6:.1f} MB) that no recipe using {state} needs; kept "
               f"{swept.kept}"))
    return 0


def cmd_reroll(args: argparse.Namespace) -> int:
    from runner.cli import run
    from runner.engine.force import forceable, rerun
    from runner.engine.records import Options
    from runner.plan import build as planner
    from runner.plan.cost import price
    from runner.recipe.messages import suggest

    p = planner.check(args.recipe, overrides=overrides(args))
    r = p.recipe
    if not forceable(p, args.step):
        names = p.paths | {i.id for i in p.instances.values() if i.kind in ("step", "leave")}
        raise UsageError(f"no step or step instance '{args.step}' in {args.recipe}"
                         + (f"; {s}" if (s := suggest(args.step, names)) else ""))
    rows = rerun(p, {args.step})
    cost = sum(price(p, i) for i in rows)
    pending = _unfinished_paid(p, args, {i.id for i in rows})
    paid = [i.id for i in rows if price(p, i) > 0]
    print(f"reroll {args.step}: {plural(len(rows), 'step instance')} run again "
          f"({', '.join(_short(sorted({i.path if args.step in p.paths else i.id for i in rows})))}"
          f"), about {cost:g} credits"
          + (f" (paid: {', '.join(paid)})" if paid else ""))
    if pending:
        print(f"  and {plural(len(pending), 'paid step instance')} not done yet run too "
              f"({', '.join(_short(pending))}), about "
              f"{sum(price(p, p.instances[i]) for i in pending):g} credits more")
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError("reroll spends credits: confirm with --yes")
        if input("go ahead? [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing done")
            return 0
    return run.execute(r, opts=Options(state_dir=run.state_dir_of(args.state_dir, r.path),
                                       force={args.step}),
                       out_dir=args.out, report_path=None, quiet=args.quiet,
                       cache=args.cache, new_host=args.new_host)


def _unfinished_paid(p: Any, args: argparse.Namespace, rerun_ids: set[str]) -> list[str]:
    """Paid step instances the reroll's run would submit besides the ones rerolled: those
    the state directory does not hold yet (a reroll runs the whole recipe)."""
    from runner.cli.run import state_dir_of
    from runner.plan.cost import price
    from runner.store import lock
    from runner.store.journal import Store
    from runner.store.status import resolve

    store = lock.reading(Store(state_dir_of(args.state_dir, p.recipe.path), readonly=True),
                         p.recipe.path)
    known = resolve(p, store) if store.states else {}
    return [i.id for i in p.steps() if i.id not in rerun_ids and price(p, i) > 0
            and known.get(i.id, {}).get("status") not in ("done", "missing", "skipped")]


def _short(ids: list[str], n: int = 12) -> list[str]:
    return ids if len(ids) <= n else [*ids[:n], f"... {len(ids) - n} more"]


def cmd_review(args: argparse.Namespace) -> int:
    from runner.plan import build as planner
    from runner.review.command import main as review
    from runner.store import cache, sync

    # The page's reroll runs `sunoflow reroll` with the same recipe options.
    cli_args = [*(["--provider", args.provider] if args.provider else []),
                *(["--base-url", args.base_url] if args.base_url else []),
                *(a for v in args.var for a in ("--var", v)),
                *(a for d in args.allow_path for a in ("--allow-path", d))]
    url = cache.choose(args.cache, planner.load(args.recipe, overrides=overrides(args))
                       .provider.cache)
    if url is not None:
        cli_args += ["--cache", url]  # the page's reroll claims through the same ledger
        sync.prefetch(Path(args.recipe), _state_of(args), url)  # takes to play, from it
    return review(args.recipe, overrides=overrides(args), cli_args=cli_args,
                  state_dir=args.state_dir, out_dir=args.out, host=args.host,
                  port=args.port, open_browser=args.open, export_dir=args.export)


def cmd_run(args: argparse.Namespace) -> int:
    from runner.cli import run
    from runner.engine.records import Options
    from runner.plan import build as planner

    if args.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    listen = None
    if args.listen is not None:
        from runner.callbacks.listener import parse_address

        listen = parse_address(args.listen)
    r = planner.load(args.recipe, overrides=overrides(args))
    # The engine's options, from the command line (run.execute adds what the run makes).
    opts = Options(state_dir=run.state_dir_of(args.state_dir, r.path),
                   concurrency=args.concurrency, keep_going=args.keep_going,
                   only=set(args.only), force=set(args.force), frozen=args.frozen,
                   resubmit_uncertain=not args.no_resubmit_uncertain,
                   max_credits=args.max_credits)
    return run.execute(r, opts=opts, out_dir=args.out, report_path=args.report,
                       quiet=args.quiet, listen=listen, ignore_balance=args.ignore_balance,
                       cache=args.cache, new_host=args.new_host)


def _state_of(args: argparse.Namespace) -> Path:
    from runner.cli.run import default_state_dir

    return Path(args.state_dir) if args.state_dir else default_state_dir(Path(args.recipe))


def _cache_of(args: argparse.Namespace) -> str:
    from runner.plan import build as planner
    from runner.store import cache

    url = cache.choose(args.cache, planner.load(args.recipe, overrides={}).provider.cache)
    if url is None:
        raise UsageError(f"{args.command} needs a cache: --cache URL or SUNOFLOW_CACHE")
    return url


def cmd_push(args: argparse.Namespace) -> int:
    from runner.store import sync

    return sync.push(Path(args.recipe), _state_of(args), _cache_of(args))


def cmd_pull(args: argparse.Namespace) -> int:
    from runner.store import sync

    return sync.pull(Path(args.recipe), _state_of(args), _cache_of(args))


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    from runner.paths import allowed_dirs
    from runner.recipe.load import parse_var

    return {"provider": args.provider, "base_url": args.base_url,
            "vars": dict(parse_var(v) for v in args.var),
            "allow_paths": allowed_dirs(args.allow_path)}


def cmd_validate(args: argparse.Namespace) -> int:
    from runner.plan import build as planner

    failed = False
    for path in args.recipes:
        try:
            # A reusable recipe validates on its own without values for its inputs.
            p = planner.check(path, overrides=overrides(args), partial=True)
            r = p.recipe
        except RecipeError as exc:
            failed = True
            print(shown(exc), file=sys.stderr)
            continue
        # The same count as `plan`: the instances that do work, not a call's two ends.
        size = plural(len(p.steps()), "step instance") if p.instances or not r.inputs else \
            "its loops over inputs are checked where it is used"
        print(safe(f"{path}: ok ({plural(len(r.steps), 'step')}, {size}, provider "
                   f"{r.provider.kind})"))
    return 2 if failed else 0


def cmd_plan(args: argparse.Namespace) -> int:
    from runner.cli.run import state_dir_of
    from runner.plan import build as planner
    from runner.report import plan_table as report
    from runner.store import lock
    from runner.store.journal import Store
    from runner.store.status import resolve

    p = planner.check(args.recipe, overrides=overrides(args))
    r = p.recipe
    store = lock.reading(Store(state_dir_of(args.state_dir, r.path), readonly=True), r.path)
    known = resolve(p, store) if store.states else None
    done = {iid: v["status"] for iid, v in known.items()} if known is not None else {}
    report.print_plan(p, as_json=args.json, done=done)
    _say_elsewhere(p, store, sys.stderr if args.json else sys.stdout, known)
    return 0


def _say_elsewhere(p: Any, store: Any, out: Any, known: dict[str, Any] | None) -> None:
    """`plan` and `status`: say when the lock records paid work at another provider than
    this command's, which `run` would pay for again (and refuses to without --new-host).
    `known`: the statuses the command resolved already."""
    from runner.cli.run import paid_elsewhere
    from runner.store import lock

    found = paid_elsewhere(lock.path_for(p.recipe.path), p.recipe, p, store, known=known)
    if found is not None:
        at, again, cost = found
        print(safe(f"note: {lock.path_for(p.recipe.path).name} records {len(again)} of these "
                   f"as paid for at {lock.where(*at)}; at "
                   f"{lock.where(p.recipe.provider.kind, p.recipe.provider.base_url)} they "
                   f"would be paid for again (about {cost:g} credits): `run` refuses that "
                   "without --new-host"), file=out)


def cmd_graph(args: argparse.Namespace) -> int:
    from runner.plan import build as planner
    from runner.report import graph

    p = planner.check(args.recipe, overrides=overrides(args))
    fn = graph.mermaid if args.format == "mermaid" else graph.dot
    sys.stdout.write(fn(p, instances=args.instances))
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from runner.recipe.schema import published_text

    sys.stdout.write(published_text())
    return 0


def shown(exc: SunoflowError) -> str:
    """An error as printed: a recipe's diagnostics one per line (with their hints), any
    other error on one line; control characters in either escaped (runner.terminal)."""
    if isinstance(exc, RecipeError):
        return "\n".join(safe(f"{d.file}:{d.line}:{d.col}: {d.message}")
                         + (f"\n    hint: {safe(d.hint)}" if d.hint else "")
                         for d in exc.diagnostics)
    return safe(f"sunoflow: {exc}")


def cmd_steps(args: argparse.Namespace) -> int:
    from runner.recipe.messages import suggest
    from runner.steps import outputs_doc
    from runner.steps.types import TYPES

    if args.type is not None and (args.type.startswith("sunoflow:")
                                  or args.type.endswith((".yaml", ".yml"))):
        return _recipe_outputs(args.type)
    if args.type is not None and args.type not in TYPES:
        raise UsageError(f"no step type '{args.type}'"
                         + (f"; {s}" if (s := suggest(args.type, TYPES)) else "")
                         + f" (types: {', '.join(TYPES)})")
    sys.stdout.write(outputs_doc.listing(args.type))
    return 0


def _recipe_outputs(name: str) -> int:
    """`sunoflow steps lib/song.yaml` or `sunoflow steps sunoflow:master`: a reusable
    recipe's outputs, as a step that uses it gives them."""
    from runner.plan import build as planner
    from runner.recipe.include import STOCK, stock_dir, stock_names
    from runner.recipe.messages import suggest
    from runner.steps import outputs_doc

    path = name
    if name.startswith(STOCK):
        stem = name[len(STOCK):]
        if stem not in stock_names():
            raise UsageError(f"no stock recipe '{name}'"
                             + (f"; {s}" if (s := suggest(stem, stock_names())) else "")
                             + f" (stock recipes: {', '.join(stock_names())})")
        path = str(stock_dir() / f"{stem}.yaml")
    r = planner.load(path)
    sys.stdout.write(outputs_doc.recipe_listing(name, str(r.doc.data.get("description") or ""),
                                                planner.output_types(r)))
    return 0
