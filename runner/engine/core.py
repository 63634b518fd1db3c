"""The engine: run a plan's instances concurrently, journal every paid step, never pay twice.

One anyio task group owns the run. An instance starts when every instance it depends on
has finished; a CapacityLimiter bounds remote tasks in flight (--concurrency) and another
bounds local ffmpeg work (the cores). The provider's rate limiter paces every request.

The never-pay-twice rules, each enforced where marked below:

1. A key whose journal says ``done`` is never run again (unless --force names its step).
2. A key with a recorded task id is polled, never resubmitted (resume).
3. ``intent`` is fsynced before a submit and the task id the moment it is returned, so the
   only unknowable window is a submit whose answer was lost ("possibly submitted"): by
   default resubmitted with a warning and counted, or stopped with --no-resubmit-uncertain.
4. A submit is retried automatically only when the provider proved no task was created
   (TransientError: a connect error, or the service's own "not created" codes).
5. A task the service failed is resubmitted only when it refunded the credits (531) or the
   step's ``retry`` asks for it (that costs credits).
6. 401 and "insufficient credits" stop every new submission at once; what is already paid
   for keeps being polled and downloaded.

With callbacks (`--listen`, Options.callbacks), a task this run submitted waits for its
callback or its next fallback poll, whichever comes first (`_callback`); a callback that
completes the task gives the same Result a poll would, and everything after it (the
journal's ``done``, the downloads) is unchanged. A reported failure is confirmed by a poll
first, since it decides rule 5.

Early release. A music task's first stage brings its first track before the second: a
`first` callback, or a poll that finds it (sunoapi's FIRST_SUCCESS, a `First` answer; one
poll is aimed at it, pacing.Poller.wait_first). The steps that read only that track
(`Instance.early`, found by the plan) start from it, and this must not make anyone pay
twice: a step's key is built from the inputs it renders, so the track a released step
rendered must be the very track every later run renders.

7. The first track is downloaded and journaled (``first``, fsynced) before any step is
   released on it; the ``done`` outputs put that recorded track first, whatever the
   complete result lists (`pin_first`); and a resumed run that finds a ``first`` for the
   task it polls releases the same steps from the same record, and never records another
   for that task. So a released step renders the same inputs, hence the same key, in this
   run and every later one. A task's first stage is taken once, whether a callback, a
   poll or both report it (`_poll`).

Early release is a speculation (runner.engine.early): nobody documents whether a service accepts
work on a task that has not finished. `release_on_first: auto` tries it unless the host
is known to refuse that operation; a refusal falls back, and is remembered.

8. A request sent early (a task it reads was released at its first stage and has not
   finished) that the service refuses by a definite answer created no task: the service
   answered, and said no (a 4xx, or its own "not created" code; never a gateway 5xx, a
   timeout or a lost answer, which may hide a task: early.refusal). `_submit` journals
   it ``failed`` (not submitted) before anything else, so a run killed before the
   resubmission submits it once on resume, and does not count it possibly submitted.
   The resubmission renders nothing anew (the same inputs, the first track pinned by
   rule 7, so the same key) and is sent once, only after every task it reads has
   finished: that request is not early, so it cannot be refused for being early; a
   second refusal fails the step (`_remote`). A refused request paid nothing, and the
   one resubmission is the only one that can pay. An early request whose answer was
   lost stays under rule 3: on a host that accepts early work it may have made a task,
   so it is resubmitted with a warning and counted like any other; a later refusal does
   not clear it (a host's servers need not answer alike). After a refusal, the run sends
   that operation to that host early no more (`auto`): a request already waiting for the
   rate limiter is withdrawn before it leaves (errors.Withheld), and waits too. A task
   taken early that the service then fails for being early is learned the same way;
   whether to submit it again stays rule 5's (refunded, or `retry`), and that submission
   waits for the tasks it reads.

The ledger and the disk.

9. A journal that cannot take a line stops the run: no submit follows an ``intent`` that is
   not on disk, and a task id the journal refuses (after spending the state directory's
   reserve, store.Store.record) is kept in memory, printed and written again at the end
   (`_journal_task`); nothing more is submitted in that run.
10. The committed lock is the ledger: every key it records is known to the store before
    the run (runner.store.lock.seed) and is restored (`_restore`), never submitted.

Beyond one machine (`--cache`, runner.store.claims): the cache's ledger extends rules 1-3 to
every runner that shares it.

11. Before a paid submission the key is claimed in the ledger with a create-only write
    (`_claim`). A key the cache records as done is adopted, not paid; a key another runner
    has a task id for is polled by that id (and journaled, so rule 2 covers it from then
    on), never submitted; a live claim of another runner is waited for; a claim whose
    lease expired without a task id is "possibly submitted" and follows rule 3. The task id
    goes to the ledger right after the journal, and a claim under which nothing was
    submitted is freed. When the ledger cannot be reached, nothing is submitted: the run
    stops, since no claim can be checked. Stored files are pulled from the cache before
    any re-download, recovery or local re-making (`_restore`), and every finished key's
    files and record are pushed (`_share`); a cache that is unreachable for files is only
    a warning.
"""

from __future__ import annotations

import os
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import anyio

from runner import paths
from runner.callbacks.registry import Callbacks
from runner.engine import deadlines, early
from runner.engine.priority import CriticalPath
from runner.errors import (
    AuthError,
    CreditsError,
    JournalError,
    PossiblySubmitted,
    ProviderError,
    StepError,
    TaskFailed,
    TransientError,
    Withheld,
    WrongAddress,
)
from runner.pacing import (
    AHEAD,
    ANY,
    PRIORITY,
    SEND_CHECK,
    SENT_AT,
    Backoff,
    Clock,
    Poller,
    Slots,
    Urgency,
)
from runner.plan.build import Instance, Plan, key
from runner.plan.scopes import Scopes
from runner.providers import CallbackProvider, Fetch, First, Op, Produced, Provider, Result, Streams
from runner.recipe import blame
from runner.recipe.load import Provider as ProviderConfig
from runner.recipe.template import TemplateError, render
from runner.steps import models
from runner.steps.types import TYPES
from runner.store import previews
from runner.store.journal import Store, compact

MAX_SUBMIT_RETRIES = 8
MAX_REFUND_RETRIES = 2
MAX_UNCERTAIN_RESUBMITS = 2  # each may have created a paid task: give up after this many
SUBMIT_GRACE = 0.8  # seconds an interrupt waits for a submit's answer (to record its task id)


@dataclass
class Options:
    state_dir: Path
    concurrency: int = 50
    keep_going: bool = False
    only: set[str] = field(default_factory=set)
    force: set[str] = field(default_factory=set)
    resubmit_uncertain: bool = True
    frozen: bool = False
    max_credits: float | None = None
    clock: Clock = field(default_factory=Clock)
    handle_signals: bool = True
    callbacks: Callbacks | None = None  # --listen: the run's callback registry
    blobs: Any = None  # --cache: runner.store.blobsync.Blobs, files shared by content
    ledger: Any = None  # --cache: runner.store.ledger.Ledger, paid work claimed across runners


@dataclass(slots=True)
class StepRecord:
    id: str
    status: str = "pending"  # succeeded | cached | failed | skipped
    task_ids: list[str] = field(default_factory=list)
    attempts: int = 0
    outputs: Any = None
    error: str | None = None
    key: str | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # what the run told about this step


@dataclass
class Counts:
    submissions: int = 0
    polls: int = 0
    downloads: int = 0
    possibly_submitted: int = 0
    callbacks: int = 0  # tasks completed by a callback rather than a poll
    early_refused: int = 0  # early requests the service refused (rule 8): none was paid


