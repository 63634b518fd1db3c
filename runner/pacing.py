"""Time: the clock, the shared rate limiter, retry backoff and adaptive polling.

Everything takes a Clock so tests can run the whole schedule without real sleeps.
"""

from __future__ import annotations

import contextlib
import contextvars
import heapq
import math
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import anyio

if TYPE_CHECKING:
    from anyio.abc import TaskGroup


class Clock:
    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(0.0, seconds))


class FakeClock(Clock):
    """A clock whose sleeps return at once and advance time: for tests."""

    def __init__(self) -> None:
        self.t = 0.0
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += max(0.0, seconds)
        await anyio.lowlevel.checkpoint()


async def sleep_or(clock: Clock, event: anyio.Event, seconds: float) -> None:
    """Sleep on `clock` until `seconds` pass or `event` is set, whichever comes first."""
    async with anyio.create_task_group() as tg:
        async def timer() -> None:
            await clock.sleep(seconds)
            tg.cancel_scope.cancel()

        tg.start_soon(timer)
        await event.wait()
        tg.cancel_scope.cancel()


class Slot:
    """One request's place in the rate window.

    A server counts a request when it arrives, somewhere between our grant and its answer.
    So a slot counts from its grant while the request is in flight, and from the arrival of
    its answer once it is back: our window never reopens before the server's does.
    """

    __slots__ = ("t", "flying")

    def __init__(self, t: float) -> None:
        self.t, self.flying = t, True


# When the request of the current task was sent (granted by the limiter), for the poller:
# a poll's answer says how the task was at that moment, not when the answer came back.
SENT_AT: contextvars.ContextVar[float | None] = contextvars.ContextVar("sent_at", default=None)


class Urgency(NamedTuple):
    """How urgent a task's requests are, for the limiters' lines: `priority` (higher goes
    first) and `aging`, the priority a second of waiting is worth, so that nothing waits
    forever: a request is overtaken only by newer ones more urgent by more than its wait
    is worth."""

    priority: float = 0.0
    aging: float = 1.0


ANY = Urgency()  # no priority given: first come first served
AHEAD = Urgency(math.inf)  # before anything that gives a priority (first come first served)

# The urgency of the current task's requests, set by the engine before it sends them
# (runner.engine.priority: critical path first). A context variable rather than an argument of
# every provider method: providers know nothing of the graph.
PRIORITY: contextvars.ContextVar[Urgency] = contextvars.ContextVar("priority", default=ANY)

# Called by the provider's HTTP client for a request that may create a paid task, once the
# rate limiter has let it go and before it is sent; it raises (errors.Withheld) to keep the
# request here. The engine sets it for an early submit (runner.engine.early): a refusal learned
# while that request waited for the window means it would only be refused too.
SEND_CHECK: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "send_check", default=None)


class _Waiter:
    __slots__ = ("key", "turn")

    def __init__(self, key: tuple[float, int]) -> None:
        self.key, self.turn = key, anyio.Event()

    def __lt__(self, other: _Waiter) -> bool:
        return self.key < other.key


