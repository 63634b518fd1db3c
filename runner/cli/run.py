"""One `sunoflow run`: load and plan the recipe, open the state directory, make the
providers, run the engine, export the album and write the report."""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from runner import paths
from runner.album import export
from runner.callbacks.registry import Callbacks
from runner.cli import crashlog
from runner.engine.records import Options
from runner.engine.scheduler import Engine
from runner.errors import (
    BudgetError,
    CreditsError,
    ExportError,
    FrozenError,
    Interrupted,
    PathError,
    StoreError,
    SunoflowError,
    UsageError,
    WrongAddress,
)
from runner.pacing import Clock
from runner.plan import build as planner
from runner.plan.model import Plan
from runner.providers.download import Downloader
from runner.providers.registry import create as make_provider
from runner.recipe.messages import suggest
from runner.recipe.model import Provider, Recipe
from runner.report import progress
from runner.report import summary as summaries
from runner.store import ledger, lock
from runner.store.journal import Store
from runner.store.uploads import UploadsFile
from runner.terminal import plural

if TYPE_CHECKING:
    from runner.callbacks.listener import Listener


def default_state_dir(recipe_path: Path) -> Path:
    return recipe_path.resolve().parent / ".sunoflow"


def state_dir_of(arg: str | None, recipe_path: Path) -> Path:
    """The state directory, absolute: `--state-dir` is relative to the folder the command
    runs in (as every path on a command line), made absolute here, once; by default
    `.sunoflow/` beside the recipe."""
    return Path(os.path.abspath(arg)) if arg else default_state_dir(recipe_path)


def default_out_dir(recipe_path: Path) -> Path:
    """`out/NAME/` beside the recipe, NAME being its file name without the extension (the
    NAME of `NAME.lock`): two recipes in one folder never write into each other's album."""
    return Path(os.path.abspath(recipe_path)).parent / "out" / recipe_path.stem