class Engine:
    def __init__(self, plan: Plan, store: Store, providers: dict[str, Provider],
                 opts: Options, ui: Any) -> None:
        self.plan, self.store, self.providers, self.opts, self.ui = plan, store, providers, \
            opts, ui
        self.recipe = plan.recipe
        self.remote = providers.get(self.recipe.provider.kind, providers["local"])
        self.clock = opts.clock
        self.records: dict[str, StepRecord] = {}
        self.counts = Counts()
        self.results: dict[str, Any] = {}
        self.scopes = Scopes(plan)  # what templates see, per call of a reusable recipe
        self.claims: dict[str, anyio.Event] = {}  # key -> set when its one worker is done
        self.settled: anyio.Event | None = None  # a set event shared by every settled key
        self.steps_ctx: dict[str, Any] = self.scopes.steps[""]
        self.stop_reason: str | None = None
        self.wrong_address = False  # a step met a refused first connection (WrongAddress)
        self.interrupted = False
        self.failed_paid: list[str] = []  # --frozen: steps that would need a paid submission
        self.spent = 0.0
        # For the progress view's time left: when each service task in flight started, and
        # when the run did (engine clock).
        self.task_started: dict[str, float] = {}
        self.t_start = self.clock.now()
        self.inflight_submits = 0
        self.submits_idle = anyio.Event()
        self.submits_idle.set()
        # Places go by priority too (pacing.Slots): a submit waits for the rate limit in one.
        self.remote_slots = Slots(opts.concurrency, self.clock)
        self.cpu_slots = Slots(min(opts.concurrency, os.cpu_count() or 2), self.clock)
        pc = self.recipe.provider
        self.poller = Poller(pc.poll_interval, pc.max_poll_interval, self.clock, family=_pace,
                             expected=lambda op: TYPES[op].expected if op in TYPES else 0.0)
        self.callbacks = opts.callbacks
        self._http: Any = None
        self.selected = self._select()
        # Requests waiting for the rate limit go critical path first (runner.engine.priority).
        self.urgency = CriticalPath(plan, self.selected, self.recipe.provider.kind,
                                    self.poller)
        self.base_dir = self.recipe.path.parent.resolve()
        self.roots = paths.Roots.of(self.recipe.path, self.recipe.allow_paths, store.blobs)
        # --force STEP (a path: every instance of it and everything downstream) or
        # --force 'song[1]' (one instance, or every step inside one call: `reroll` of one
        # song). Downstream of one instance needs no forcing: its new result changes the
        # inputs, hence the keys, of the steps that read it.
        self.forced, self.forced_ids = forced_sets(plan, opts.force)
        # When this run started and when each instance became ready: written with its
        # ``done`` (optional fields: `sunoflow review` draws the last run's timeline).
        self.run_id = round(time.time(), 3)
        self.queued: dict[str, float] = {}
        # Early release (rule 7): instance -> the selected instances that read only its
        # first track; which have been released; the run's hook that releases them.
        self.early_of: dict[str, list[str]] = {}
        self.first_released: set[str] = set()
        self._release_early: Callable[[str], None] = lambda iid: None
        self.unjournaled: dict[str, tuple[str, str]] = {}  # key -> (step, paid task id)
        self.file_hashes: dict[tuple[Any, ...], str] = {}  # local input files, by identity
        self.blobs, self.ledger = opts.blobs, opts.ledger
        self.adopted: set[str] = set()  # keys whose task another runner submitted (rule 11)
        # Rule 8: the policy for this host, and the instances that have finished (one
        # refused early waits for those it reads).
        pc = self.recipe.provider
        self.speculation = early.Speculation(pc.release_on_first, early.host_of(pc.base_url),
                                             early.Memory.load(opts.state_dir))
        self.over: set[str] = set()
        self._over_events: dict[str, anyio.Event] = {}
        # Running tasks' stream links, for `sunoflow review` (not the journal: they
        # decide nothing, see `_poll`).
        self.previews = previews.Previews(opts.state_dir)

    # --- selection -----------------------------------------------------------------

    def _select(self) -> list[Instance]:
        if not self.opts.only:
            return list(self.plan.instances.values())
        keep = self.plan.select(set(self.opts.only))
        return [i for i in self.plan.instances.values() if i.id in keep]

    # --- the run -------------------------------------------------------------------

    async def run(self) -> str:
        """Run every selected instance; return succeeded | failed | interrupted.

        Scheduling is a ready queue drained synchronously: an instance that is cached or
        skipped finishes inline, so resuming a finished run spawns no task at all; only
        real work (ffmpeg, a service call) becomes a task in the group.
        """
        remaining: dict[str, int] = {}
        dependents: dict[str, list[str]] = {}
        early_of = self.early_of
        ids = {i.id for i in self.selected}
        for inst in self.selected:
            deps = [d for d in inst.deps if d in ids]
            remaining[inst.id] = len(deps)
            # A step of an operation this host refuses early waits for whole tasks.
            reads_first = inst.early if inst.early and self._speculates(inst) else ()
            for d in deps:
                (early_of if d in reads_first else dependents).setdefault(
                    d, []).append(inst.id)
            self.records[inst.id] = StepRecord(inst.id)
        ready = deque(i.id for i in self.selected if remaining[i.id] == 0)
        left = len(self.selected)
        try:
            async with anyio.create_task_group() as tg:
                if self.opts.handle_signals:
                    tg.start_soon(self._signals, tg.cancel_scope)

                def release(iid: str) -> None:
                    nonlocal left
                    self._ended(iid)
                    status = self.records[iid].status
                    users = dependents.get(iid, ())
                    if iid not in self.first_released and iid in early_of:
                        users = [*users, *early_of[iid]]
                    for dep in users:
                        remaining[dep] -= 1
                        if status in ("failed", "skipped"):
                            self._skip(dep, f"needs {iid}, which {status}")
                        if remaining[dep] == 0:
                            ready.append(dep)
                    left -= 1
                    if left == 0:
                        tg.cancel_scope.cancel()  # ends the signal watcher too

                def drain() -> None:
                    while ready:
                        iid = ready.popleft()
                        inst = self.plan.instances[iid]
                        work = self._prepare(inst) if self.records[iid].status == "pending" \
                            else None
                        if work is not None:
                            self.queued[iid] = round(time.time(), 3)
                        if work is None:
                            release(iid)
                        elif (slots := self._first_slots(work)) is not None:
                            # Queued, not parked: a task per waiting instance is ~5 KB.
                            slots.start(tg, execute, inst, work, urgency=self._urgency(inst,
                                                                                       slots))
                        else:
                            tg.start_soon(execute, inst, work)

                async def execute(inst: Instance, work: Any) -> None:
                    await self._run_work(inst, work)
                    release(inst.id)
                    drain()

                def release_early(iid: str) -> None:
                    """`iid`'s first track is recorded: start what needs only that."""
                    if iid in self.first_released:
                        return
                    self.first_released.add(iid)
                    for dep in early_of.get(iid, ()):
                        if not self._speculates(self.plan.instances[dep]):
                            # Refused since the run began (rule 8): it waits for the whole
                            # task, as `release` then counts it among the dependents.
                            dependents.setdefault(iid, []).append(dep)
                            continue
                        remaining[dep] -= 1
                        if remaining[dep] == 0:
                            ready.append(dep)
                    drain()

                self._release_early = release_early

                drain()
                if left == 0:
                    tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                self.store.sync()
                for step, task_id in self.rejournal():
                    self.ui.always(f"{step}: task {task_id} is paid for but NOT in the "
                                   "journal; before running again, check it on the service "
                                   "(the next run cannot know it and would submit again)")
                if self._http is not None:
                    await self._http.aclose()
        if self.interrupted:
            return "interrupted"
        if any(r.status == "failed" for r in self.records.values()) or self.stop_reason:
            return "failed"
        return "succeeded"

    @property
    def http(self) -> Any:
        """The download client, made on first use: a local-only run never imports httpx."""
        if self._http is None:
            import httpx

            from runner.providers.httpclient import async_client

            t = self.recipe.provider.request_timeout
            self._http = async_client(timeout=httpx.Timeout(t, connect=10.0))
        return self._http

    def _skip(self, iid: str, why: str) -> None:
        rec = self.records[iid]
        if rec.status == "pending":
            rec.status, rec.error = "skipped", why
            self.ui.event(iid, "skipped", why)

    async def _signals(self, scope: anyio.CancelScope) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _sig in signals:
                if self.interrupted:
                    os._exit(130)  # a second Ctrl-C: leave at once; the journal is synced
                self.interrupted = True
                self.stop_reason = "interrupted"
                self.ui.note("interrupted: stopping; in-flight tasks resume on the next run")
                # Give a submit already on the wire a moment to return its task id, so the
                # next run polls it instead of counting it as possibly submitted.
                with anyio.move_on_after(SUBMIT_GRACE):
                    await self.submits_idle.wait()
                self.store.sync()
                scope.cancel()
                return

    # --- one instance ----------------------------------------------------------------

    def _prepare(self, inst: Instance) -> Any:
        """The synchronous half of an instance: render, key, cache lookup. Returns None when
        the instance is finished already (cached, skipped, failed before any work), or the
        work to do."""
        rec = self.records[inst.id]
        try:
            if inst.kind != "step":
                self._call_end(inst, rec)
                return None
            return self._lookup(inst, rec)
        except ProviderError as exc:
            self._fail(rec, exc)
            return None

    def _first_slots(self, work: Any) -> Slots | None:
        """The slots this work takes first, so that it waits for them in their queue rather
        than as a parked task (pacing.Slots.start); None when it may wait on something else
        first (an equal key in flight, a task to poll, a stored result to restore). Only
        when a task starts depends on this, never what it does."""
        prov, _inputs, k, st, forced = work
        if k in self.claims or (st is not None and not forced and
                                st.status in ("done", "submitted")):
            return None
        return self.cpu_slots if prov.kind == "local" else self.remote_slots

    def _urgency(self, inst: Instance, slots: Slots) -> Urgency:
        """The urgency this instance asks its first place with: a submit's (the one
        `_remote` sets before it asks); local work first come first served."""
        return self.urgency.submit(inst.id) if slots is self.remote_slots else ANY

    async def _run_work(self, inst: Instance, work: Any) -> None:
        rec = self.records[inst.id]
        t_start = time.monotonic()
        try:
            outputs = await self._claimed(inst, rec, work)
            if outputs is None:
                return
            self._publish(inst, outputs)
            rec.outputs = outputs
        except WrongAddress as exc:
            if self.wrong_address:
                # Another step met the same refused address at the same moment: one
                # failure says it; this one simply did not run (nothing was created).
                self._skip(inst.id, "not run: the service's address is wrong (see above)")
            else:
                self.wrong_address = True
                self.stop_reason = str(exc)
                self._fail(rec, exc)
        except (AuthError, CreditsError) as exc:
            self.stop_reason = str(exc)
            self._fail(rec, exc)
        except JournalError as exc:
            # The journal is what proves what was paid: without it nothing more is
            # submitted (rule 3); what is paid already is still polled.
            self.stop_reason = str(exc)
            self._fail(rec, StepError(str(exc), step=inst.id))
        except ProviderError as exc:
            self._fail(rec, exc)
        finally:
            rec.seconds = round(time.monotonic() - t_start, 3)

    async def _claimed(self, inst: Instance, rec: StepRecord, work: Any) -> Any:
        """Rule 1 within one run: two instances whose inputs render the same (the same step
        of two calls of one reusable recipe, say) are the same work. The first does it; the
        others wait for it and take its stored result, so equal keys are never in flight
        twice. A waiter only reads the store: it can never submit."""
        k = work[2]
        first = self.claims.get(k)
        if first is None:
            self.claims[k] = done = anyio.Event()
            try:
                return await self._work(inst, rec, work)
            finally:
                done.set()
                # Later arrivals need only "it is over": one shared, set event stands for
                # every settled key (an event per instance was most of the claims' memory).
                if self.settled is None:
                    self.settled = done
                self.claims[k] = self.settled
        # Queued as work that starts with a place (`_first_slots`), it was handed one; the
        # instance it waits for may need a place to finish, so give it back first.
        self.remote_slots.forgo()
        self.cpu_slots.forgo()
        await first.wait()
        st = self.store.states.get(k)
        if st is not None and st.status == "done" and \
                all(self.store.has_blob(f) for f in st.files):
            self._cached(inst, rec, st, st.outputs)
            return None
        raise StepError("another step with the same inputs did this work, and it did not "
                        "finish", step=inst.id)

    def _fail(self, rec: StepRecord, exc: Exception) -> None:
        rec.status = "failed"
        rec.error = str(exc) if not isinstance(exc, ProviderError) or exc.step else \
            f"{rec.id}: {exc}"
        self.ui.event(rec.id, "failed", rec.error)
        if not self.opts.keep_going and not self.stop_reason:
            self.stop_reason = f"{rec.id} failed"

    def _publish(self, inst: Instance, outputs: Any) -> None:
        view = apply_take(outputs, inst.step.take)
        self.results[inst.id] = view
        self.scopes.publish(inst, view)

    def _call_end(self, inst: Instance, rec: StepRecord) -> None:
        """Enter or leave a call of a reusable recipe: no work, nothing paid."""
        try:
            if inst.kind == "enter":
                if not self.scopes.enter(inst, self._context_item(inst)):
                    rec.status, rec.error = "skipped", "if: condition is false"
                    return  # its steps say they are skipped, each in its turn
            else:
                rec.outputs = self.results[inst.id] = self.scopes.leave(inst)
        except TemplateError as exc:
            raise StepError(f"cannot render: {exc}", step=inst.call) from None
        rec.status = "succeeded"

    def _context_item(self, inst: Instance) -> Any:
        if inst.item_from is not None and inst.index is not None:
            return self.results.get(f"{inst.item_from}[{inst.index}]")
        return None

    def _lookup(self, inst: Instance, rec: StepRecord) -> Any:
        step = inst.step
        assert step.type is not None, "reusable recipes are expanded before the engine"
        item = self._context_item(inst)
        ctx: dict[str, Any] = {}
        where: tuple[Any, ...] = ("steps", step.id, "if")
        try:
            ctx = self.scopes.context(inst, item)
            if not self.scopes.condition(inst, ctx):
                rec.status, rec.error = "skipped", "if: condition is false"
                self.ui.event(inst.id, "skipped", "if: false")
                return None
            inputs = {}
            for k, v in step.with_.items():
                where = ("steps", step.id, "with", k)
                inputs[k] = render(v, ctx)
        except TemplateError as exc:
            # Said as the validator says it: the template's position in its own file (a
            # reusable recipe's, inside a call) and the closest name that exists.
            scope = self.plan.scopes.get(inst.scope)
            diag = blame.diagnose(scope.recipe if scope else self.recipe, where,
                                  step.if_ if where[-1] == "if" else step.with_.get(where[-1]),
                                  ctx, exc)
            raise StepError(f"cannot render inputs: {diag}", step=inst.id) from None
        route = route_of(self.recipe.provider, step.uses, inputs)
        # The same rules `validate` applied to what was known before the run, now on the
        # rendered values: a request the provider would refuse is never sent (nothing is
        # journaled or paid for it).
        kind = "local" if route == "local" else self.recipe.provider.kind
        for fld, msg, _hint in models.check(step.uses, inputs, kind):
            raise StepError(f"{msg} (after rendering '{fld}')", step=inst.id)
        prov = self.providers["local"] if route == "local" else self.remote
        # A local file enters the key by content (read only where the recipe may read:
        # content_hashes confines each path as check_inputs does).
        k = instance_key(self.recipe.provider, step.uses, inputs, route,
                         paths.content_hashes(inputs, self.roots, self.file_hashes))
        rec.key = k
        st = self.store.states.get(k)
        forced = inst.path in self.forced or inst.id in self.forced_ids
        if st is not None and st.status == "done" and not forced and \
                all(self.store.has_blob(f) for f in st.files):
            self._cached(inst, rec, st, st.outputs)
            return None
        if self.stop_reason:
            self._skip(inst.id, f"not run: {self.stop_reason}")
            return None
        # Rendered paths are confined here, before anything is read, uploaded or submitted:
        # a path the recipe may not read fails the step with no journal entry and no credit
        # spent (runner.paths).
        paths.check_inputs(inputs, self.roots, step=inst.id, uses=step.uses)
        return (prov, inputs, k, st, forced)

    def _cached(self, inst: Instance, rec: StepRecord, st: Any, outputs: Any) -> None:
        rec.status, rec.task_ids, rec.attempts = "cached", list(st.task_ids), st.attempts
        rec.outputs = outputs
        self._publish(inst, outputs)
        self.ui.event(inst.id, "cached", "")

    async def _work(self, inst: Instance, rec: StepRecord, work: Any) -> Any:
        prov, inputs, k, st, forced = work
        step = inst.step
        workdir = self.store.scratch(k)
        op = Op(inst.id, step.uses, inputs, k, workdir, self.base_dir, self.roots)
        if st is not None and st.status == "done" and not forced:
            # Some stored file went missing. Rule 1 holds here too: a finished remote task
            # is re-fetched (its URL, then the service's fresh links for the same task id),
            # never paid for again; only free local work is simply redone.
            outputs = await self._restore(inst, op, prov, st)
            if outputs is not None:
                self._cached(inst, rec, st, outputs)
                return None
            if prov.kind != "local" and self._price(inst) > 0:
                raise StepError("a stored result is missing and could not be fetched again "
                                f"(task {', '.join(st.task_ids) or 'unknown'}); not paying for "
                                "a new one: use --force or `sunoflow reroll` to do that on "
                                "purpose", step=inst.id)
            st = None
        if prov.kind == "local":
            outputs = await self._local(op, rec)
        else:
            if self.opts.frozen and self._price(inst) > 0 and \
                    not (st is not None and st.status == "submitted"):
                self.failed_paid.append(inst.id)
                raise StepError("--frozen: needs a paid submission (not in the lock and "
                                "store)", step=inst.id)
            # Forced, a finished result is paid for again on purpose; but a task a forced
            # run already submitted and never finished (killed, timed out) is polled, not
            # paid for a second time (rule 2 holds under --force and reroll too).
            outputs = await self._remote(inst, op, rec, st if not forced or (
                st is not None and st.status == "submitted") else None)
        rec.status = "succeeded"
        self.ui.event(inst.id, "succeeded", "")
        return outputs

    async def _local(self, op: Op, rec: StepRecord) -> Any:
        async with self.cpu_slots:
            started = round(time.time(), 3)
            self.ui.event(op.step, "running", "")
            sub = await self.providers["local"].submit(op)
        assert sub.result is not None
        rec.attempts += 1
        finished = round(time.time(), 3)
        outputs, files = await self._materialize(sub.result, op)
        # Local work is free and deterministic: losing this line in a crash costs nothing.
        self.store.record("done", op.key, op.step, outputs=outputs, files=files, durable=False,
                          times={**self._times(op.step, finished), "started": started})
        await self._share(op, outputs, files, [], None)
        return outputs

    async def _restore(self, inst: Instance, op: Op, prov: Provider, st: Any) -> Any:
        """A finished step's outputs, finding any stored file that has gone missing. The one
        restore path, whether files vanished from the store, the state directory was
        deleted (the lock then seeded the key: runner.store.lock.seed) or --frozen builds from
        the lock. In order: each missing file by its content hash (`_recover_blob`: other
        places that may hold it, then its recorded URL); failing that, a local step is made
        again (free, deterministic: None), a remote one gets the provider's fresh links for
        the same task id. Never a new submission: each file must hash to what was
        recorded."""
        missing = [f for f in st.files if not self.store.has_blob(f)]
        if missing and self.blobs is not None:
            missing = await self.blobs.pull(missing)  # the cache first: no service request
        if not missing:
            return st.outputs
        for f in missing:
            found = await self._recover_blob(inst, f)
            if found is None:
                break
            if not found:
                return None  # the recorded URL now serves other content
        else:
            await self._share(op, st.outputs, st.files, st.task_ids, st.credits)
            return st.outputs
        if prov.kind == "local":
            return None  # free and deterministic: make it again
        if not st.task_ids:
            return None
        task_id = st.task_ids[-1]
        try:
            fresh = await self._refresh(op, task_id)
        except ProviderError:
            return None
        if fresh is None:
            return None
        outputs, files = await self._materialize(fresh, op, task_id,
                                                 self._first_of(op.key, task_id))
        want = {f["field"]: f["sha256"] for f in st.files}
        got = {f["field"]: f["sha256"] for f in files}
        if any(got.get(fld) not in (None, sha) for fld, sha in want.items()):
            self.ui.note(f"{inst.id}: the service's files for task {task_id} differ from the "
                         "recorded ones")
        else:
            # Same files (by content): keep the recorded outputs. Fresh links would change
            # the inputs, hence the keys, of every step that reads them, and those would be
            # paid for again. The recorded file entries stay too: the lock is the same
            # bytes after a restore (the fresh links expire as well; a later restore asks
            # for fresh ones again).
            outputs, files = st.outputs, st.files
        await self._durable("done", op.key, op.step, outputs=outputs, files=files,
                            task_ids=list(st.task_ids), credits=st.credits)
        await self._share(op, outputs, files, st.task_ids, st.credits)
        return outputs

    async def _recover_blob(self, inst: Instance, f: dict[str, Any]) -> bool | None:
        """Put one missing stored file back by its recorded sha256 from its recorded URL
        (links expire after about 15 days): True when it is back, None when the URL had
        nothing, False when it serves other content. A shared cache was asked before
        (`_restore`: self.blobs.pull), by content hash."""
        url = f.get("url")
        if not isinstance(url, str):
            return None
        from runner.providers import download

        try:
            info = await download.fetch(self.http, url, self.store,
                                        max_bytes=self.recipe.provider.max_download_bytes)
        except (download.LinkExpired, download.DownloadRejected, TransientError):
            return None
        if info["sha256"] != f.get("sha256"):
            self.ui.note(f"{inst.id}: re-downloaded {url} but its content changed")
            return False
        return True

    async def _refresh(self, op: Op, task_id: str) -> Result | None:
        """Fresh result links for a finished task, retrying transient failures (free)."""
        backoff = Backoff(base=min(1.0, self.recipe.provider.poll_interval), cap=20.0)
        for n in range(5):
            try:
                return await self.remote.refresh(op, task_id)
            except TransientError:
                if n == 4:
                    raise
                await self.clock.sleep(backoff.next())
        return None

    # --- remote: the never-pay-twice path ------------------------------------------

    async def _remote(self, inst: Instance, op: Op, rec: StepRecord, st: Any) -> Any:
        # The ledger claims this call takes are renewed while held and released with it.
        async with AsyncExitStack() as holds:
            return await self._remote_held(inst, op, rec, st, holds)

    async def _remote_held(self, inst: Instance, op: Op, rec: StepRecord, st: Any,
                           holds: AsyncExitStack) -> Any:
        task_id: str | None = None
        attempts = st.attempts if st is not None else 0
        uncertain = False  # rule 3: an earlier run may have made a task we know no id of
        if st is not None and st.status == "submitted":
            task_id = st.task_id  # rule 2: resume by polling; never resubmit
            self.task_started.setdefault(inst.id, self.clock.now())
            self.ui.event(inst.id, "resumed", f"task {task_id}")
            if st.first is not None and st.first_task == task_id and \
                    all(self.store.has_blob(f) for f in st.first_files):
                self._released_first(inst, st.first)  # rule 7: the recorded first track
        elif st is not None and st.status in ("intent", "uncertain"):
            # Rule 3: the previous run may have created a task whose id it never learned
            # (with a ledger, decided in `_claim`: another runner may have its result).
            uncertain = True
            if self.ledger is None:
                self._resubmit_uncertain(inst, "an earlier run")
        refunds = failures = 0
        refused: str | None = None  # rule 8: how this step's early request was refused
        sent_early = False  # rule 8: the task being polled was submitted early
        result: Result | None = None
        claim: Any = None
        while result is None:
            if task_id is None and self.ledger is not None:
                kind, got = await self._claim(inst, op, rec, uncertain)
                uncertain = False
                if kind == "done":
                    return got
                if kind == "task":
                    task_id = got  # rule 11: another runner's task, polled by its id
                    self.adopted.add(op.key)
                    await self._durable("submitted", op.key, op.step, task_id=task_id)
                    self.ui.event(inst.id, "resumed", f"task {task_id} (another runner's)")
                else:
                    claim = got
                    await holds.enter_async_context(claim.held())
            if task_id is None:
                # Rule 8: the tasks this step reads that were released at their first stage
                # and have not finished. After a refusal, or for an operation this host
                # refuses early, the request waits for them rather than go early.
                unfinished = self._unfinished_reads(inst)
                if unfinished and (refused is not None or not self._speculates(inst)):
                    if refused is None:
                        rec.notes.append(f"{self.speculation.host} refuses {op.type} on an "
                                         "unfinished task: waited for "
                                         f"{', '.join(unfinished)} to finish")
                    await self._whole(inst, unfinished)
                    unfinished = []
                # The --concurrency slots bound work on this machine (submits, downloads),
                # not tasks running at the service: a task being polled holds no slot.
                # Stop and budget are checked inside the slot, so a task that waited for
                # one cannot submit past a stop decided meanwhile.
                PRIORITY.set(self.urgency.submit(inst.id))
                SEND_CHECK.set(self._early_check(op.type) if unfinished else None)
                on_wire = False  # the submit left: from here a task may exist (rule 11)
                try:
                    async with self.remote_slots:
                        if self.store.degraded and not self.stop_reason:
                            self.stop_reason = self.store.degraded
                        if self.stop_reason:
                            raise StepError(f"not submitted: {self.stop_reason}",
                                            step=inst.id)
                        self._check_budget(inst)
                        attempts += 1
                        rec.attempts = attempts
                        await self._durable("intent", op.key, op.step, attempt=attempts,
                                            run=self.run_id)
                        SENT_AT.set(None)
                        on_wire = True
                        sub = await self._submit(op, claim)  # frees the claim on "no task"
                        sent = _wall(self.clock, SENT_AT.get())
                        self.counts.submissions += 1
                        self.spent += self._price(inst)
                except Withheld:
                    continue  # never sent (rule 8): back to the top, where it waits
                except ProviderError as exc:
                    # Rule 8: only the answer to an early request, and only once; the
                    # second request is not early, and its refusal fails the step.
                    how = early.refusal(exc) if unfinished and refused is None else None
                    if how is None:
                        raise
                    refused = how
                    await self._refused_early(inst, op, rec, exc, how, unfinished)
                    continue
                finally:
                    SEND_CHECK.set(None)
                    if claim is not None and not on_wire:
                        # Stopped before the submit left (a stop, the budget, an
                        # interrupt): nothing was sent, so the claim is given back.
                        await self._free(claim, "stopped before submitting")
                if refused == early.MAYBE:
                    # The same request, refused while a task it reads ran, was taken once
                    # that task finished: the refusal was for being early.
                    await self._learn(inst, op, "refused while the task it reads ran, "
                                      "accepted once it finished")
                    refused = early.SAYS
                if sub.task_id is None:
                    assert sub.result is not None
                    result = sub.result
                    break
                task_id = sub.task_id
                sent_early = bool(unfinished)
                # `sent`: when the submit left the rate limiter (the wait before it is
                # the rate limit's), for `sunoflow review`'s timeline; optional.
                await self._journal_task(inst, op, task_id, sent)
                self.task_started[inst.id] = self.clock.now()
                if claim is not None:
                    await self._ledger_task(inst, claim, task_id)
                self.ui.event(inst.id, "submitted", f"task {task_id}")
            rec.task_ids.append(task_id)
            try:
                result = await self._poll(inst, op, task_id)
            except TaskFailed as exc:
                await self._durable("failed", op.key, op.step, error=str(exc), task_id=task_id)
                if self.ledger is not None:
                    await self._ledger_failed(op, task_id, str(exc))
                task_id = None
                if sent_early and refused is None and early.NOT_FINISHED.search(str(exc)):
                    # Another reading of rule 8: taken early, then failed for being early.
                    # Whether to pay again stays rule 5's; any new submission waits for
                    # the tasks this one reads, and the host is learned.
                    refused = early.SAYS
                    rec.notes.append(f"{inst.id}: the service failed the early task ({exc})")
                    await self._learn(inst, op, str(exc).removeprefix(f"{inst.id}: "))
                if exc.refunded and refunds < MAX_REFUND_RETRIES:
                    refunds += 1  # rule 5: refunded, so trying again costs nothing
                    self.ui.note(f"{inst.id}: the service failed the task and refunded it; "
                                 "submitting again")
                    continue
                if failures < inst.step.retry:
                    failures += 1  # rule 5: the recipe asked to pay for another try
                    self.ui.note(f"{_said(inst.id, exc)}; retry {failures} of {inst.step.retry} "
                                 "(a new paid submission)")
                    continue
                raise
        first = self._first_of(op.key, task_id)
        finished = round(time.time(), 3)
        # Fetching a finished task's files is brief local work that the next steps wait
        # for: it takes a place before any submit (which may hold one for the rate limit).
        async with self.remote_slots.take(AHEAD):
            outputs, files = await self._materialize(result, op, task_id, first)
        await self._durable("done", op.key, op.step, outputs=outputs, files=files,
                            task_ids=rec.task_ids, credits=result.credits,
                            times=self._times(op.step, finished))
        await self._share(op, outputs, files, rec.task_ids, result.credits)
        if claim is not None:
            claim.closed = True  # a result without a task id: the done record stands now
        return outputs

    async def _journal_task(self, inst: Instance, op: Op, task_id: str,
                            sent: float | None = None) -> None:
        """Record a paid task's id (rule 3). Should the journal refuse the line even after
        spending its reserve (store.Store.record), the id is not lost: it stays in this
        run's memory (the task is polled and its files fetched as usual, and the line is
        tried again when the run ends, `rejournal`), it is printed now so that a person can
        recover it, and nothing more is submitted."""
        try:
            await self._durable("submitted", op.key, op.step, task_id=task_id,
                                **({"sent": sent} if sent is not None else {}))
            if self.store.degraded and not self.stop_reason:
                self.stop_reason = self.store.degraded
                self.ui.always(f"{inst.id}: {self.store.degraded}: task {task_id} is "
                               "recorded, and nothing more is submitted in this run; free "
                               "some space, then run again (the task is polled, not paid)")
        except JournalError as exc:
            self.unjournaled[op.key] = (op.step, task_id)
            self.stop_reason = str(exc)
            self.ui.always(f"{inst.id}: task {task_id} was submitted and paid for, but its id "
                           f"could not be journaled ({exc}); keep this id: the run goes on "
                           "polling it and tries to record it again")

    def rejournal(self) -> list[tuple[str, str]]:
        """Try again to record the task ids the journal refused (`_journal_task`); return
        those still not recorded, as (step, task id). A task whose `done` was recorded
        since needs nothing more."""
        left = []
        for k, (step, task_id) in list(self.unjournaled.items()):
            st = self.store.states.get(k)
            if st is not None and (st.status == "done" or task_id in st.task_ids):
                del self.unjournaled[k]
                continue
            try:
                self.store.record("submitted", k, step, task_id=task_id)
                del self.unjournaled[k]
            except JournalError:
                left.append((step, task_id))
        return left

    def _resubmit_uncertain(self, inst: Instance, who: str) -> None:
        """Rule 3: a submission that may have made a task whose id nobody recorded."""
        self.counts.possibly_submitted += 1
        if not self.opts.resubmit_uncertain:
            raise StepError(f"possibly submitted by {who} (its task id was never recorded); "
                            "not resubmitting because of --no-resubmit-uncertain",
                            step=inst.id)
        self.ui.note(f"{inst.id}: possibly submitted by {who} without a recorded task id; "
                     "submitting again (the service has no way to look it up)")

    # --- the shared cache (rule 11) ---------------------------------------------------

    async def _claim(self, inst: Instance, op: Op, rec: StepRecord,
                     uncertain: bool) -> tuple[str, Any]:
        """Decide through the ledger who pays for this key: ("done", outputs) when the
        cache has its result, ("task", id) when another runner submitted it, or ("claim",
        the claim) when this run holds it and submits. `uncertain`: this state directory's
        journal says an earlier run may have submitted it (rule 3). A step run again on
        purpose (--force, reroll) takes neither a cached result nor another's task: it
        claims the key afresh and pays, as asked."""
        from runner.store.cache import CacheError
        from runner.store.claims import adopt

        try:
            verdict = await self.ledger.acquire(
                op.key, op.step, takeover=self.opts.resubmit_uncertain,
                fresh=inst.path in self.forced)
        except CacheError as exc:
            # No claim can be checked: paying now could pay twice. Stop submitting.
            self.stop_reason = self.stop_reason or "the cache's ledger cannot be reached"
            raise StepError(f"not submitted: {exc}; without the ledger another runner's "
                            "claim cannot be checked", step=inst.id) from None
        if verdict.kind == "done":
            st = adopt(self.store, verdict.entry)
            outputs = await self._restore(inst, op, self.remote, st)
            if outputs is None:
                raise StepError("the cache records this step as done, but its files could "
                                "not be fetched; not paying again: use --force or "
                                "`sunoflow reroll` to do that on purpose", step=inst.id)
            rec.task_ids = list(st.task_ids)
            self.ui.event(inst.id, "cached", "from the cache")
            return ("done", outputs)
        if verdict.kind == "task":
            return ("task", verdict.task_id)
        if uncertain or verdict.uncertain:
            try:
                self._resubmit_uncertain(inst, "an earlier run" if uncertain else
                                         "another runner whose claim expired")
            except StepError:
                await self._free(verdict.claim, "possibly submitted; not resubmitting")
                raise
        return ("claim", verdict.claim)

    async def _ledger_task(self, inst: Instance, claim: Any, task_id: str) -> None:
        from runner.store.cache import CacheError

        try:
            await claim.task(task_id)
        except CacheError as exc:
            # Paid already: go on. The claim's lease keeps others waiting while it is
            # renewed; past it they count the key as possibly submitted.
            self.ui.note(f"{inst.id}: task {task_id} could not be recorded in the cache "
                         f"({exc})")

    async def _ledger_failed(self, op: Op, task_id: str, why: str) -> None:
        from runner.store.cache import CacheError

        try:
            await self.ledger.failed(op.key, task_id, why)
        except CacheError as exc:
            self.ui.note(f"{op.step}: {exc}")

    async def _free(self, claim: Any, why: str) -> None:
        """Give up a claim under which nothing was submitted (shielded: also on the way
        out of an interrupt), so the next runner need not wait for the lease."""
        from runner.store.cache import CacheError

        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            try:
                await claim.free(why)
            except CacheError:
                pass  # it expires with its lease

    async def _share(self, op: Op, outputs: Any, files: list[dict[str, Any]],
                     task_ids: list[str], credits: Any) -> None:
        """A finished key into the cache: its files (by content), then its record, so a
        reader of the record finds every file."""
        if self.blobs is not None:
            await self.blobs.push(files)
        if self.ledger is None or (self.blobs is not None and self.blobs.down):
            return  # (a cache found unreachable: said once, by the blobs)
        from runner.store.cache import CacheError
        from runner.store.claims import entry_of

        try:
            await self.ledger.finish(entry_of(op.key, op.step, outputs, files, task_ids,
                                              credits))
        except CacheError as exc:
            self.ui.note(f"{op.step}: the cache did not take its result ({exc})")

    # --- early release as a speculation (rule 8) ------------------------------------

    def _speculates(self, inst: Instance) -> bool:
        """May `inst` start from the first stage of the tasks it reads? Work that sends no
        request to the service (a local step, a call's ends) always may, unless early
        release is off: nothing can refuse it."""
        sp = self.speculation
        if sp.mode == early.NEVER:
            return False
        step = inst.step
        if inst.kind != "step" or step.type is None or \
                step.type.support.get(self.recipe.provider.kind) != "remote":
            return True
        if step.uses == "convert" and self.plan.static_value(inst, "format", "wav") != "wav":
            return True  # only WAV is made by the service (route_of)
        return sp.allows(step.uses)

    def _unfinished_reads(self, inst: Instance) -> list[str]:
        """The tasks `inst` reads that were released at their first stage and have not
        finished: non-empty means a request now would be early."""
        return [d for d in inst.early if d in self.first_released and d not in self.over]

    def _early_check(self, op_type: str) -> Callable[[], None]:
        """SEND_CHECK for an early request: withdraw it if the host was found to refuse
        `op_type` early while it waited for the rate limiter (rule 8)."""
        def check() -> None:
            if not self.speculation.allows(op_type):
                raise Withheld(f"{op_type} is refused early by {self.speculation.host}")
        return check

    def _ended(self, iid: str) -> None:
        """`iid` has finished (any status): wake the steps refused early that wait for it."""
        self.over.add(iid)
        ev = self._over_events.pop(iid, None)
        if ev is not None:
            ev.set()

    async def _whole(self, inst: Instance, ids: list[str]) -> None:
        """Wait until every task in `ids` has finished, holding no place (the places are
        what they need to finish); fail the step if one of them did not succeed."""
        self.remote_slots.forgo()
        for d in ids:
            if d not in self.over:
                await self._over_events.setdefault(d, anyio.Event()).wait()
        for d in ids:
            status = self.records[d].status
            if status not in ("succeeded", "cached"):
                raise StepError(f"needs {d}, which {status}", step=inst.id)

    async def _refused_early(self, inst: Instance, op: Op, rec: StepRecord,
                             exc: ProviderError, how: str, waits: list[str]) -> None:
        """Rule 8: the service refused this early request and created no task (`_submit`
        has journaled it as not submitted). Say so; learn it when the answer says why."""
        self.counts.early_refused += 1
        said = str(exc).removeprefix(f"{inst.id}: ")
        why = "because a task it reads has not finished" if how == early.SAYS else \
            "perhaps because a task it reads has not finished"
        note = (f"{inst.id}: the service refused the early {op.type} request {why} "
                f"({said}); it created no task, so nothing was paid: waiting for "
                f"{', '.join(waits)} to finish, then submitting once more")
        rec.notes.append(note)
        self.ui.note(note)
        if how == early.SAYS:
            await self._learn(inst, op, said)

    async def _learn(self, inst: Instance, op: Op, message: str) -> None:
        """Remember that this host refuses `op.type` early: in this run at once, and in
        the state directory for later runs (`auto` sends it early no more)."""
        sp = self.speculation
        if not sp.learn(op.type, inst.id, message):
            return
        where = sp.memory.path
        try:
            await anyio.to_thread.run_sync(sp.memory.save)
            kept = f"; remembered in {where}" if where is not None and sp.memory.writable \
                else ""
        except OSError as exc:
            kept = f"; could not remember it in {where} ({exc.strerror or exc})"
        tail = "are still sent early (release_on_first: true)" if sp.mode == early.ALWAYS \
            else "wait for whole tasks"
        self.ui.note(f"early release: {sp.host} refuses {op.type} on an unfinished task; "
                     f"this run's other {op.type} steps {tail}{kept}")

    def _times(self, iid: str, finished: float) -> dict[str, float]:
        """The optional `times` of a ``done`` event (epoch seconds): the run it belongs to,
        when the instance was ready to go, when its work finished (the task done, before
        its files were fetched). The rest of an instance's timeline is in the times of its
        ``intent``, ``submitted`` and ``first`` events and of the ``done`` itself."""
        out = {"run": self.run_id, "finished": finished}
        if iid in self.queued:
            out["queued"] = self.queued[iid]
        return out

    def _first_of(self, key_: str, task_id: str | None) -> tuple[Any, list[Any]] | None:
        """The first track recorded for this task (rule 7), with its files."""
        st = self.store.states.get(key_)
        if st is None or st.first is None or task_id is None or st.first_task != task_id:
            return None
        return st.first, st.first_files

    async def _first_track(self, inst: Instance, op: Op, task_id: str, part: Result) -> None:
        """A task's first stage, from a `first` callback or a poll: record the first track,
        then release the steps that read only it (rule 7). A failure here releases
        nothing: they wait for the whole task."""
        try:
            async with self.remote_slots.take(AHEAD):
                outputs, files = await self._materialize(part, op, task_id)
        except ProviderError as exc:
            self.ui.note(f"{inst.id}: the first track could not be fetched early ({exc.reason}); "
                         "waiting for the whole task")
            return
        # Durable before anything starts from it: every later run must render the same
        # track for the steps released now.
        await self._durable("first", op.key, op.step, task_id=task_id, outputs=outputs,
                            files=files)
        self._released_first(inst, outputs)

    def _released_first(self, inst: Instance, outputs: Any) -> None:
        if inst.id in self.first_released or not self.early_of.get(inst.id):
            return
        self._publish(inst, outputs)
        self.ui.event(inst.id, "first", "first track ready")
        self._release_early(inst.id)

    async def _durable(self, event: str, key_: str, step: str, **data: Any) -> None:
        """Write and fsync a journal event off the event loop. Not abandoned on
        cancellation: an interrupt waits for the line to be on disk."""
        await anyio.to_thread.run_sync(
            lambda: self.store.record(event, key_, step, durable=True, **data))

    def time_left(self) -> tuple[float, bool] | None:
        """For the progress view: about how many seconds the run has left, and whether
        that comes from durations this run measured (else the step types' typical ones).
        The critical path's figures for the service's tasks (runner.engine.priority); a run with
        no service work goes by the pace of its finished steps so far."""
        left = {iid: self.clock.now() - t for iid, t in self.task_started.items()}
        left |= {inst.id: 0.0 for inst in self.selected if inst.id not in left}
        for iid, rec in self.records.items():
            if rec.status != "pending":
                left.pop(iid, None)  # (an instance not yet reached has no record)
        if not left:
            return None
        if self.urgency.remaining(left) is not None:
            return self.urgency.remaining(left)
        finished = [rec for rec in self.records.values() if rec.status == "succeeded"]
        if not finished:
            return None
        took = self.clock.now() - self.t_start
        return took / len(finished) * len(left), True

    def _price(self, inst: Instance) -> float:
        from runner.report.plan_table import price

        return price(self.plan, inst)

    def _check_budget(self, inst: Instance) -> None:
        cap = self.opts.max_credits
        if cap is not None and self.spent + self._price(inst) > cap:
            self.stop_reason = f"--max-credits {cap:g} reached ({self.spent:g} spent)"
            raise StepError(f"not submitted: {self.stop_reason}", step=inst.id)

    async def _submit(self, op: Op, claim: Any = None) -> Any:
        backoff = Backoff(base=min(1.0, self.recipe.provider.poll_interval), cap=30.0)
        tries = uncertain = 0  # uncertain: submits of this call that may have made a task
        try:
            while True:
                self.inflight_submits += 1
                self.submits_idle = anyio.Event() if self.inflight_submits == 1 else \
                    self.submits_idle
                try:
                    return await self._submit_once(op)
                except PossiblySubmitted as exc:
                    uncertain += 1
                    await self._durable("uncertain", op.key, op.step, error=str(exc))
                    self.counts.possibly_submitted += 1
                    if not self.opts.resubmit_uncertain:
                        raise StepError(f"possibly submitted ({exc.reason}); not resubmitting "
                                        "because of --no-resubmit-uncertain",
                                        step=op.step) from None
                    if uncertain > MAX_UNCERTAIN_RESUBMITS:
                        # Every unanswered submit may have been a paid task: stop before a
                        # service that never answers costs us without bound.
                        raise StepError(f"{uncertain} submits got no answer ({exc.reason}); "
                                        "stopping so as not to pay again; check the service's "
                                        "dashboard, then run again", step=op.step) from None
                    self.ui.note(f"{_said(op.step, exc)}; the task may exist; submitting again")
                    await self._durable("intent", op.key, op.step,
                                        attempt=tries + uncertain + 1)
                except TransientError as exc:
                    if SEND_CHECK.get() is not None and early.refusal(exc) == early.SAYS:
                        # An early request refused with the service's own 5xx, saying
                        # why: retrying it now would only be refused again (rule 8).
                        raise
                    # Rule 4: the provider proved no task was created; retrying is free.
                    tries += 1
                    if tries > MAX_SUBMIT_RETRIES:
                        raise
                    delay = backoff.next(exc.retry_after)
                    self.ui.note(f"{_said(op.step, exc)}; retrying in {delay:.1f} s")
                    await self.clock.sleep(delay)
                finally:
                    self.inflight_submits -= 1
                    if self.inflight_submits == 0:
                        self.submits_idle.set()
        except ProviderError as exc:
            if not uncertain:
                # Every attempt was answered "no task" (a 4xx, a 401, no credits, a failed
                # upload before the submit, transient codes past the retries): say so, so
                # the next run does not count this step as possibly submitted (rule 3).
                await self._durable("failed", op.key, op.step, error=f"not submitted: {exc}")
                if claim is not None:
                    await self._free(claim, f"not submitted: {exc}")  # rule 11
            raise

    async def _submit_once(self, op: Op) -> Any:
        if self.callbacks is None:
            return await self.remote.submit(op)
        with self.callbacks.submitting():
            sub: Any = await self.remote.submit(op)
            if sub.task_id is not None:
                # Claimed while the submit still counts as on the wire, so a callback that
                # overtook this answer is waiting for it.
                self.callbacks.expect(sub.task_id)
            return sub

    async def _poll(self, inst: Instance, op: Op, task_id: str) -> Result:
        t0 = self.clock.now()
        # Every remote wait ends (runner.engine.deadlines): the step's timeout, the provider's for
        # this operation, or its default. A timed-out task stays recorded (rule 2).
        timeout = deadlines.timeout_for(op.type, inst.step.timeout,
                                        self.recipe.provider.timeouts)
        backoff = Backoff(base=min(1.0, self.recipe.provider.poll_interval), cap=30.0)
        n = 0
        # Only a task this run submitted can be called back (the URL's token is per run):
        # a resumed one is polled on the usual schedule.
        cb = self.callbacks if self.callbacks is not None and \
            self.callbacks.expects(task_id) else None
        running: float | None = None  # when a poll last found the task running
        planned = True  # the first poll was placed by what the poller knew
        # Early release (rule 7): this task's first stage is wanted while steps wait for it
        # and none is recorded for this task (a recorded one was released from the
        # journal, `_remote`, and is never replaced). Taken once, from whichever reports it
        # first, a callback or a poll: so it is downloaded, journaled and released once.
        # Not from a task another runner submitted (rule 11): that runner pins the first
        # track its released steps rendered; this one takes the whole result.
        want_first = any(self._speculates(self.plan.instances[d])
                         for d in self.early_of.get(inst.id, ())) and \
            inst.id not in self.first_released and \
            self._first_of(op.key, task_id) is None and op.key not in self.adopted
        # Without callbacks, one extra poll is aimed at the first stage (pacing.Poller).
        # Only a task that got it teaches when first stages come (`learn_first`): the
        # others' polls are placed for their completion, and the first stages they happen
        # to find are the late ones. `before_first`: when a poll last found it short of it.
        aim = want_first and cb is None and self.remote.reports_first
        learn_first = False
        before_first: float | None = None

        async def first(part: First) -> None:
            nonlocal want_first
            want_first = False
            await self._first_track(inst, op, task_id, part.result)

        try:
            while True:
                # The deadline is measured on the engine's clock, between polls; each
                # request is bounded by request_timeout, so a step can overrun by at most
                # one request.
                if self.clock.now() - t0 >= timeout:
                    raise StepError(f"timed out after {timeout:g} s waiting for task "
                                    f"{task_id}; it stays recorded, and the next run polls "
                                    "it again (to wait longer: the step's timeout, or "
                                    f"provider.timeouts.{op.type})", step=inst.id)
                aimed = False
                if cb is None:
                    if aim:
                        aim = False
                        aimed = learn_first = await self.poller.wait_first(
                            op.type, t0, lambda s: self.ui.poll_due(inst.id, s))
                    if not aimed:
                        placed = await self.poller.wait(
                            op.type, t0, n, lambda s: self.ui.poll_due(inst.id, s))
                        planned = placed if n == 0 else planned
                        n += 1
                else:
                    called = await self._callback(
                        op, task_id, cb, t0, n, t0 + timeout,
                        first if want_first else None)
                    if called is not None:
                        took = self.clock.now() - t0  # a callback comes when the task ends
                        cb.learn(op.type, took)
                        self.poller.learn(op.type, took, took)
                        return called
                    n += 1
                self.counts.polls += 1  # a request, whatever it answers (a failure too)
                # The poll's answer tells how the task was when the request left (after
                # the rate limiter's queue), not when the answer came back.
                before = self.clock.now()
                SENT_AT.set(None)
                PRIORITY.set(self.urgency.poll(inst.id))  # also for the fresh links after
                try:
                    res = await self.remote.poll(op, task_id)
                except TransientError as exc:
                    await self.clock.sleep(backoff.next(exc.retry_after))
                    continue
                sent_at = SENT_AT.get()
                sent = (sent_at or before) - t0
                waited = sent_at - before if sent_at is not None else 0.0
                if isinstance(res, Streams):
                    # A running task's stream links: written for the review page, and
                    # otherwise exactly the None below. Money: a Streams is never a
                    # Result, so it cannot end the task, journal it or lead to a
                    # submission; done and resubmitted stay decided by a Result or a
                    # TaskFailed alone (rules 1-5), and a failed write is only a lost
                    # preview (runner.store.previews).
                    await self.previews.note(inst.id, op.key, task_id, res)
                    res = None
                if res is None:
                    running = before_first = sent
                    self.poller.saw_running(op.type, sent)
                    continue
                if learn_first:
                    # Past the first stage (its track ready, or done): when it came.
                    learn_first = False
                    self.poller.learn_first(op.type, before_first, sent, aimed, waited)
                if isinstance(res, First):
                    running = sent
                    self.poller.saw_running(op.type, sent)
                    if res.streams is not None:  # the second take's link (see above)
                        await self.previews.note(inst.id, op.key, task_id, res.streams)
                    if want_first:
                        await first(res)
                    continue
                # A fallback poll (callbacks on) is not placed by the poller: it teaches
                # only with a "running" answer before it. (The aimed poll is placed.)
                self.poller.learn(op.type, running, sent, planned and cb is None,
                                  waited=waited)
                if not res.task_ids:
                    res.task_ids = [task_id]
                return res
        finally:
            if cb is not None:
                cb.finish(task_id)  # later callbacks for it are duplicates: ignored
            self.previews.forget(task_id)

    async def _callback(self, op: Op, task_id: str, cb: Callbacks, t0: float, n: int,
                        deadline: float | None,
                        on_first: Callable[[First], Awaitable[None]] | None = None
                        ) -> Result | None:
        """Wait for a callback that ends the task, until fallback poll `n` is due: its
        Result, or None when it is time to poll. Bodies are taken in arrival order and the
        first that completes the task wins. A `first` stage goes to `on_first` (early
        release, rule 7), once; text stages only wake us."""
        due = t0 + cb.fallback_after(op.type, n)
        if deadline is not None:
            due = min(due, deadline)
        prov = cast(CallbackProvider, self.remote)
        self.ui.poll_due(op.step, due - self.clock.now())  # the fallback poll, on screen
        while (left := due - self.clock.now()) > 0:
            for body in await cb.wait(task_id, left, self.clock):
                try:
                    res = prov.from_callback(op, task_id, body)
                except TaskFailed:
                    # Whether to pay again (rule 5) is decided on the service's own
                    # record, never on a pushed message alone: poll now.
                    return None
                if isinstance(res, Streams):
                    # The `text` stage's links: a preview, never an end (see `_poll`).
                    await self.previews.note(op.step, op.key, task_id, res)
                    continue
                if isinstance(res, First):
                    if res.streams is not None:
                        await self.previews.note(op.step, op.key, task_id, res.streams)
                    if on_first is not None:
                        await on_first(res)
                        on_first = None
                elif res is not None:
                    cb.used()
                    self.counts.callbacks += 1
                    if not res.task_ids:
                        res.task_ids = [task_id]
                    return res
        return None

    # --- files -----------------------------------------------------------------------

    async def _materialize(self, result: Result, op: Op, task_id: str | None = None,
                           first: tuple[Any, list[Any]] | None = None
                           ) -> tuple[Any, list[dict[str, Any]]]:
        """Replace file placeholders with stored files; refresh expired links once or
        twice through the provider (never by paying again). `first`: the task's recorded
        first track, which the outputs keep as their first (rule 7)."""
        from runner.providers import download

        for attempt in range(3):
            files: list[dict[str, Any]] = list(first[1]) if first is not None else []
            memo: dict[Any, dict[str, Any]] = {}
            outputs = pin_first(result.outputs, first[0]) if first is not None \
                else result.outputs
            try:
                out = await self._walk(outputs, op, files, (), memo)
                return compact(out), compact(files)  # held all run: repeats held once
            except download.LinkExpired as exc:
                if task_id is None or attempt == 2:
                    raise StepError(f"result link expired: {exc}", step=op.step) from None
                fresh = await self._refresh(op, task_id)
                if fresh is None:
                    raise StepError(f"result link expired and the service could not "
                                    f"recover it: {exc}", step=op.step) from None
                result = fresh
            except download.DownloadRejected as exc:
                raise StepError(str(exc), step=op.step) from None
        raise AssertionError("unreachable")

    async def _walk(self, value: Any, op: Op, files: list[dict[str, Any]],
                    path: tuple[Any, ...], memo: dict[Any, dict[str, Any]]) -> Any:
        if isinstance(value, (Produced, Fetch)):
            # One placeholder may stand in several places (`file` and `tracks[0].file`):
            # store it once.
            info = memo.get(value)
            if info is None:
                if isinstance(value, Produced):
                    info = await anyio.to_thread.run_sync(self.store.ingest, value.path)
                else:
                    info = await self._fetch(value.url, op)
                memo[value] = info
                files.append({**info, "field": _dotted(path)})
            return info["path"]
        if isinstance(value, dict):
            return {k: await self._walk(v, op, files, (*path, k), memo)
                    for k, v in value.items()}
        if isinstance(value, list):
            return [await self._walk(v, op, files, (*path, i), memo)
                    for i, v in enumerate(value)]
        return value

    async def _fetch(self, url: str, op: Op) -> dict[str, Any]:
        from runner.providers import download

        backoff = Backoff(base=min(1.0, self.recipe.provider.poll_interval), cap=20.0)
        for n in range(6):
            try:
                info = await download.fetch(self.http, url, self.store,
                                            max_bytes=self.recipe.provider.max_download_bytes)
                self.counts.downloads += 1
                return info
            except TransientError as exc:
                if n == 5:
                    raise StepError(f"download failed: {exc}", step=op.step) from None
                await self.clock.sleep(backoff.next())
        raise AssertionError("unreachable")