class Line:
    """Who goes next among those waiting for a limiter: the smallest
    `aging * arrival - priority` (see Urgency; arrival on the clock, counted from the
    line's start), equal keys in arrival order (so with equal urgencies, or none given,
    first come first served). Only the first looks for room; the others wait for their
    turn, which `nudge` passes on (after each grant, release or cancellation). A waiter
    sets a fresh `turn` event before it looks, so a nudge that comes after the look is
    not lost."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        # Arrivals count from the line's start: aging that changes during a run (when the
        # run learns how fast the service is) must not multiply the clock's own origin.
        self.origin = clock.now()
        self.heap: list[_Waiter] = []
        self.arrivals = 0

    def __len__(self) -> int:
        return len(self.heap)

    def key(self, urgency: Urgency) -> tuple[float, int]:
        """Where an arrival now with this urgency goes (`Slots.start` queues work by it)."""
        self.arrivals += 1
        arrival = self.clock.now() - self.origin
        return (urgency.aging * arrival - urgency.priority, self.arrivals)

    def join(self, urgency: Urgency) -> _Waiter:
        me = _Waiter(self.key(urgency))
        heapq.heappush(self.heap, me)
        return me

    def first(self, me: _Waiter) -> bool:
        return self.heap[0] is me

    def pop(self) -> None:
        heapq.heappop(self.heap)

    def drop(self, me: _Waiter) -> None:
        self.heap.remove(me)
        heapq.heapify(self.heap)

    def nudge(self) -> None:
        if self.heap:
            self.heap[0].turn.set()


class RateLimiter:
    """At most `requests` per `per_seconds`, sliding window. One limiter per provider is
    shared by every request: submits and polls alike. Requests waiting for room go in the
    order of a `Line`: the most urgent first."""

    def __init__(self, requests: int, per_seconds: float, clock: Clock) -> None:
        self.requests, self.per, self.clock = requests, per_seconds, clock
        self.slots: list[Slot] = []
        self.line = Line(clock)
        self.waited = 0.0

    async def acquire(self, urgency: Urgency = ANY) -> Slot:
        """Wait for room in the window; the caller must `release` the slot it gets."""
        me = self.line.join(urgency)
        granted = False
        try:
            while True:
                me.turn = anyio.Event()
                if not self.line.first(me):
                    await me.turn.wait()
                    continue
                now = self.clock.now()
                # (Within a nanosecond: a sleep to the very moment a slot frees may wake a
                # rounding error short of it, and sleeping that error changes no clock.)
                self.slots = [s for s in self.slots if s.flying or now - s.t < self.per - 1e-9]
                if len(self.slots) < self.requests:
                    self.line.pop()
                    granted = True
                    slot = Slot(now)
                    self.slots.append(slot)
                    return slot
                landed = [s.t for s in self.slots if not s.flying]
                # Every slot in flight: it frees `per` after its answer, which has not come.
                wait = self.per - (now - min(landed)) if landed else self.per / 20
                self.waited += wait
                await self.clock.sleep(wait)
        finally:
            if not granted:  # cancelled while waiting
                self.line.drop(me)
            self.line.nudge()  # the next in line looks for room

    def release(self, slot: Slot) -> None:
        """The answer (or the error) is back: the slot now counts from this moment."""
        slot.t, slot.flying = max(slot.t, self.clock.now()), False

    @contextlib.asynccontextmanager
    async def request(self, urgency: Urgency = ANY) -> AsyncIterator[Slot]:
        slot = await self.acquire(urgency)
        try:
            yield slot
        finally:
            self.release(slot)


class _Granted:
    """A place handed to queued work before its task exists (`Slots.start`), until the task
    takes it. Shared with the task's children, which copy its context: only one of them
    can take it."""

    __slots__ = ("slots", "pending")

    def __init__(self, slots: Slots) -> None:
        self.slots, self.pending = slots, True


_GRANTED: contextvars.ContextVar[_Granted | None] = contextvars.ContextVar(
    "sunoflow_granted_place", default=None)


class _Queued:
    __slots__ = ("key", "tg", "fn", "args")

    def __init__(self, key: tuple[float, int], tg: TaskGroup,
                 fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
        self.key, self.tg, self.fn, self.args = key, tg, fn, args

    def __lt__(self, other: _Queued) -> bool:
        return self.key < other.key


class Slots:
    """At most `total` holders at a time, like anyio's CapacityLimiter, but those waiting
    for a place go in the order of a `Line`, by the urgency of the task that asks (the
    engine's --concurrency places: a submit holds one while it waits for the rate
    limiter, so their order is the order the limiter gets to see). `async with slots`
    asks with the current task's PRIORITY; `slots.take(urgency)` with another.

    `start` is for work whose first act is to take a place (an instance ready to submit,
    or to run locally): it waits as an entry in a heap ordered as the line is, not as a
    task parked in the line (a task and its frames are ~5 KB: a ready fan-out of 10,000
    held some 50 MB only to wait), and its task is started when a place is handed to it.
    Only *when* a task starts changes, never what it does, so nothing here bears on what
    is paid for. Queued work and waiting tasks share one order: a place freed goes to
    whichever of the two heads is more urgent."""

    def __init__(self, total: int, clock: Clock) -> None:
        self.total, self.held = max(1, total), 0
        self.line = Line(clock)
        self.queue: list[_Queued] = []

    async def acquire(self, urgency: Urgency) -> None:
        granted = _GRANTED.get()
        if granted is not None and granted.slots is self and granted.pending:
            granted.pending = False  # handed over by `start`: already counted in `held`
            return
        me = self.line.join(urgency)
        got = False
        try:
            while True:
                me.turn = anyio.Event()
                if self.line.first(me) and self.held < self.total and not self._queue_first():
                    self.line.pop()
                    self.held += 1
                    got = True
                    return
                await me.turn.wait()
        finally:
            if not got:
                self.line.drop(me)
            self._next()

    def release(self) -> None:
        self.held -= 1
        self._next()

    def forgo(self) -> None:
        """The current task, started by `start`, waits for something else first: it gives
        back the place it was handed (and asks again later, as any task does). Holding it
        while waiting could wait forever: the work waited for may need the place."""
        granted = _GRANTED.get()
        if granted is not None and granted.slots is self and granted.pending:
            granted.pending = False
            self.release()

    def start(self, tg: TaskGroup, fn: Callable[..., Awaitable[Any]], *args: Any,
              urgency: Urgency = ANY) -> None:
        """Run `fn(*args)` as a task of `tg` once a place is its; the task's first
        `acquire` of these slots takes that place without waiting. A task that ends
        without taking it gives it back."""
        heapq.heappush(self.queue, _Queued(self.line.key(urgency), tg, fn, args))
        self._next()

    def _queue_first(self) -> bool:
        """Is the queue's head ahead of the line's?"""
        return bool(self.queue) and (not self.line.heap or
                                     self.queue[0].key < self.line.heap[0].key)

    def _next(self) -> None:
        """Hand free places to queued work while it is first; else wake the line's head,
        which takes its place itself."""
        while self.held < self.total and self._queue_first():
            job = heapq.heappop(self.queue)
            self.held += 1
            job.tg.start_soon(self._run, job.fn, job.args)
        self.line.nudge()

    async def _run(self, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
        granted = _Granted(self)
        _GRANTED.set(granted)  # this task's own context: its callees see it
        try:
            await fn(*args)
        finally:
            if granted.pending:  # it ended without taking its place
                granted.pending = False
                self.release()

    @contextlib.asynccontextmanager
    async def take(self, urgency: Urgency) -> AsyncIterator[None]:
        await self.acquire(urgency)
        try:
            yield
        finally:
            self.release()

    async def __aenter__(self) -> None:
        await self.acquire(PRIORITY.get())

    async def __aexit__(self, *exc: object) -> None:
        self.release()


# One generator for every backoff's jitter: a Random holds 2.5 KB of state, and every
# submit and every task being polled has a Backoff.
_JITTER = random.Random()


class Backoff:
    """Exponential backoff with full jitter, honouring a server's Retry-After."""

    __slots__ = ("base", "factor", "cap", "rng", "n")

    def __init__(self, base: float = 1.0, factor: float = 2.0, cap: float = 60.0,
                 rng: random.Random | None = None) -> None:
        self.base, self.factor, self.cap = base, factor, cap
        self.rng = rng or _JITTER
        self.n = 0

    def next(self, retry_after: float | None = None) -> float:
        ceiling = min(self.cap, self.base * self.factor ** self.n)
        self.n += 1
        delay = self.rng.uniform(ceiling / 2, ceiling)
        return max(delay, retry_after or 0.0)


