"""Slots: a capacity limiter whose would-be waiters queue as entries, not as parked tasks.

The engine bounds local work (the cores) and remote work on this machine (--concurrency)
with a limiter each. An instance whose first act is to take a slot, started as a task the
moment it is ready, would wait in the limiter as a parked task: the task, its chain of
coroutine frames and the waiter's event, about 5 KB each, so a fan-out of 10,000 ready
instances held some 50 MB only to wait. `Slots.start` starts such work at once only while
fewer tasks wait for a slot than there are slots; otherwise the work waits in a queue (the
function and its arguments) and is started as slots are released.

Only *when* a task is spawned changes: the work, its order (first come, first started)
and what the limiter admits are as before, so nothing here bears on what is paid for. One
consequence: a task already running that comes back for a slot (to download a finished
task's files) waits behind at most `total` others, not behind every ready instance. A
started task that never takes the slot (its key turned out to be another's work in
flight, say) is accounted for when it ends, so the queue cannot stall.
"""

from __future__ import annotations

import contextvars
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from anyio.abc import TaskGroup


class _Arrival:
    """Marks a task started by `Slots.start` until it first takes one of those slots."""

    __slots__ = ("slots", "pending")

    def __init__(self, slots: Slots) -> None:
        self.slots, self.pending = slots, True


_ARRIVAL: contextvars.ContextVar[_Arrival | None] = contextvars.ContextVar(
    "sunoflow_slot_arrival", default=None)


class Slots:
    """`async with slots:` as anyio's CapacityLimiter (first come, first served), plus
    `start`, which spawns work that begins by taking a slot only when it would not just
    wait for one."""

    def __init__(self, total: int) -> None:
        self.limiter = anyio.CapacityLimiter(max(1, total))
        self.queue: deque[tuple[TaskGroup, Callable[..., Awaitable[Any]], tuple[Any, ...]]] = \
            deque()
        self.coming = 0  # started by `start`, not yet holding or waiting for a slot

    @property
    def total(self) -> int:
        return int(self.limiter.total_tokens)

    async def __aenter__(self) -> None:
        arrival = _ARRIVAL.get()
        if arrival is not None and arrival.slots is self and arrival.pending:
            arrival.pending = False
            self.coming -= 1
        await self.limiter.acquire()
        self._refill()  # got it at once, maybe: keep a task waiting behind it

    async def __aexit__(self, *exc: object) -> None:
        self.limiter.release()
        self._refill()

    def start(self, tg: TaskGroup, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run `fn(*args)` as a task of `tg`, now if a slot could soon be its, else when
        one is released. First come, first started."""
        self.queue.append((tg, fn, args))
        self._refill()

    def _busy(self) -> bool:
        return self.limiter.statistics().tasks_waiting + self.coming >= self.total

    def _refill(self) -> None:
        while self.queue and not self._busy():
            tg, fn, args = self.queue.popleft()
            self.coming += 1
            tg.start_soon(self._run, fn, args)

    async def _run(self, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
        arrival = _Arrival(self)
        _ARRIVAL.set(arrival)  # this task's own context: its callees see it
        try:
            await fn(*args)
        finally:
            if arrival.pending:  # it ended without ever asking for a slot
                arrival.pending = False
                self.coming -= 1
                self._refill()