def _wall(clock: Clock, at: float | None) -> float | None:
    """A time of the engine's clock (`at`, monotonic) as epoch seconds."""
    if at is None:
        return None
    return round(time.time() - (clock.now() - at), 3)


def forced_sets(plan: Plan, force: set[str]) -> tuple[set[str], set[str]]:
    """(step paths, instance ids) that --force names: a path forces every instance of it
    and everything downstream; an instance id (`song[1]/whole`) forces that instance; a
    call's id (`song[1]`) every step instance inside that call."""
    paths_ = {f for f in force if f in plan.paths}
    ids: set[str] = set()
    for f in force - paths_:
        inst = plan.instances.get(f)
        if inst is not None and inst.kind == "step":
            ids.add(f)
        else:
            ids |= {i.id for i in plan.steps() if i.id.startswith(f + "/")}
    return (plan.downstream(paths_) if paths_ else set()), ids


def rerun(plan: Plan, names: set[str]) -> list[Instance]:
    """The step instances a --force of `names` runs again: the forced ones, and every
    instance that reads them, transitively (their inputs change with the new result)."""
    paths_, hit = forced_sets(plan, names)
    hit = set(hit)
    for inst in plan.instances.values():  # in a topological order
        # A call's ends share its path: only a step instance is hit by its path.
        if inst.kind == "step" and inst.path in paths_ or any(d in hit for d in inst.deps):
            hit.add(inst.id)
    return [i for i in plan.steps() if i.id in hit]