DONE_AT_FIRST = 0.85  # a task found done at its first poll took "at most that": a bit less
WINDOW = 64  # the durations remembered per family: the recent ones
# Until a family's first stage has been seen: where to aim, as a share of its median
# duration (the service's first clip is done about three quarters of the way through).
FIRST_SHARE = 0.75
# Polls of a task past its first go this share of the median duration apart (`_spacing`).
SPACING = 0.1
# A task on the run's longest way (no slack) is polled first at this quantile of the
# durations seen, not the median (a short task there costs the album what it is found
# late), then FINE times the usual spacing; a task with slack waits SLACK_SHARE of it more
# (`wait`).
CRITICAL_FIRST, FINE, SLACK_SHARE = 0.25, 1 / 3, 0.5
# A task tied for the longest way with k-1 others (its rivals, engine.priority.standing)
# is the one the run waits for about once in k: its polls go k ** RIVALS times as far
# apart as a lone critical task's (never further than the usual spacing). Spacing
# s_i ~ 1 / sqrt(p_i) is what minimizes the expected lateness sum(p_i * s_i / 2) for a
# number of polls sum(W / s_i). Measured (benchmarks/sim_races.py, 16 songs, strict host,
# 60 seeds): 3.85 -> 3.48 API requests a task, 1.049 -> 1.059x the bound.
RIVALS = 0.5
# While nothing at all is known (no family learned, so no prior), a family with this many
# tasks waiting probes this many times as often: the first family is a whole cohort, and
# each interval a probe waits is an interval every one of them may be found late.
COHORT, COHORT_PROBES = 4, 3


