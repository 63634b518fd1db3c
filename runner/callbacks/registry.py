"""The run's callback registry: which tasks may be called back, what arrived for each, and
when a task with callbacks is polled anyway.

The listener (runner.callbacks.listener) hands every authenticated, well-formed body to `deliver`;
the engine registers each task it submits (`expect`), waits on it (`wait`) and closes it
(`finish`). What holds, and why:

- Only tasks this run submitted are known. The URL's token is new for every run, so a
  task resumed from an earlier run is never called back: it is polled (resume rules of
  runner.engine are unchanged).
- A callback may overtake the answer to its own submit (a fast task, a slow network).
  While a submit is on the wire its task id is unknown, so a body for an unknown task is
  held in a small early buffer (bounded) until the submit returns and `expect` claims it;
  when no submit is on the wire the buffer is emptied and an unknown task is a 404.
- Duplicates and out-of-order stages are harmless: bodies queue per task, the engine
  takes the first one that completes or fails the task, and a finished task ignores the
  rest (answered 200, so the service stops retrying).
- Nothing here decides on money. A failure reported by a callback is confirmed by a poll
  before the engine acts on it (runner.engine.poller `_callback`).

Polling remains as a fallback, because a callback can be lost: a task with callbacks is
polled first at 1.1 times the 90th percentile of the durations this run's callbacks showed
for its operation (at least `max_interval`; three `max_interval`s while nothing is
learned), then every
`max_interval`. Only callbacks teach durations: a fallback poll's time is when we looked,
not when the task ended, and learning it would stretch the schedule after every loss.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio

from runner.pacing import Clock, sleep_or

INBOX_MAX = 16  # bodies queued for one task (stages and duplicates); more are dropped
# Bodies held at once, over every task and the early buffer. The engine takes a task's
# bodies as soon as they arrive, so real traffic holds a handful; the cap bounds what a
# sender holding the token could make us keep (at most HELD_MAX x the listener's 1 MiB).
HELD_MAX = 256
FALLBACK_MARGIN = 1.1  # the first fallback poll: this times the 90th percentile seen
UNKNOWN_FIRST = 3.0  # first fallback poll, in max_interval units, before anything is learned


@dataclass
class _Task:
    inbox: deque[Any] = field(default_factory=deque)
    arrived: anyio.Event = field(default_factory=anyio.Event)
    open: bool = True


@dataclass
class Stats:
    received: int = 0  # bodies filed for a task of this run
    used: int = 0  # callbacks that completed a task
    ignored: int = 0  # for a task already finished: duplicates, late stages
    rejected: dict[str, int] = field(default_factory=dict)  # reason -> count


class Callbacks:
    def __init__(self, identify: Callable[[Any], str | None], max_interval: float) -> None:
        self.identify = identify  # the provider's: which task a body is about
        self.max_interval = max_interval
        # The secret part of the callback URL: 256 bits, new for every run, never logged.
        self.token = secrets.token_urlsafe(32)
        self.tasks: dict[str, _Task] = {}
        self.early: dict[str, list[Any]] = {}  # task id -> bodies that overtook its submit
        self.held = 0  # bodies in inboxes and the early buffer
        self.submits = 0
        self.seen: dict[str, deque[float]] = {}
        self.stats = Stats()

    def url(self, base: str) -> str:
        return f"{base.rstrip('/')}/cb/{self.token}"

    # --- the engine's side ---------------------------------------------------------

    @contextmanager
    def submitting(self) -> Iterator[None]:
        """Around a submit: its task's callbacks may come before its answer."""
        self.submits += 1
        try:
            yield
        finally:
            self.submits -= 1
            if self.submits == 0 and self.early:
                # Every submit on the wire has claimed its task: the rest name no task of
                # this run.
                dropped = sum(len(v) for v in self.early.values())
                self.reject("unknown task", dropped)
                self.held -= dropped
                self.early.clear()

    def expect(self, task_id: str) -> None:
        task = self.tasks.setdefault(task_id, _Task())
        for body in self.early.pop(task_id, ()):
            self.stats.received += 1
            task.inbox.append(body)
            task.arrived.set()

    def expects(self, task_id: str) -> bool:
        return task_id in self.tasks

    def finish(self, task_id: str) -> None:
        task = self.tasks.get(task_id)
        if task is not None:
            task.open = False
            self.held -= len(task.inbox)
            task.inbox.clear()

    async def wait(self, task_id: str, seconds: float, clock: Clock) -> list[Any]:
        """The bodies that arrived for `task_id`, waiting up to `seconds` on `clock` for
        one; an empty list when none came in time."""
        task = self.tasks[task_id]
        if not task.inbox and seconds > 0:
            await sleep_or(clock, task.arrived, seconds)
        bodies = list(task.inbox)
        self.held -= len(bodies)
        task.inbox.clear()
        task.arrived = anyio.Event()
        return bodies

    def used(self) -> None:
        self.stats.used += 1

    def learn(self, op: str, seconds: float) -> None:
        self.seen.setdefault(op, deque(maxlen=50)).append(seconds)

    def fallback_after(self, op: str, n: int) -> float:
        """Seconds after its submit at which fallback poll `n` (0-based) of a task is due."""
        d = sorted(self.seen.get(op, ()))
        # A callback comes when its task ends, so `seen` holds true durations: a task not
        # called back a little after the slowest tenth of them has probably lost its
        # callback (about one in twenty of those polled is merely slow: one extra poll).
        first = max(self.max_interval, FALLBACK_MARGIN * d[int(0.9 * (len(d) - 1))]) if d \
            else UNKNOWN_FIRST * self.max_interval
        return first + n * self.max_interval

    # --- the listener's side ---------------------------------------------------------

    def deliver(self, body: Any) -> int:
        """File a body that came with the right token; the HTTP status to answer."""
        task_id = self.identify(body)
        if task_id is None:
            self.reject("no task id")
            return 400
        task = self.tasks.get(task_id)
        if task is not None and not task.open:
            self.stats.ignored += 1
            return 200
        if task is None and self.submits == 0:
            self.reject("unknown task")
            return 404
        queue = task.inbox if task is not None else self.early.setdefault(task_id, [])
        if len(queue) >= INBOX_MAX or self.held >= HELD_MAX:
            # Answered 503 so a real sender tries again later; the fallback poll remains.
            self.reject("too many held")
            return 503
        queue.append(body)
        self.held += 1
        if task is not None:
            task.arrived.set()
            self.stats.received += 1
        return 200

    def reject(self, reason: str, n: int = 1) -> None:
        self.stats.rejected[reason] = self.stats.rejected.get(reason, 0) + n