def forceable(plan: Plan, name: str) -> bool:
    """A name --force and reroll accept: a step path, a step instance, or a call."""
    if name in plan.paths:
        return True
    inst = plan.instances.get(name)
    return inst is not None and inst.kind in ("step", "leave")


def _said(step: str, exc: ProviderError) -> str:
    """`exc` as a message about `step`, naming the step once (a provider's errors name it
    already)."""
    return str(exc) if exc.step else f"{step}: {exc}"


def _pace(op: str) -> str:
    """The family whose durations a step type shares (extend learns from generate)."""
    t = TYPES.get(op)
    return (t.pace or t.name) if t is not None else op


def route_of(provider: ProviderConfig, uses: str, inputs: dict[str, Any]) -> str:
    """"remote" when the provider's service performs this step, "local" for ffmpeg here."""
    route = TYPES[uses].support.get(provider.kind, "local")
    if uses == "convert" and route == "remote":
        # The service makes WAV of its own tracks; anything else is local ffmpeg.
        audio = inputs.get("audio")
        own = isinstance(audio, dict) and audio.get("id") and audio.get("task_id") and \
            not str(audio.get("task_id", "")).startswith("local-")
        if inputs.get("format", "wav") != "wav" or not own:
            return "local"
    if uses == "concat" and provider.kind == "newapi" and provider.concat != "remote":
        return "local"
    return route


