"""Time: the clock, the shared rate limiter, retry backoff and adaptive polling.

Everything takes a Clock so tests can run the whole schedule without real sleeps.
"""

from __future__ import annotations

import random
import statistics
import time
from collections import deque

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


class RateLimiter:
    """At most `requests` per `per_seconds`, sliding window, first come first served.
    One limiter per provider is shared by every request: submits and polls alike."""

    def __init__(self, requests: int, per_seconds: float, clock: Clock) -> None:
        self.requests, self.per, self.clock = requests, per_seconds, clock
        self.sent: deque[float] = deque()
        self.lock = anyio.Lock()
        self.waited = 0.0

    async def acquire(self) -> None:
        async with self.lock:
            while True:
                now = self.clock.now()
                while self.sent and now - self.sent[0] >= self.per:
                    self.sent.popleft()
                if len(self.sent) < self.requests:
                    self.sent.append(now)
                    return
                wait = self.per - (now - self.sent[0])
                self.waited += wait
                await self.clock.sleep(wait)


class Backoff:
    """Exponential backoff with full jitter, honouring a server's Retry-After."""

    def __init__(self, base: float = 1.0, factor: float = 2.0, cap: float = 60.0,
                 rng: random.Random | None = None) -> None:
        self.base, self.factor, self.cap = base, factor, cap
        self.rng = rng or random.Random()
        self.n = 0

    def next(self, retry_after: float | None = None) -> float:
        ceiling = min(self.cap, self.base * self.factor ** self.n)
        self.n += 1
        delay = self.rng.uniform(ceiling / 2, ceiling)
        return max(delay, retry_after or 0.0)


class Poller:
    """When to poll a task, learning how long each operation takes in this run.

    Before anything is known about an operation, one task (the scout) polls on a growing
    interval from `interval` to `max_interval`; the others wait for it to learn. Once a
    duration is known, a task sleeps until it is expected to finish and then polls at a
    short spacing (4% of the expected duration), so most tasks need one or two polls.
    """

    def __init__(self, interval: float, max_interval: float, clock: Clock) -> None:
        self.interval, self.max_interval, self.clock = interval, max_interval, clock
        self.seen: dict[str, deque[float]] = {}
        self.scouting: set[str] = set()
        self.learned: dict[str, anyio.Event] = {}

    def estimate(self, op: str) -> float | None:
        d = self.seen.get(op)
        return statistics.median(d) if d else None

    def learn(self, op: str, duration: float) -> None:
        self.seen.setdefault(op, deque(maxlen=50)).append(duration)
        self.learned.setdefault(op, anyio.Event()).set()

    async def wait(self, op: str, t0: float, n: int) -> None:
        """Sleep before poll number `n` (0-based) of a task submitted at `t0`."""
        est = self.estimate(op)
        if est is None and op not in self.scouting:
            self.scouting.add(op)
            try:
                await self.clock.sleep(min(self.max_interval, self.interval * 1.5 ** n))
            finally:
                self.scouting.discard(op)
            return
        if est is None:
            ev = self.learned.setdefault(op, anyio.Event())
            with anyio.move_on_after(self.max_interval):
                await ev.wait()
            est = self.estimate(op)
            if est is None:
                return
        due = t0 + est - self.clock.now()
        if due > 0:
            await self.clock.sleep(due)
            return
        spacing = min(self.max_interval, max(self.interval / 5, 0.04 * est))
        await self.clock.sleep(spacing)
