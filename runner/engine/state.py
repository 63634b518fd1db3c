"""What every part of the engine shares: the run's state, made once (EngineState.__init__),
and the small queries and writes each part asks of it.

The parts are classes built one on the other (files, poller, remote, scheduler: see
runner.engine), each in its own module; they all read and write this one state, typed
here once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import anyio

from runner import paths
from runner.callbacks.registry import Callbacks
from runner.engine import early
from runner.engine.force import forced_sets
from runner.engine.priority import CriticalPath
from runner.engine.records import UI, Counts, FilesClient, Options, StepRecord
from runner.pacing import Poller, Slots
from runner.plan.cost import price
from runner.plan.model import Instance, Plan
from runner.plan.scopes import Scopes, apply_take
from runner.providers import Provider
from runner.steps.types import TYPES, pace_of
from runner.store import previews
from runner.store.journal import Store

MAX_SUBMIT_RETRIES = 8
MAX_REFUND_RETRIES = 2
MAX_UNCERTAIN_RESUBMITS = 2  # each may have created a paid task: give up after this many
# Rule 8, a host whose record lags: a request that is not early (every task it reads was
# seen finished) refused by an answer that says a task it reads has not finished is sent
# again after waits that start at LAG_FIRST_WAIT seconds (a quarter of the poll interval
# when that is shorter) and double up to the poll interval, at most LAG_RESENDS times
# (`Remote._lagging`). A record that lags its own SUCCESS (work endpoints reading a replica
# or a cache behind the one that answered the poll or sent the callback) catches up in
# seconds; the poll interval is the staleness the recipe already accepts in its view of a
# task. With the defaults (10 s) that is 2+4+8+10+10+10 = 44 s, about four poll intervals
# and a fraction of a song's 2-3 minutes: past any lag we should meet, yet a host that
# refuses for a lasting reason fails the step within a minute. Each resend is one
# rate-limited request and, being answered by a refusal, costs nothing.
# A refusal that does not say why (early.MAYBE) is read as the lag only when it came
# within the sum of those waits (`lag_waits`) of when the last task the request reads
# finished: the run waits out a lag of about that long, so a refusal later than that
# after the finish is either a longer lag than any the run would wait out, or (far
# likelier) about the request itself, and it fails at once instead of costing 44 s.
LAG_RESENDS = 6
LAG_FIRST_WAIT = 2.0
SUBMIT_GRACE = 0.8  # seconds an interrupt waits for a submit's answer (to record its task id)


def lag_waits(poll_interval: float) -> list[float]:
    """Rule 8: the waits before each resend to a host whose record lags, in order."""
    first = min(LAG_FIRST_WAIT, poll_interval / 4)
    return [min(poll_interval, first * 2 ** n) for n in range(LAG_RESENDS)]


class EngineState:
    def __init__(self, plan: Plan, store: Store, providers: Mapping[str, Provider],
                 opts: Options, ui: UI, files: FilesClient | None = None) -> None:
        """`files`: the client that downloads results into the store; the run's (the
        caller closes it), or, when none is given, one the engine makes and closes (its
        HTTP client is made on first use: a run that downloads nothing makes none)."""
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
        # The tasks being polled, and when each was submitted (engine clock): their slack
        # against the longest way to the end places their polls (runner.engine.priority).
        self.inflight: dict[str, float] = {}
        self.poll_queue = 0.0  # seconds polls wait for the rate limit, moving average
        self.inflight_submits = 0
        self.submits_idle = anyio.Event()
        self.submits_idle.set()
        # Places go by priority too (pacing.Slots): a submit waits for the rate limit in one.
        self.remote_slots = Slots(opts.concurrency, self.clock)
        self.cpu_slots = Slots(min(opts.concurrency, os.cpu_count() or 2), self.clock)
        pc = self.recipe.provider
        self.poller = Poller(pc.poll_interval, pc.max_poll_interval, self.clock, family=pace_of,
                             expected=lambda op: TYPES[op].expected if op in TYPES else 0.0)
        self.callbacks: Callbacks | None = opts.callbacks
        self.owns_files = files is None
        if files is None:
            from runner.providers.download import Downloader

            files = Downloader(self.recipe.provider.request_timeout)
        self.files_client: FilesClient = files
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
        # Rule 8: when each instance's service task finished in this run, its result in
        # hand (engine clock): how recent a finish is decides whether a bare refusal may
        # be the host's record lagging (`Remote._since_finished`).
        self.finished_at: dict[str, float] = {}
        # Running tasks' stream links, for `sunoflow review` (not the journal: they
        # decide nothing, see `_poll`).
        self.previews = previews.Previews(opts.state_dir)

    def _select(self) -> list[Instance]:
        if not self.opts.only:
            return list(self.plan.instances.values())
        keep = self.plan.select(set(self.opts.only))
        return [i for i in self.plan.instances.values() if i.id in keep]

    def _publish(self, inst: Instance, outputs: Any) -> None:
        view = apply_take(outputs, inst.step.take)
        self.results[inst.id] = view
        self.scopes.publish(inst, view)

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
        if step.type.local_by_value(lambda name, default:
                                    self.plan.static_value(inst, name, default)):
            return True  # local with these inputs (convert: the service makes WAV only)
        return sp.allows(step.uses)

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

    async def _durable(self, event: str, key_: str, step: str, **data: Any) -> None:
        """Write and fsync a journal event off the event loop. Not abandoned on
        cancellation: an interrupt waits for the line to be on disk."""
        await anyio.to_thread.run_sync(
            lambda: self.store.record(event, key_, step, durable=True, **data))

    def _price(self, inst: Instance) -> float:
        return price(self.plan, inst)