def execute(r: Recipe, *, opts: Options, out_dir: str | None,
            report_path: str | None, quiet: bool = False,
            listen: tuple[str, int] | None = None, ignore_balance: bool = False,
            cache: str | None = None, new_host: bool = False) -> int:
    """Run the loaded recipe `r` with the engine options the command line chose (`opts`,
    its state directory included); this adds what the run itself makes: the clock, the
    callback registry and the cache's blobs and ledger."""
    recipe_path = r.file  # as the user named it, for messages
    # Before the plan: a loop over an input with no default has no length to plan with.
    unset = [k for k, i in r.inputs.items() if k not in r.input_defaults()]
    if unset:
        raise UsageError(f"{recipe_path} is a reusable recipe: input '{unset[0]}' has no "
                         "default; use it from another recipe (uses: ./path/to/it.yaml, "
                         "with: {...})")
    p = planner.build(r)
    if listen is not None:
        _check_listen(r.provider, listen)
    from runner.engine.force import forceable

    for sid in [*opts.only, *opts.force]:
        if sid not in p.paths and not (sid in opts.force and forceable(p, sid)):
            raise UsageError(f"no step '{sid}' in {recipe_path}"
                             + (f"; {s}" if (s := suggest(sid, p.paths)) else ""))
    sdir = opts.state_dir
    # As the user named the recipe (not where its links lead): messages show this path.
    odir = Path(out_dir) if out_dir else default_out_dir(r.path)
    # Both may sit beside the recipe, where a pull request can put links (runner.paths).
    paths.writable_dir(sdir, "the state directory", r.path, scan=True)
    paths.writable_dir(odir, "the album folder", r.path, scan=False)
    # Every place the run writes, tried now: a read-only one found after the paid steps
    # ran would lose their record (the state), the album or the report.
    paths.can_write_dir(sdir, "the state directory")
    if r.outputs and not opts.only:
        paths.can_write_dir(odir, "the album folder")
    if report_path:
        paths.can_write_file(Path(report_path), "the report")
    if not opts.frozen:
        paths.can_write_dir(lock.path_for(r.path).parent, "the lock file's folder")
    store = Store(sdir).open()
    crashlog.use(sdir)
    store.lock()
    ui = progress.make(quiet)
    for warning in store.warnings:
        ui.always(f"warning: {warning}")
    lock_path = lock.path_for(r.path)
    if lock_path.is_symlink():
        # sunoflow writes its lock through a fresh name, never a link: a link committed in
        # its place is not read (its target may be any file) and is replaced when the run
        # writes the lock.
        ui.always(f"warning: {lock_path} is a symbolic link; not reading it as the lock "
                  "(sunoflow replaces it)")
    # Before anything is paid: `clean` keeps what every recipe in this list refers to.
    ledger.register(store.root, r.path, lock_path)
    # The committed lock is the ledger (DESIGN 5): every key it records was paid for, so
    # every run, not only --frozen, makes the store know it before anything is decided.
    # A key the lock records is then restored (engine._restore), never submitted; only
    # keys absent from both the lock and the journal can be paid for. A lock that cannot
    # be read stops the run: going on without it would pay again for all it records.
    lock_sha = _sha(lock_path) if lock_path.is_file() and not lock_path.is_symlink() \
        else None
    if lock_sha is not None and not ledger.absorbed(store.root, lock_sha):
        lock.seed(store, lock.read(lock_path))
    # The shared cache (--cache): the finished keys it records and the store lacks are
    # adopted too (claims.seed), before --frozen asks whether there is anything to build
    # from and before the estimate.
    shared = _shared(cache, r, p, store, ui)
    if lock_sha is None and opts.frozen and not store.states:
        raise FrozenError(f"--frozen: no lock file ({lock_path.name}), an empty state "
                          "directory" + (" and nothing in the cache" if shared else "")
                          + ": nothing to build from")
    # What the plan says this run will cost (what is not paid yet): shown at the start and
    # held against --max-credits. Only a paid provider has anything to estimate.
    estimate = _estimate(p, store) if r.provider.kind != "local" and not opts.frozen \
        else None
    _check_budget(estimate, opts.max_credits)
    # A lock that records paid work at another provider (read once: the head, and the
    # whole lock only when the providers differ) is that work's only ledger in a fresh
    # checkout: this run does not pay for it again (`_check_host`), and its lock (of a
    # local preview, or of steps paid elsewhere) does not replace it, unless --new-host.
    kept = None if new_host or lock_path.is_symlink() else \
        lock.paid_elsewhere(lock_path, r.provider.kind, r.provider.base_url)
    if estimate and kept is not None:
        _check_host(lock_path, kept, r, p, store)
    if opts.frozen:
        # Nothing is paid in frozen mode, so go on past a missing step: the error then
        # lists every step that would need a paid submission, not just the first.
        opts = replace(opts, keep_going=True)
    provs: dict[str, Any] = {"local": make_provider(Provider(
        kind="local", take_seconds=r.provider.take_seconds), env={})}
    clock = Clock()
    if r.provider.kind != "local":
        # The provider is handed the state directory's uploads cache, never the store.
        provs[r.provider.kind] = make_provider(r.provider, env=dict(os.environ),
                                               uploads=UploadsFile(store.root), clock=clock)
    remote = provs.get(r.provider.kind) if r.provider.kind != "local" else None
    if remote is not None and not opts.frozen:
        store.reserve()  # room for a paid task's id on a disk that fills up (runner.store.journal)
    callbacks: Callbacks | None = None
    listener: Listener | None = None
    if listen is not None and remote is not None:
        from runner.callbacks.listener import Listener

        callbacks = Callbacks(remote.callback_task_id, r.provider.max_poll_interval)
        listener = Listener(callbacks, ui.always)
    engine_opts = replace(opts, clock=clock, callbacks=callbacks,
                          blobs=shared[0] if shared else None,
                          ledger=shared[1] if shared else None)
    # The run's files client: the engine downloads results into the store through it (its
    # HTTP client is made on the first download); closed with the providers below.
    files = Downloader(r.provider.request_timeout)
    engine = Engine(p, store, provs, engine_opts, ui, files)
    status, ran = "failed", False
    credits: dict[str, Any] = {"before": None, "after": None}

    # With a cache that already holds the album, nothing may reach the music service, not
    # even the balance request: it is asked only when some step may still be submitted.
    ask_balance = shared is None or _to_submit(p, store)

    async def work() -> str:
        if remote is not None and not opts.frozen and ask_balance:
            credits["before"] = await _credits(remote)
            if not ignore_balance:
                _check_balance(p, store, credits["before"],
                               {i.id for i in engine.selected})
        result = await engine.run()
        if remote is not None and engine.counts.submissions:
            credits["after"] = await _credits(remote)
        return result

    async def session() -> str:
        # One event loop for the whole run: the providers' HTTP clients belong to it.
        try:
            if listener is None or callbacks is None or listen is None:
                return await work()
            assert remote is not None
            base = await listener.bind(*listen)
            ui.always(f"listening for callbacks on {base}")
            public = r.provider.callback_url or base
            if r.provider.callback_url:
                ui.note(f"the service calls back through {public.rstrip('/')}/cb/<token> "
                        "(a new secret token every run)")
            remote.use_callback_url(callbacks.url(public))
            return await listener.serving(work)
        finally:
            with anyio.CancelScope(shield=True):
                for prov in provs.values():
                    await prov.aclose()
                await files.aclose()

    ui.spent = lambda: engine.spent
    ui.time_left = engine.time_left
    ui.start(sum(1 for i in engine.selected if i.kind == "step"), estimate)
    try:
        status = anyio.run(session)
        ran = True
    finally:
        ui.stop()
        if ran:
            _record(lock_path, p, store, engine, status, opts, kept, ui)
        store.close()
    exported: list[dict[str, Any]] = []
    error: str | None = None
    if status == "succeeded" and not opts.only and r.outputs:
        try:
            exported = export.export(r, engine.steps_ctx, engine.results, odir,
                                     recipe_sha=_sha(r.path),
                                     lock_sha=_sha(lock_path) if lock_path.exists() else None,
                                     store_root=store.blobs)
        except ExportError as exc:
            status, error, exported = "failed", str(exc), exc.written
        except SunoflowError as exc:
            status, error = "failed", str(exc)
        for w in exported:
            if w.get("transcoded_from"):
                # The service's recovery gave the song back in another container.
                ui.note(f"{w['path']}: the stored audio is {w['transcoded_from']} (links "
                        f"recovered after they expired); transcoded to "
                        f"{Path(w['path']).suffix} with the recipe's tags")
    report = summaries.build_report(engine, status, exported, error)
    report["credits"].update(credits)
    if shared is not None:
        blobs, claims = shared
        report["cache"] = {"url": claims.cache.url, "requests": claims.cache.stats.requests,
                           "seconds": round(claims.cache.stats.seconds, 3),
                           "claims": claims.claims, "pushed": blobs.pushed,
                           "pulled": blobs.pulled}
    if credits["before"] is not None and credits["after"] is not None:
        report["credits"]["spent"] = credits["before"] - credits["after"]
    if callbacks is not None:
        report["callbacks"] = asdict(callbacks.stats)
        summaries.callback_summary(callbacks, ui)
    unwritten: str | None = None
    if report_path:
        try:
            paths.replace_with(Path(report_path), lambda f: summaries.write_report(report, f))
        except OSError as exc:  # tried before the run; a disk can still fill up since
            unwritten = f"cannot write the report {report_path}: {exc.strerror or exc}"
    summaries.summary(engine, status, odir if exported else None, error, ui,
                      report["credits"])
    if unwritten is not None:
        raise PathError(unwritten)
    if engine.failed_paid:
        later = [rec.id + ("" if _paid(p, rec.id) else " (free)")
                 for rec in engine.records.values() if rec.status == "skipped"
                 and rec.error and rec.error.startswith("needs ")
                 and p.instances[rec.id].kind == "step"]
        raise FrozenError("--frozen: these steps would need a paid submission: "
                          + ", ".join(engine.failed_paid)
                          + (f"; and after them: {', '.join(later)}" if later else ""))
    if status == "interrupted":
        raise Interrupted("interrupted; run the same command again to resume")
    return 0 if status == "succeeded" else 1