class Poller:
    """When to poll a task, learning how long each operation takes in this run.

    Operations that take about as long share what is learned (`family`: extend learns from
    generate). A duration is taken from the times the polls were *sent*: a task seen running
    at `lo` and done at `hi` took about `(lo + hi) / 2`; one found done at its first poll
    took "at most `hi`", recorded as a little less, so the estimate settles where about half
    the tasks are done at their first poll instead of only ever drifting upward.

    Before anything is known about a family, its tasks take turns: one of them is polled
    every `interval` (not each of them), first `interval` after the first submission, so a
    cohort of a hundred tasks costs what one task costs until the first of them is found
    done (measured: growing the interval made the first of a batch late by tens of seconds,
    which the whole batch then waited for). Once durations are
    known, a task polls first at their median, then at rising quantiles (75 %, 87.5 %, ...),
    never more than a tenth of the median (or `max_interval`) apart: one or two polls for
    most tasks, and a late one is found late by a small fraction of the usual duration.
    Three refinements (issue 21, measured in docs/BENCHMARKS.md): the brackets of the
    first durations, learned while tasks took turns, are narrowed by the other tasks'
    probes (`_floor`); a task past every duration seen looks next at the brackets' upper
    edges; and a task of a new family is also polled once at its `prior` (the defaults'
    figure scaled to the run's pace) once another family is learned.

    Slack (issue 21; the engine gives it, runner.engine.priority `slack`): how much later a
    task could be found done without moving the run's expected end. A task with none (it
    heads the longest way, usually the longest-running of its stage) polls first at the
    first quartile of the durations seen (`CRITICAL_FIRST`; at the median while polls
    queue for the rate limit, `crowded`), then three times as closely (`FINE`); one with
    slack polls first half its slack after the median, then at the rising quantiles or
    half its slack apart (at most `max_interval`), whichever comes first. The first family
    of a run, while nothing is known, probes three times per interval when it is a cohort
    (`COHORT`). Measured on benchmarks/sim_races.py (docs/BENCHMARKS.md).

    The first stage. A task whose dependants can start from its first track (engine rule
    7) gets one more poll, aimed at when that stage is expected (`wait_first`): the median
    of the first stages seen in its family, learned from the tasks that got that poll just
    as durations are from the first polls (found past it there: "at most then", a bit
    less; else within the bounds the next polls give), and until one is seen
    `FIRST_SHARE` of the median duration. Nothing else changes: the usual polls keep their
    schedule, and a task without such dependants is polled exactly as before.
    """

    def __init__(self, interval: float, max_interval: float, clock: Clock, *,
                 family: Callable[[str], str] = lambda op: op,
                 expected: Callable[[str], float] = lambda op: 0.0) -> None:
        self.interval, self.max_interval, self.clock = interval, max_interval, clock
        self.family = family
        # The defaults' seconds an operation usually takes (runner.steps: `expected`; 0:
        # none), for the prior of a family nothing is known about yet (`prior`).
        self.expected = expected
        self.defaults: dict[str, float] = {}  # family -> the defaults' seconds
        # Ages at which probes found a family's tasks running while nothing was known of
        # it, and when its first duration was learned (clock): see `_floor`.
        self.probed: dict[str, deque[float]] = {}
        self.learned_at: dict[str, float] = {}
        # The upper edges of the brackets the durations were taken from ("done by then"):
        # where to look next once a task has outlived every duration seen (`wait`).
        self.upper: dict[str, deque[float]] = {}
        self.seen: dict[str, deque[float]] = {}
        self.first_seen: dict[str, deque[float]] = {}  # family -> when first stages came
        self.turn: dict[str, float] = {}  # family -> when its next probe is due
        self.line: dict[str, deque[object]] = {}  # family -> tasks waiting for a turn
        self.learned: dict[str, anyio.Event] = {}
        self.version = 0  # counts what was learned: a reader knows when to look again

    def durations(self, op: str) -> list[float]:
        return sorted(self.seen.get(self.family(op), ()))

    def _spacing(self, d: list[float]) -> float:
        """How far apart polls go once durations `d` (sorted) are known: a tenth of their
        median, but not closer than a fifth of `interval`."""
        return max(self.interval / 5, SPACING * d[len(d) // 2])

    def estimate(self, op: str, q: float = 0.5) -> float | None:
        d = self.durations(op)
        return d[min(len(d) - 1, int(q * len(d)))] if d else None

    def prior(self, op: str) -> float | None:
        """By when a task of `op` should be done while nothing is known of its family: the
        defaults' figure (`expected`) scaled by how the families already learned in this
        run compare with theirs (the geometric mean of median / default, weighted by the
        durations behind each median). The medians are of the upper edges of the learned
        brackets (the polls that found the tasks done), not of the durations learned:
        the prior places a poll meant to find its task done, and the durations sit below
        the truth when a cohort's first polls land near its end, as probes taken in turn
        do (a task found done at its first poll took "a bit less", DONE_AT_FIRST).
        Measured (benchmarks/sim_races.py): lyrics of 10 s learned as ~8.8 s put the 16
        generates' prior polls at ~128 s for tasks of 150 s, 2 of 16 found done; from
        the upper edges, 3.48 -> 3.31 API requests a task on the 16-song album at the
        same time. None when no family is learned yet, or `op` has no figure: the defaults
        alone say nothing of the service's pace (a fake at a tenth of the time, a slow
        day)."""
        base = self.expected(op)
        if base <= 0:
            return None
        logs, weights = 0.0, 0
        for fam, seen in self.seen.items():
            default = self.defaults.get(fam, 0.0)
            if seen and default > 0:
                # Weighted by the durations behind each median: the first family is
                # often learned from one probe of a short task, whose bracket is as wide
                # as the interval (measured: lyrics of ~10 s learned as 17.7 s).
                d = sorted(self.upper[fam])
                logs += len(d) * math.log(max(d[len(d) // 2], 1e-9) / default)
                weights += len(d)
        return base * math.exp(logs / weights) if weights else None

    def saw_running(self, op: str, age: float) -> None:
        """A poll sent `age` seconds after its task's submission found it running."""
        fam = self.family(op)
        if not self.seen.get(fam):
            self.probed.setdefault(fam, deque(maxlen=WINDOW)).append(age)

    def learn(self, op: str, lo: float | None, hi: float, planned: bool = True,
              waited: float = 0.0) -> None:
        """A task of `op` was last seen running `lo` seconds after its submission (None:
        never) and found done at `hi`, both measured when the polls were sent. A task found
        done at a first poll that was not `planned` (it waited for others to learn, or it
        was resumed late) could have taken any time up to `hi`: it teaches nothing. Nor
        does a poll that `waited` for the rate limiter longer than the poller spaces polls
        (a tenth of the median): the task may have ended long before it went out, and
        learning from it would make every later poll later still (the wait of polls behind
        more urgent requests, runner.engine.priority, is no part of the task's duration)."""
        fam = self.family(op)
        self._default(op)
        guess = self._sample(op, self._floor(fam, lo, hi), hi, planned, waited)
        if guess is not None:
            self.version += 1
            self.seen.setdefault(fam, deque(maxlen=WINDOW)).append(guess)
            self.upper.setdefault(fam, deque(maxlen=WINDOW)).append(hi)
            self.learned_at.setdefault(fam, self.clock.now())
        self.learned.setdefault(fam, anyio.Event()).set()

    def _default(self, op: str) -> None:
        fam = self.family(op)
        self.defaults[fam] = max(self.defaults.get(fam, 0.0), self.expected(op))

    def _floor(self, fam: str, lo: float | None, hi: float) -> float | None:
        """The lower edge of a duration's bracket, raised by what the probes saw. While a
        family is unknown its tasks take turns, so a task's own last "running" is a probe
        up to a cohort's worth of intervals old, and the midpoint of (lo, hi] is biased
        low (measured: ~140 s learned for 150 s tasks, and every extend polled ~12 s
        late). The other tasks probed meanwhile bound it better: the latest age at which
        one was seen running, below `hi`. Only for a bracket that opened while nothing
        was known (a first poll before the first duration; a `lo` seen before it): once
        durations are known, samples keep their own edges, and the estimate its balance
        (see DONE_AT_FIRST)."""
        at = self.learned_at.get(fam)
        if at is not None and (lo is None or self.clock.now() - (hi - lo) >= at):
            return lo
        below = [a for a in self.probed.get(fam, ()) if a < hi and (lo is None or a > lo)]
        return max(below) if below else lo

    def _sample(self, op: str, lo: float | None, hi: float, planned: bool,
                waited: float) -> float | None:
        """What a stage seen not reached at `lo` and reached at `hi` says of when it came,
        or None when it says nothing (see `learn`)."""
        known = self.durations(op)
        if lo is None and not planned or known and waited > self._spacing(known):
            return None
        # Known to within (lo, hi]: the midpoint when the polls were close, but never less
        # than what a task found done at its first poll would say (lo may be a probe sent
        # long before, while nothing was known).
        return hi * DONE_AT_FIRST if lo is None else max((lo + hi) / 2, hi * DONE_AT_FIRST)

    def learn_first(self, op: str, lo: float | None, hi: float, planned: bool = True,
                    waited: float = 0.0) -> None:
        """A task of `op` was last seen before its first stage at `lo` (None: never) and
        past it (its first track ready, or done) at `hi`; as `learn`, where `planned` says
        the poll at `hi` was the one aimed at the first stage."""
        guess = self._sample(op, lo, hi, planned, waited)
        if guess is not None:
            self.first_seen.setdefault(self.family(op), deque(maxlen=WINDOW)).append(guess)

    def first_estimate(self, op: str) -> float | None:
        """When a task of `op` is expected to reach its first stage: the median of those
        seen, else FIRST_SHARE of the median duration; None while nothing is known."""
        seen = sorted(self.first_seen.get(self.family(op), ()))
        if seen:
            return seen[len(seen) // 2]
        d = self.estimate(op)
        return None if d is None else FIRST_SHARE * d

    async def wait_first(self, op: str, t0: float,
                         due_in: Callable[[float], None] | None = None) -> bool:
        """Sleep until a task of `op` submitted at `t0` is expected to reach its first
        stage, and return True: the caller polls then, once, besides the usual polls.
        Return False at once, without sleeping, when there is nothing to aim at: nothing
        is known yet (the tasks take turns, see `wait`), that moment is past (a resumed
        task), or it is no earlier than the usual first poll, which sees it anyway."""
        at = self.first_estimate(op)
        full = self.estimate(op)
        elapsed = self.clock.now() - t0
        if at is None or full is None or at <= elapsed or at >= full:
            return False
        if due_in is not None:
            due_in(at - elapsed)
        await self.clock.sleep(at - elapsed)
        return True

    async def wait(self, op: str, t0: float, n: int,
                   due_in: Callable[[float], None] | None = None,
                   slack: float | None = None, crowded: bool = False,
                   rivals: int = 1, first: bool = False) -> bool:
        """Sleep before poll number `n` (0-based) of a task submitted at `t0`. Return
        whether a first poll was placed by the poller (a probe, or at the median) rather than
        sent late because the task waited for others to learn or was resumed late: only
        then does finding the task done at once say something about how long it took.
        `slack`, `crowded`, `rivals`: the task's place on the run's longest way
        (runner.engine.priority.standing) and whether polls queue for the rate limit.
        `first`: the task's first stage is wanted (early release, rule 7) while its
        family is not learned yet (once it is, `wait_first` aims)."""
        fam = self.family(op)
        self._default(op)
        queued = False  # it waited in line while its family was learned by another's probe
        if not self.seen.get(fam):
            # Nothing known: the family's tasks take turns, first come first served, and a
            # task that was just probed goes to the back of the line. The first probe is one
            # interval after the first submission; each probe moves the turn on.
            # Besides its turns, a task of a new family polls once when the defaults,
            # scaled to this run's pace (`prior`), say it is about done, once another
            # family is learned (measured: WAV took turns from zero knowledge, ~10 s late
            # a step). At most one poll more a task; the turns go on as before, so a prior
            # that is wrong costs that poll and nothing else. Likewise one poll aimed at
            # the first stage (FIRST_SHARE of the prior) of a task whose first stage is
            # wanted: without it the first stages of a new family are found only by
            # the turns, one task an interval (measured, 4 songs of fixed latencies with
            # early work accepted: 0.956 -> 0.880x the bound; 16 songs: 0.921 -> 0.910).
            # Never instead of the turns: aimed by a prior that was too high, the first
            # cohort went unprobed for minutes (measured: a 16-song album at 1.21x).
            prior = self.prior(op)
            mine = t0 + prior if prior is not None and prior > self.clock.now() - t0 \
                else None
            aim = t0 + FIRST_SHARE * prior if first and prior is not None \
                and FIRST_SHARE * prior > self.clock.now() - t0 else None
            me = object()
            line = self.line.setdefault(fam, deque())
            line.append(me)
            try:
                while not self.seen.get(fam):
                    now = self.clock.now()
                    due = self.turn.setdefault(fam, t0 + self.interval)
                    if aim is not None and now >= aim:
                        self.turn[fam] = max(due, now + self.interval / 5)
                        return True  # placed by the prior, as below
                    if mine is not None and now >= mine:
                        # (No probe of the family at the same moment: the turn moves on.)
                        self.turn[fam] = max(due, now + self.interval / 5)
                        return True  # placed by the prior: finding it done teaches
                    if now >= due and line[0] is me:
                        self.turn[fam] = now + self.interval / (
                            COHORT_PROBES if prior is None and len(line) >= COHORT else 1)
                        return True  # a probe: finding its task done teaches as usual
                    if due_in is not None:  # for the progress view: its turn, at the soonest
                        due_in(max(0.0, due - now) + self.interval * line.index(me))
                    nap = max(due - now, self.interval / 5)
                    for at in (mine, aim):
                        if at is not None:
                            nap = min(nap, at - now)
                    await sleep_or(self.clock, self.learned.setdefault(fam, anyio.Event()),
                                   nap)
            finally:
                line.remove(me)
            queued = True
        d = self.durations(op)
        elapsed = self.clock.now() - t0
        gap = min(self.max_interval, self._spacing(d))
        # Slack (runner.engine.priority): a task that heads the run's longest way is polled
        # closer together, a task that can be found late at no cost further apart.
        critical = slack is not None and slack < gap
        if slack is not None:
            gap = max(self.interval / 5, gap * min(1.0, FINE * rivals ** RIVALS)) \
                if critical else min(self.max_interval, max(gap, slack * SLACK_SHARE))
        # (Not while polls queue for the rate limit, `crowded`: there an early poll takes
        # a place a submission or a surer poll needs; measured on the 100-song album.)
        level = CRITICAL_FIRST if critical and n == 0 and not queued and not crowded \
            else 0.5
        while True:
            at = d[min(len(d) - 1, int(level * len(d)))]
            if at > elapsed or int(level * len(d)) >= len(d) - 1:
                break
            level = 1 - (1 - level) / 2
        if n == 0 or queued:
            # The first poll placed by what is known: at the median, at once for a task
            # resumed late or one that took turns (probed, found running) while the first
            # of its family was learned: a cohort submitted together is mostly done by then
            # (measured: waiting the usual `gap` here made 3 of 4 songs ~14 s late).
            due = at
            planned = at > elapsed
            if slack is not None and not critical and not queued:
                due = at + min(self.max_interval, slack * SLACK_SHARE)
        elif at > elapsed:
            due = min(at, elapsed + gap)
        else:
            # Later than every duration seen: poll every `gap`, or sooner where the tasks
            # seen were all done by (the median of the upper edges of their brackets
            # still ahead). A duration is a midpoint, so with little spread every one of
            # them can lie just short of the truth (measured: fixed 150 s tasks learned
            # as ~149 s, each found running at its first poll and done a whole `gap`,
            # 15 s, later).
            due = elapsed + gap
            ahead = sorted(h for h in self.upper.get(fam, ()) if elapsed < h < due)
            if ahead:
                due = ahead[len(ahead) // 2]
        # (Later polls are not spread out while requests queue for the rate limit: there
        # submits go first (runner.engine.priority), so a poll takes no submission's place.)
        least = self.interval / 5 if n and not queued else 0.0
        if due_in is not None:
            due_in(max(due - elapsed, least))
        await self.clock.sleep(max(due - elapsed, least))
        return n > 0 or planned