def instance_key(provider: ProviderConfig, uses: str, inputs: dict[str, Any],
                 route: str, files: dict[str, str] | None = None) -> str:
    """`files`: the content hash of each local file the inputs name (paths.content_hashes).
    Added to the key only when there is one, so the keys of steps that read no local file
    are those of earlier versions (no journal or lock entry is orphaned by this)."""
    extra: dict[str, Any] = {"local_files": files} if files else {}
    if route == "local":
        # Local work depends on the take length, never on which service the recipe names:
        # switching provider does not redo a free local step whose inputs are unchanged.
        return key(uses, inputs, "local", None, {"take_seconds": provider.take_seconds,
                                                 **extra})
    return key(uses, inputs, provider.kind, provider.base_url, extra or None)


def _dotted(path: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in path)


def pin_first(outputs: Any, first: Any) -> Any:
    """`outputs` with the recorded first track in first place (rule 7): the same clip as
    the complete result lists, or, should the service have dropped or renamed it, in place
    of the complete result's first."""
    t0 = first["tracks"][0]
    tracks = outputs.get("tracks") if isinstance(outputs, dict) else None
    if not isinstance(tracks, list):
        return outputs
    rest = [t for t in tracks if not (isinstance(t, dict) and t.get("id") == t0.get("id"))]
    if len(rest) == len(tracks):
        rest = tracks[1:]
    return {**outputs, "tracks": [t0, *rest], "file": t0.get("file")}


def apply_take(outputs: Any, take: Any) -> Any:
    """Keep one of the two takes. Applied when reading, so a changed choice of take reruns
    nothing paid: the key (and the journal) hold both."""
    if take in (0, 1) and isinstance(outputs, dict) and isinstance(outputs.get("tracks"), list):
        tracks = outputs["tracks"]
        if len(tracks) > take:
            chosen = tracks[take]
            return {**outputs, "tracks": [chosen], "file": chosen.get("file")}
    return outputs