def _shared(url: str | None, r: Recipe, p: Plan, store: Store,
            ui: Any) -> tuple[Any, Any] | None:
    """The cache's blobs and ledger for this run (None without a cache), with the keys it
    records as finished adopted into the store (runner.store.claims.seed)."""
    from runner.store import cache as caches

    chosen = caches.choose(url, r.provider.cache)
    if chosen is None:
        return None
    from runner.store.blobsync import Blobs
    from runner.store.claims import Ledger, lease_from_env, runner_id, seed

    c = caches.open_cache(chosen)
    claims = Ledger(c, runner_id(store), lease=lease_from_env(), note=ui.note)
    blobs = Blobs(c, store, ui.always)
    try:
        n = anyio.run(seed, claims, p, store)
    except caches.CacheError as exc:
        # Only a warning here: the ledger is checked again before anything is paid.
        ui.always(f"{exc}; going on with the local state")
    else:
        if n:
            ui.note(f"cache {c.url}: {n} finished steps taken from the cache")
    return blobs, claims


def _to_submit(p: Plan, store: Store) -> bool:
    """Whether any step instance is not known finished (it may need a submission)."""
    from runner.store.status import resolve

    return any(row["status"] not in ("done", "missing", "skipped")
               for row in resolve(p, store).values())


def _check_listen(provider: Provider, listen: tuple[str, int]) -> None:
    if provider.kind not in ("sunoapi", "newapi"):
        raise UsageError(f"--listen: the {provider.kind} provider has no service to call "
                         "back; callbacks need provider sunoapi or newapi")
    host = listen[0]
    if host in ("", "0.0.0.0", "::") and not provider.callback_url:
        raise UsageError(f"--listen {host or '*'}:{listen[1]} listens on every address, so "
                         "sunoflow cannot tell the service where to call back: set "
                         "callback_url in the provider block to the public address that "
                         "forwards to the listener")


