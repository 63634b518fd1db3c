"""The command line: parse arguments, dispatch to one function per subcommand
(runner.cli.commands), map errors to exit codes. No logic lives here.

Exit codes: 0 success; 1 a step failed or the run was stopped (401, no credits, budget);
2 invalid recipe or usage; 3 --frozen would need a paid submission; 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from runner import __version__
from runner.cli import commands
from runner.errors import SunoflowError, UsageError
from runner.store.cache import add_option as _cache_option
from runner.terminal import safe

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


def _new_host_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--new-host", action="store_true",
                   help="pay again at this run's provider for steps the lock records as "
                   "paid at another (its kind or base URL differ); without it such a run "
                   "refuses, exit 2, nothing spent")


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
    p.set_defaults(func=commands.cmd_validate)

    p = sub.add_parser("plan", help="show each step instance, what it waits for and its cost")
    p.add_argument("recipe", metavar="RECIPE")
    _recipe_options(p)
    p.add_argument("--state-dir", metavar="DIR", help="default: .sunoflow/ beside the recipe")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=commands.cmd_plan)

    p = sub.add_parser("graph", help="print the step graph")
    p.add_argument("recipe", metavar="RECIPE")
    _recipe_options(p)
    p.add_argument("--format", choices=["mermaid", "dot"], default="mermaid")
    p.add_argument("--instances", action="store_true", help="one node per for_each instance")
    p.set_defaults(func=commands.cmd_graph)

    p = sub.add_parser("schema", help="print the recipe JSON Schema (inputs, and what each "
                       "step type gives back: $defs/outputs_TYPE)")
    p.set_defaults(func=commands.cmd_schema)

    p = sub.add_parser("steps", help="what each step type gives back (its outputs); with a "
                       "TYPE, every output and every field of a track")
    p.add_argument("type", nargs="?", metavar="TYPE")
    p.set_defaults(func=commands.cmd_steps)

    p = sub.add_parser("status", help="what the state store holds for each step: done, "
                       "stale (inputs changed), missing (files gone), to run")
    p.add_argument("recipe", metavar="RECIPE")
    _recipe_options(p)
    p.add_argument("--state-dir", metavar="DIR", help="default: .sunoflow/ beside the recipe")
    _cache_option(p)
    p.set_defaults(func=commands.cmd_status)

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
    p.set_defaults(func=commands.cmd_clean)

    for name, verb in (("push", "put every file the lock references, and its records, "
                        "into the cache"),
                       ("pull", "fetch every file the lock references that this machine "
                        "lacks from the cache")):
        p = sub.add_parser(name, help=verb)
        p.add_argument("recipe", metavar="RECIPE")
        p.add_argument("--state-dir", metavar="DIR",
                       help="default: .sunoflow/ beside the recipe")
        _cache_option(p)
        p.set_defaults(func=commands.cmd_push if name == "push" else commands.cmd_pull)

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
    _new_host_option(p)
    _cache_option(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=commands.cmd_reroll)

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
    p.set_defaults(func=commands.cmd_review)

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
    _new_host_option(p)
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
    p.set_defaults(func=commands.cmd_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The command line's one entry (console script and `python -m runner`) and its one
    error handler: a user mistake prints its message and exits with its code, Ctrl-C
    exits 130, and anything else (a bug) is logged with versions and its traceback by
    runner.cli.crashlog, on every path: parsing included, and exceptions that are not
    Exceptions (a cancellation escaping an event loop, a group of them)."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        func: Callable[[argparse.Namespace], int] = args.func
        return func(args)
    except SunoflowError as exc:
        print(commands.shown(exc), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return _interrupted()
    except BrokenPipeError:
        return 0
    except SystemExit:
        raise  # argparse's --help and --version, printed already
    except BaseException as exc:  # noqa: BLE001 - the one place a bug becomes a message and a log
        if isinstance(exc, BaseExceptionGroup) and exc.split(KeyboardInterrupt)[1] is None:
            return _interrupted()  # Ctrl-C reached a task group: still an interruption
        return _crashed(exc)


def _interrupted() -> int:
    print("sunoflow: interrupted", file=sys.stderr)
    return 130


def _crashed(exc: BaseException) -> int:
    from runner.cli import crashlog

    log = crashlog.write("".join(traceback.format_exception(exc)))
    where = f"the traceback is in {log}" if log is not None else \
        "no folder took its traceback"
    print(safe(f"sunoflow: internal error (a bug: {type(exc).__name__}); {where}; "
               "please report it with that file"), file=sys.stderr)
    return 1
