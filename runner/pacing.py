"""Time: the clock, the shared rate limiter, retry backoff and adaptive polling.

Everything takes a Clock so tests can run the whole schedule without real sleeps.
"""

from __future__ import annotations

import contextlib
import contextvars
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable

import anyio


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


class RateLimiter:
    """At most `requests` per `per_seconds`, sliding window, first come first served.
    One limiter per provider is shared by every request: submits and polls alike."""

    def __init__(self, requests: int, per_seconds: float, clock: Clock) -> None:
        self.requests, self.per, self.clock = requests, per_seconds, clock
        self.slots: list[Slot] = []
        self.lock = anyio.Lock()
        self.waited = 0.0

    async def acquire(self) -> Slot:
        """Wait for room in the window; the caller must `release` the slot it gets."""
        async with self.lock:
            while True:
                now = self.clock.now()
                self.slots = [s for s in self.slots if s.flying or now - s.t < self.per]
                if len(self.slots) < self.requests:
                    slot = Slot(now)
                    self.slots.append(slot)
                    return slot
                landed = [s.t for s in self.slots if not s.flying]
                # Every slot in flight: it frees `per` after its answer, which has not come.
                wait = self.per - (now - min(landed)) if landed else self.per / 20
                self.waited += wait
                await self.clock.sleep(wait)

    def release(self, slot: Slot) -> None:
        """The answer (or the error) is back: the slot now counts from this moment."""
        slot.t, slot.flying = max(slot.t, self.clock.now()), False

    @contextlib.asynccontextmanager
    async def request(self) -> AsyncIterator[Slot]:
        slot = await self.acquire()
        try:
            yield slot
        finally:
            self.release(slot)


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
    """

    def __init__(self, interval: float, max_interval: float, clock: Clock, *,
                 family: Callable[[str], str] = lambda op: op) -> None:
        self.interval, self.max_interval, self.clock = interval, max_interval, clock
        self.family = family
        self.seen: dict[str, deque[float]] = {}
        self.turn: dict[str, float] = {}  # family -> when its next probe is due
        self.line: dict[str, deque[object]] = {}  # family -> tasks waiting for a turn
        self.backlog = 0.0  # seconds polls recently waited for the rate limiter
        self.learned: dict[str, anyio.Event] = {}

    def durations(self, op: str) -> list[float]:
        return sorted(self.seen.get(self.family(op), ()))

    def estimate(self, op: str, q: float = 0.5) -> float | None:
        d = self.durations(op)
        return d[min(len(d) - 1, int(q * len(d)))] if d else None

    def learn(self, op: str, lo: float | None, hi: float, planned: bool = True) -> None:
        """A task of `op` was last seen running `lo` seconds after its submission (None:
        never) and found done at `hi`, both measured when the polls were sent. A task found
        done at a first poll that was not `planned` (it waited for others to learn, or it
        was resumed late) could have taken any time up to `hi`: it teaches nothing."""
        fam = self.family(op)
        if lo is None and not planned:
            self.learned.setdefault(fam, anyio.Event()).set()
            return
        # Known to within (lo, hi]: the midpoint when the polls were close, but never less
        # than what a task found done at its first poll would say (lo may be a probe sent
        # long before, while nothing was known).
        guess = hi * DONE_AT_FIRST if lo is None else max((lo + hi) / 2, hi * DONE_AT_FIRST)
        self.seen.setdefault(fam, deque(maxlen=WINDOW)).append(guess)
        self.learned.setdefault(fam, anyio.Event()).set()

    def queued(self, seconds: float) -> None:
        """A poll waited this long for the rate limiter. While requests queue, a poll that
        finds a task still running takes a submission's place: later polls of a task that
        was not done when expected are spread by twice the recent wait."""
        self.backlog = 0.8 * self.backlog + 0.2 * max(0.0, seconds)

    async def wait(self, op: str, t0: float, n: int) -> bool:
        """Sleep before poll number `n` (0-based) of a task submitted at `t0`. Return
        whether a first poll was placed by the poller (a probe, or at the median) rather than
        sent late because the task waited for others to learn or was resumed late: only
        then does finding the task done at once say something about how long it took."""
        fam = self.family(op)
        if not self.seen.get(fam):
            # Nothing known: the family's tasks take turns, first come first served, and a
            # task that was just probed goes to the back of the line. The first probe is one
            # interval after the first submission; each probe moves the turn on.
            me = object()
            line = self.line.setdefault(fam, deque())
            line.append(me)
            try:
                while not self.seen.get(fam):
                    now = self.clock.now()
                    due = self.turn.setdefault(fam, t0 + self.interval)
                    if now >= due and line[0] is me:
                        self.turn[fam] = now + self.interval
                        return True  # a probe: finding its task done teaches as usual
                    await sleep_or(self.clock, self.learned.setdefault(fam, anyio.Event()),
                                   max(due - now, self.interval / 5))
            finally:
                line.remove(me)
        d = self.durations(op)
        elapsed = self.clock.now() - t0
        gap = min(self.max_interval, max(self.interval / 5, 0.1 * d[len(d) // 2]))
        level = 0.5
        while True:
            at = d[min(len(d) - 1, int(level * len(d)))]
            if at > elapsed or int(level * len(d)) >= len(d) - 1:
                break
            level = 1 - (1 - level) / 2
        if n == 0:
            due = at  # the first poll: at the median (at once for a task resumed late)
            planned = at > elapsed
        elif at > elapsed:
            due = min(at, elapsed + gap)
        else:
            due = elapsed + gap  # later than every duration seen: poll every `gap`
        least = max(self.interval / 5, min(self.max_interval, 2 * self.backlog)) if n else 0.0
        await self.clock.sleep(max(due - elapsed, least))
        return n > 0 or planned