def _record(lock_path: Path, p: Plan, store: Store, engine: Engine, status: str,
            opts: Options, kept: tuple[tuple[str, str | None], set[str]] | None,
            ui: Any) -> None:
    """Write the lock after a run: the ledger of what was paid for (DESIGN 5). A run that
    succeeded writes it whole. One that failed or ran `--only` steps writes what it
    finished over the lock's other entries, so that a step is in the ledger from the run
    that paid for it (a fresh checkout does not pay for it again) and nothing the lock
    recorded is lost. Not an interrupted run: Ctrl-C exits within a second, and reading a
    large lock to keep its entries takes longer (2.6 s for 20,000 steps); its journal
    keeps what finished, and the run that resumes it writes the lock. Never over a lock
    that records paid work at another provider (`kept`), unless --new-host; never for
    --frozen, which makes nothing new."""
    prov = p.recipe.provider
    whole = status == "succeeded" and not opts.only
    if kept is not None:
        if whole:
            ui.always(f"lock not written: {lock_path.name} records "
                      f"{plural(len(kept[1]), 'step')} paid for at {lock.where(*kept[0])}, "
                      f"which this run's lock ({lock.where(prov.kind, prov.base_url)}) "
                      "would replace (run with --new-host to replace it)")
        return
    if whole:
        if _lock_current(lock_path, p.recipe.path, store, engine):
            return
        if lock.write(lock_path, p, engine.records, store):
            ui.note(f"lock written: {lock_path.name}")
    else:
        if opts.frozen or status == "interrupted" or not any(
                rec.status == "succeeded" and p.instances[rec.id].kind == "step"
                for rec in engine.records.values()):
            return  # nothing new to record, or no time to (see above)
        keep: lock.Kept = {}
        if lock_path.is_file() and not lock_path.is_symlink() and \
                lock.made_at(lock_path) == (prov.kind, prov.base_url):
            try:
                keep = lock.read(lock_path)["steps"]
            except StoreError as exc:
                ui.always(f"lock not written: {exc}")  # not replaced by a part of itself
                return
        if lock.write(lock_path, p, engine.records, store, keep=keep):
            ui.note(f"lock written: {lock_path.name} (the steps that finished, and what it "
                    "recorded of the others)")
    # The lock now is what this journal says (runner.store.ledger: the next run need not
    # read it while neither changes).
    store.sync()
    ledger.absorb(store.root, _sha(lock_path))


def _lock_current(lock_path: Path, recipe_path: Path, store: Store, engine: Engine) -> bool:
    """True when a rerun changed nothing the lock records: every instance was cached, the
    lock was written for the run's provider (another provider's keys are other keys) and
    it is newer than both the journal and the recipe (the lock is derived from them)."""
    prov = engine.plan.recipe.provider
    if not lock_path.exists() or any(rec.status != "cached" for rec in engine.records.values()
                                     if engine.plan.instances[rec.id].kind == "step") or \
            lock.made_at(lock_path) != (prov.kind, prov.base_url):
        return False
    newest = max(recipe_path.stat().st_mtime,
                 store.journal_path.stat().st_mtime if store.journal_path.exists() else 0.0)
    return lock_path.stat().st_mtime >= newest


async def _credits(prov: Any) -> Any:
    """The balance, or None: a missing or failing credits endpoint never fails a run. A
    wrong address does: nothing else of the run could reach the service either."""
    try:
        return await prov.credits()
    except WrongAddress:
        raise
    except SunoflowError:
        return None


def _paid(p: Plan, iid: str) -> bool:
    from runner.plan.cost import price

    return price(p, p.instances[iid]) > 0


