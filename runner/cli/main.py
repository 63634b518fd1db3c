"""The command line: parse arguments, dispatch to one function per subcommand, map errors to
exit codes. No logic lives here.

Exit codes: 0 success; 1 a step failed or the run was stopped (401, no credits, budget);
2 invalid recipe or usage; 3 --frozen would need a paid submission; 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from runner import __version__
from runner.errors import RecipeError, SunoflowError, UsageError
from runner.store.cache import add_option as _cache_option
from runner.terminal import plural, safe

EPILOG = """\
examples:
  sunoflow validate examples/album.yaml          check a recipe before spending anything
  sunoflow plan examples/album.yaml              what would run, what it waits for, what it costs
  sunoflow run examples/album.yaml               make the album (local provider: free, offline)
  sunoflow run album.yaml --provider sunoapi     the same recipe against sunoapi.org
  sunoflow review examples/album.yaml            hear both takes of every song, keep one
  sunoflow graph examples/album.yaml --format mermaid
  sunoflow steps generate                        what a step type gives back
  sunoflow schema > recipe.schema.json

exit codes: 0 ok, 1 a step failed or the run was stopped, 2 invalid recipe or usage,
            3 --frozen would need a paid submission, 130 interrupted
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse exits 2 itself; keep one error path
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _recipe_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--provider", choices=["local", "sunoapi", "newapi"],
                   help="override the recipe's provider")
    p.add_argument("--base-url", metavar="URL", help="override the provider's base URL")
    p.add_argument("--var", action="append", default=[], metavar="KEY=VALUE",
                   help="override a var (value read as YAML); repeatable")
    p.add_argument("--allow-path", action="append", default=[], metavar="DIR",
                   help="let the recipe read local files in DIR too (by default only its "
                   "own folder); repeatable")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sunoflow", description="Album recipes for Suno-style music APIs.",
                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"sunoflow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("validate", help="check recipes; exit 2 if any is invalid")
    p.add_argument("recipes", nargs="+", metavar="RECIPE")
    _recipe_options(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("plan", help="show each step instance, what it waits for and its cost")
    p.add_argument("recipe", metavar="RECIPE")
    _recipe_options(p)
    p.add_argument("--state-dir", metavar="DIR", help="default: .sunoflow/ beside the recipe")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("graph", help="print the step graph")
    p.add_argument("recipe", metavar="RECIPE")
    _recipe_options(p)
    p.add_argument("--format", choices=["mermaid", "dot"], default="mermaid")
    p.add_argument("--instances", action="store_true", help="one node per for_each instance")
    p.set_defaults(func=cmd_graph)

    p = sub.add_parser("schema", help="print the recipe JSON Schema (inputs, and what each "
                       "step type gives back: $defs/outputs_TYPE)")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("steps", help="what each step type gives back (its outputs); with a "
                       "TYPE, every output and every field of a track")
    p.add_argument("type", nargs="?", metavar="TYPE")
    p.set_defaults(func=cmd_steps)

    p = sub.add_parser("status", help="what the state store holds for each step: done, "
                       "stale (inputs changed), missing (files gone), to run")
    p.add_argument("recipe", metavar="RECIPE")
    _recipe_options(p)
    p.add_argument("--state-dir", metavar="DIR", help="default: .sunoflow/ beside the recipe")
    _cache_option(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("clean", help="delete stored files that no recipe using the state "
                       "directory needs (none of their locks refers to them)")
    p.add_argument("recipe", metavar="RECIPE")
    p.add_argument("--state-dir", metavar="DIR", help="default: .sunoflow/ beside the recipe")
    p.add_argument("--dry-run", action="store_true",
                   help="list every stored file, whether it would go and why")
    p.add_argument("--forget", action="store_true",
                   help="drop RECIPE from the state directory's list of recipes (its files "
                   "are then kept only if another recipe needs them)")
    p.add_argument("--cache", metavar="URL", help="push each file to this cache before "
                   "deleting it, keeping the ones it cannot take (default: $SUNOFLOW_CACHE)")
    p.set_defaults(func=cmd_clean)

    for name, verb in (("push", "put every file the lock references, and its records, "
                        "into the cache"),
                       ("pull", "fetch every file the lock references that this machine "
                        "lacks from the cache")):
        p = sub.add_parser(name, help=verb)
        p.add_argument("recipe", metavar="RECIPE")
        p.add_argument("--state-dir", metavar="DIR",
                       help="default: .sunoflow/ beside the recipe")
        _cache_option(p)
        p.set_defaults(func=cmd_push if name == "push" else cmd_pull)

    p = sub.add_parser("reroll", help="pay for a fresh result of one step on purpose; shows "
                       "what reruns downstream and its cost first")
    p.add_argument("recipe", metavar="RECIPE")
    p.add_argument("step", metavar="STEP", help="a step (every song), one instance "
                   "('song[1]', 'song[1]/whole') or a step inside calls ('song/first')")
    _recipe_options(p)
    p.add_argument("--state-dir", metavar="DIR", help="default: .sunoflow/ beside the recipe")
    p.add_argument("--out", metavar="DIR", help="the album folder (default: out/NAME/ beside "
                   "NAME.yaml)")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    _cache_option(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_reroll)

    p = sub.add_parser("review", help="a local page to hear every take, keep one, reroll a "
                       "song, and see the graph and timeline of the run (spends nothing "
                       "unless you confirm a reroll)")
    p.add_argument("recipe", metavar="RECIPE")
    _recipe_options(p)
    p.add_argument("--state-dir", metavar="DIR", help="default: .sunoflow/ beside the recipe")
    p.add_argument("--out", metavar="DIR", help="the album folder (default: out/NAME/ beside "
                   "NAME.yaml)")
    p.add_argument("--host", metavar="HOST", help="listen on this address (default "
                   "127.0.0.1, this machine only); the page answers only to this name, so "
                   "give the address others will type")
    p.add_argument("--port", type=int, default=0, metavar="N",
                   help="port (default 0: any free one; the URL printed says which)")
    p.add_argument("--open", action="store_true", help="open the page in a browser")
    p.add_argument("--export", metavar="DIR", help="write a static copy (index.html, "
                   "assets, audio) to DIR instead of serving, e.g. for a CI artifact")
    _cache_option(p)
    p.set_defaults(func=cmd_review)

    p = sub.add_parser("run", help="run a recipe: submit, poll, download, export the album")
    p.add_argument("recipe", metavar="RECIPE")
    _recipe_options(p)
    p.add_argument("--state-dir", metavar="DIR", help="default: .sunoflow/ beside the recipe")
    p.add_argument("--out", metavar="DIR", help="the album folder (default: out/NAME/ beside "
                   "NAME.yaml)")
    p.add_argument("--concurrency", type=int, default=50, metavar="N",
                   help="submits and downloads at once (default 50); tasks being polled at "
                   "the service hold no slot; local work also stays within the cores")
    p.add_argument("--keep-going", action="store_true",
                   help="after a failure, finish every branch that does not depend on it")
    p.add_argument("--only", action="append", default=[], metavar="STEP",
                   help="run only this step and what it needs; repeatable")
    p.add_argument("--force", action="append", default=[], metavar="STEP",
                   help="rerun this step and everything downstream, even if done")
    p.add_argument("--frozen", action="store_true",
                   help="never submit paid work: build only from the state store (exit 3 "
                   "listing the steps that would need a paid submission)")
    p.add_argument("--no-resubmit-uncertain", action="store_true",
                   help="stop instead of resubmitting a step that may have been submitted "
                   "without its task id being recorded")
    p.add_argument("--max-credits", type=float, metavar="N",
                   help="refuse to submit beyond this many credits")
    p.add_argument("--ignore-balance", action="store_true",
                   help="start even when the service's balance is below the plan's estimate "
                   "(by default the run refuses to start, exit 1, nothing spent)")
    p.add_argument("--report", metavar="FILE", help="write a JSON report")
    p.add_argument("--listen", metavar="HOST:PORT",
                   help="sunoapi and newapi: take the service's callbacks on this address "
                   "(port 0: any free one) instead of mostly polling; the service reaches it "
                   "through the provider's callback_url (default http://HOST:PORT)")
    _cache_option(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_run)
    return parser


def cmd_status(args: argparse.Namespace) -> int:
    from runner.cli.run import state_dir_of
    from runner.plan import build as planner
    from runner.recipe import load as recipe
    from runner.store import cache, lock, sync
    from runner.store.journal import Store
    from runner.store.status import resolve

    r = recipe.load(args.recipe, overrides=overrides(args))
    p = planner.build(r)
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
        verdicts, notes = ledger.decide(state, ledger.User(Path(os.path.abspath(recipe_path)),
                                                           Path(os.path.abspath(lock_path))))
        url = cache.choose(args.cache, None)
        if url is not None and not args.dry_run:
            # --cache: a file goes only once the cache holds it (pushed now if need be).
            held = sync.keep_copies([v.path for v in verdicts if v.delete], url)
            verdicts = [v if not v.delete or v.path in held else
                        ledger.Verdict(v.path, False, "the cache could not take it")
                        for v in verdicts]
        for note in notes:
            print(safe(f"note: {note}"))
        removed = freed = kept = 0
        for v in verdicts:
            if not v.delete:
                kept += 1
                if args.dry_run:
                    print(safe(f"keep {v.path}: {v.why}"))
                continue
            removed += 1
            freed += v.path.stat().st_size
            if args.dry_run:
                print(safe(f"would delete {v.path}: {v.why}"))
            else:
                v.path.unlink()
    finally:
        store.close()
    print(safe(f"{'would delete' if args.dry_run else 'deleted'} {removed} files "
               f"({freed / 1e6:.1f} MB) that no recipe using {state} needs; kept {kept}"))
    return 0


def cmd_reroll(args: argparse.Namespace) -> int:
    from runner.cli import run
    from runner.engine.force import forceable, rerun
    from runner.plan import build as planner
    from runner.plan.cost import price
    from runner.recipe import load as recipe

    r = recipe.load(args.recipe, overrides=overrides(args))
    p = planner.build(r)
    if not forceable(p, args.step):
        names = p.paths | {i.id for i in p.instances.values() if i.kind in ("step", "leave")}
        raise UsageError(f"no step or step instance '{args.step}' in {args.recipe}"
                         + (f"; {s}" if (s := recipe.suggest(args.step, names)) else ""))
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
    return run.execute(args.recipe, overrides=overrides(args), state_dir=args.state_dir,
                       out_dir=args.out, report_path=None, quiet=args.quiet,
                       opts={"force": {args.step}}, cache=args.cache)


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
    from runner.recipe import load as recipe
    from runner.review.command import main as review
    from runner.store import cache, sync

    # The page's reroll runs `sunoflow reroll` with the same recipe options.
    cli_args = [*(["--provider", args.provider] if args.provider else []),
                *(["--base-url", args.base_url] if args.base_url else []),
                *(a for v in args.var for a in ("--var", v)),
                *(a for d in args.allow_path for a in ("--allow-path", d))]
    url = cache.choose(args.cache, recipe.load(args.recipe, overrides=overrides(args))
                       .provider.cache)
    if url is not None:
        cli_args += ["--cache", url]  # the page's reroll claims through the same ledger
        sync.prefetch(Path(args.recipe), _state_of(args), url)  # takes to play, from it
    return review(args.recipe, overrides=overrides(args), cli_args=cli_args,
                  state_dir=args.state_dir, out_dir=args.out, host=args.host,
                  port=args.port, open_browser=args.open, export_dir=args.export)


def cmd_run(args: argparse.Namespace) -> int:
    from runner.cli import run

    if args.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    listen = None
    if args.listen is not None:
        from runner.callbacks.listener import parse_address

        listen = parse_address(args.listen)
    return run.execute(
        args.recipe, overrides=overrides(args), state_dir=args.state_dir, out_dir=args.out,
        report_path=args.report, quiet=args.quiet,
        opts={"concurrency": args.concurrency, "keep_going": args.keep_going,
              "only": set(args.only), "force": set(args.force), "frozen": args.frozen,
              "resubmit_uncertain": not args.no_resubmit_uncertain,
              "max_credits": args.max_credits}, listen=listen,
        ignore_balance=args.ignore_balance, cache=args.cache)


def _state_of(args: argparse.Namespace) -> Path:
    from runner.cli.run import default_state_dir

    return Path(args.state_dir) if args.state_dir else default_state_dir(Path(args.recipe))


def _cache_of(args: argparse.Namespace) -> str:
    from runner.recipe import load as recipe
    from runner.store import cache

    url = cache.choose(args.cache, recipe.load(args.recipe, overrides={}).provider.cache)
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
    from runner.recipe import load as recipe

    failed = False
    for path in args.recipes:
        try:
            r = recipe.load(path, overrides=overrides(args))
            # A reusable recipe validates on its own without values for its inputs.
            p = planner.build(r, partial=True)
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
    from runner.recipe import load as recipe
    from runner.report import plan_table as report
    from runner.store import lock
    from runner.store.journal import Store
    from runner.store.status import resolve

    r = recipe.load(args.recipe, overrides=overrides(args))
    p = planner.build(r)
    store = lock.reading(Store(state_dir_of(args.state_dir, r.path), readonly=True), r.path)
    done = {iid: v["status"] for iid, v in resolve(p, store).items()} \
        if store.states else {}
    report.print_plan(p, as_json=args.json, done=done)
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    from runner.plan import build as planner
    from runner.recipe import load as recipe
    from runner.report import graph

    p = planner.build(recipe.load(args.recipe, overrides=overrides(args)))
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
    from runner.recipe.load import suggest
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
    from runner.recipe import load as recipe
    from runner.recipe.include import STOCK, stock_dir, stock_names
    from runner.steps import outputs_doc

    path = name
    if name.startswith(STOCK):
        stem = name[len(STOCK):]
        if stem not in stock_names():
            raise UsageError(f"no stock recipe '{name}'"
                             + (f"; {s}" if (s := recipe.suggest(stem, stock_names())) else "")
                             + f" (stock recipes: {', '.join(stock_names())})")
        path = str(stock_dir() / f"{stem}.yaml")
    r = recipe.load(path)
    sys.stdout.write(outputs_doc.recipe_listing(name, str(r.doc.data.get("description") or ""),
                                                planner.output_types(r)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        func: Callable[[argparse.Namespace], int] = args.func
        return func(args)
    except SunoflowError as exc:
        print(shown(exc), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("sunoflow: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # noqa: BLE001 - the one place a bug becomes a message and a log
        from runner.cli import crashlog

        log = crashlog.write(traceback.format_exc())
        where = f"the traceback is in {log}" if log is not None else \
            "no folder took its traceback"
        print(safe(f"sunoflow: internal error (a bug: {type(exc).__name__}); {where}; "
                   "please report it with that file"), file=sys.stderr)
        return 1
