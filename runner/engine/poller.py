"""Waiting for a task the service runs: polls placed by what the run has learned
(pacing.Poller), callbacks with fallback polls (--listen), the stream links a running task
offers (a preview, never an end), and the task's first stage, taken once (early release,
rule 7). Nothing here submits: a poll or a callback can end a task, never pay for one."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

from runner.callbacks.registry import Callbacks
from runner.engine import deadlines
from runner.engine.files import Files
from runner.errors import ProviderError, StepError, TaskFailed, TransientError
from runner.pacing import AHEAD, PRIORITY, SENT_AT, Backoff
from runner.plan.model import Instance
from runner.providers import CallbackProvider, First, Op, Result, Streams

QUEUE_WEIGHT = 0.2  # of the latest poll's wait in the moving average of polls' waits


class Polling(Files):
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
        want_first = self._wants_first(inst, op, task_id)
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

        self.inflight[inst.id] = t0
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
                        if aimed and not self._wants_first(inst, op, task_id):
                            # The host was learned to refuse that early work while this
                            # poll waited (rule 8): nothing would start from the first
                            # stage, so the poll is not sent (measured: on a host that
                            # refuses, 16 of 16 extends' aimed polls were wasted).
                            aimed = learn_first = want_first = False
                    if not aimed:
                        standing = self.urgency.standing(inst.id, self.inflight)
                        placed = await self.poller.wait(
                            op.type, t0, n, lambda s: self.ui.poll_due(inst.id, s),
                            slack=None if standing is None else standing[0],
                            crowded=self.poll_queue > self.poller.interval / 5,
                            rivals=1 if standing is None else standing[1],
                            first=want_first and self.remote.reports_first and
                            self._wants_first(inst, op, task_id))
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
                # How long polls wait for the rate limit lately (a moving average): while
                # they queue, a poll more takes a place another request needs.
                self.poll_queue += (waited - self.poll_queue) * QUEUE_WEIGHT
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
                    if want_first and self._wants_first(inst, op, task_id):
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
            self.inflight.pop(inst.id, None)
            if cb is not None:
                cb.finish(task_id)  # later callbacks for it are duplicates: ignored
            self.previews.forget(task_id)

    def _wants_first(self, inst: Instance, op: Op, task_id: str) -> bool:
        """Is this task's first stage wanted now: does a step that waits for it start early
        (rule 8, as the host is known now), and has none been taken for it?"""
        return any(self._speculates(self.plan.instances[d])
                   for d in self.early_of.get(inst.id, ())) and \
            inst.id not in self.first_released and \
            self._first_of(op.key, task_id) is None and op.key not in self.adopted

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