def _estimate(p: Plan, store: Store, ids: set[str] | None = None) -> float:
    """The plan's estimate (credits) for what is not paid yet (given `ids`, only of the
    instances this run selects: --only)."""
    from runner.plan.cost import PAID_ALREADY, price
    from runner.store.status import resolve

    known = resolve(p, store)
    # In flight: paid by an earlier run and polled by this one, never submitted again
    # (engine rule 2), so it costs nothing more and counts neither against the cap nor
    # against the balance. Only step instances are priced (a call has no status).
    return sum(price(p, inst) for iid, inst in p.instances.items() if inst.kind == "step"
               and (ids is None or iid in ids)
               and known.get(iid, {}).get("status") not in (*PAID_ALREADY, "skipped"))


def _check_balance(p: Plan, store: Store, balance: float | None,
                   ids: set[str]) -> None:
    """Before the first paid submission: refuse to start a run the balance cannot cover
    (exit 1, nothing spent). Tasks in flight are paid already; an unknown balance (no
    credits endpoint) refuses nothing. `--ignore-balance` skips this (prices are estimates)."""
    if balance is None:
        return
    estimate = _estimate(p, store, ids=ids)
    if estimate > balance:
        raise CreditsError(f"the balance is {balance:g} credits and this run is estimated at "
                           f"{estimate:g} (see `sunoflow plan`); nothing was submitted. Top "
                           "up, or pass --ignore-balance to start anyway")


def paid_elsewhere(lock_path: Path, r: Recipe, p: Plan, store: Store,
                   found: tuple[tuple[str, str | None], set[str]] | None = None,
                   known: dict[str, dict[str, Any]] | None = None
                   ) -> tuple[tuple[str, str | None], list[str], float] | None:
    """When the lock records paid work at another provider than the run's (kind or base
    URL) that this run would pay for again: that provider, those step instances in plan
    order, and their estimate. Keys name the provider and its base URL, so a forgotten
    `--base-url` (or a recipe's new `base_url`) finds none of the lock's work and buys it
    all again. None otherwise (a local run never pays). `found`: lock.paid_elsewhere's
    answer, when the caller has it; `known`: the plan's resolved statuses, likewise."""
    from runner.plan.cost import PAID_ALREADY, price
    from runner.store.status import resolve

    if r.provider.kind == "local":
        return None
    if found is None:
        if not lock_path.is_file() or lock_path.is_symlink():
            return None
        found = lock.paid_elsewhere(lock_path, r.provider.kind, r.provider.base_url)
        if found is None:
            return None
    at, recorded = found
    known = resolve(p, store) if known is None else known
    again = [iid for iid, inst in p.instances.items() if inst.kind == "step"
             and iid in recorded
             and known.get(iid, {}).get("status") not in (*PAID_ALREADY, "skipped")]
    if not again:
        return None
    return at, again, sum(price(p, p.instances[i]) for i in again)


def _check_host(lock_path: Path, found: tuple[tuple[str, str | None], set[str]],
                r: Recipe, p: Plan, store: Store) -> None:
    """Before anything is paid: refuse (exit 2, nothing spent) a run that would pay again,
    at another host, for work the lock records as paid (`paid_elsewhere`). `--new-host`
    pays on purpose."""
    again = paid_elsewhere(lock_path, r, p, store, found=found)
    if again is None:
        return
    (kind, base), steps, cost = again
    shown = ", ".join(steps[:5]) + (f" and {len(steps) - 5} more" if len(steps) > 5 else "")
    back = (f"--provider {kind} " if kind != r.provider.kind else "") + \
        (f"--base-url {base}" if base else "")
    raise UsageError(
        f"{lock_path.name} records {plural(len(steps), 'step')} paid for at "
        f"{lock.where(kind, base)} ({shown}); this run's provider is "
        f"{lock.where(r.provider.kind, r.provider.base_url)}, where none of them is "
        f"recorded, so they would be paid for again (about {cost:g} credits): nothing was "
        f"submitted. To build from what the lock records, run with {back.strip()} (or set "
        "the recipe's provider block to it); to pay for them again at the new provider on "
        "purpose, add --new-host")


def _check_budget(estimate: float | None, cap: float | None) -> None:
    """Refuse to start when the plan's estimate for what is not paid yet exceeds the cap."""
    if cap is None or estimate is None:
        return
    if estimate > cap:
        raise BudgetError(f"--max-credits {cap:g}: this run is estimated at {estimate:g} "
                          "credits (see `sunoflow plan`); nothing was submitted")


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()
