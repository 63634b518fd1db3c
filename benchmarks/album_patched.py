"""`sunoflow` with the changes proposed in docs/BENCHMARKS-album.md applied as patches at
import time, so the benchmark can measure them without editing runner/.

    python benchmarks/album_patched.py PATCHES run RECIPE ...   # PATCHES: limiter,poller

- limiter: a request holds its rate-limit slot from the moment it is granted until its
  answer arrives (the slot's timestamp moves to the answer), so the client's window is never
  ahead of the server's, which counts a request when it arrives (runner/pacing.RateLimiter,
  runner/providers/http.ApiClient.send).
- poller: the poll time is taken when the request is sent (after the limiter), not when its
  answer comes back; extend and the other music operations share generate's estimate; a
  task seen running records the midpoint of its last running and first done polls, one
  found done at its first poll records a little less than that poll's time, so the median
  settles on the median duration instead of only ever drifting upward (runner/pacing.Poller,
  runner/engine.Engine._poll). The first-poll target is the ALBUM_POLL_QUANTILE (default
  0.5) of those records.
- priority (implies limiter): when requests queue for the window, the one whose instance
  has the longest chain of steps left goes first (a submit before a poll of the same
  depth), instead of first come, first served.
- hold (implies poller): while nothing is known about an operation, only its scout polls;
  the other tasks wait for what it learns instead of polling every max_interval.
- ladder (implies poller): once durations are known, poll at their quantiles p, then
  halfway from there to 1 (p = ALBUM_POLL_QUANTILE: 0.5 -> q50, q75, q87.5, ...), instead
  of sleeping to the median and then polling every 4 % of it.

This is a measuring device, not the fix: the fix belongs in runner/, with tests.
"""

from __future__ import annotations

import contextvars
import heapq
import itertools
import os
import sys
from collections import deque
from typing import Any

import anyio

from runner import engine as engine_mod
from runner import pacing
from runner.errors import StepError, TransientError
from runner.providers import http as http_mod

SENT: contextvars.ContextVar[float] = contextvars.ContextVar("sent", default=0.0)
STAMP = False  # set by the "limiter" patch
HOLD = False  # set by the "hold" patch
LADDER = False  # set by the "ladder" patch


class StampLimiter(pacing.RateLimiter):
    """A slot's time is the later of its grant and its answer (see `answered`)."""

    async def acquire(self) -> Any:  # type: ignore[override]
        async with self.lock:
            while True:
                now = self.clock.now()
                live = [s for s in self.sent if now - s[0] < self.per]
                self.sent = deque(live)
                if len(live) < self.requests:
                    stamp = [now]
                    self.sent.append(stamp)
                    return stamp
                wait = self.per - (now - min(s[0] for s in live))
                self.waited += wait
                await self.clock.sleep(wait)


class Waiter:
    def __init__(self, priority: int, seq: int) -> None:
        self.key = (-priority, seq)
        self.turn = anyio.Event()

    def __lt__(self, other: Waiter) -> bool:
        return self.key < other.key


class PriorityLimiter(StampLimiter):
    """The same window, but when requests queue for it the one with the highest priority
    goes first (ties: first come, first served)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.queue: list[Waiter] = []
        self.seq = itertools.count()

    async def acquire(self, priority: int = 0) -> Any:  # type: ignore[override]
        me = Waiter(priority, next(self.seq))
        heapq.heappush(self.queue, me)
        while True:
            if self.queue[0] is not me:
                await me.turn.wait()
                me.turn = anyio.Event()
                continue
            now = self.clock.now()
            live = [s for s in self.sent if now - s[0] < self.per]
            self.sent = deque(live)
            if len(live) < self.requests:
                heapq.heappop(self.queue)
                if self.queue:
                    self.queue[0].turn.set()
                stamp = [now]
                self.sent.append(stamp)
                return stamp
            wait = self.per - (now - min(s[0] for s in live))
            self.waited += wait
            await self.clock.sleep(wait)


PRIO: contextvars.ContextVar[int] = contextvars.ContextVar("prio", default=0)


async def send(
    self: http_mod.ApiClient, method: str, url: str, *, step: str | None, submit: bool, **kw: Any
) -> http_mod.Answer:
    """ApiClient.send, recording when the request left and (with STAMP) when it came back."""
    import httpx

    full = url if "://" in url else self.base_url + url
    path = http_mod.urlsplit(full).path
    where = f"{method} {path}"
    stamp = None
    if isinstance(self.limiter, PriorityLimiter):
        # Deeper remaining chains first; a submit before a poll of the same depth.
        stamp = await self.limiter.acquire(2 * PRIO.get() + (1 if submit else 0))
    elif self.limiter is not None:
        stamp = await self.limiter.acquire()
    clock = self.limiter.clock if self.limiter is not None else pacing.Clock()
    SENT.set(clock.now())
    self.requests += 1
    try:
        resp = await self.client.request(method, full, **kw)
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        raise TransientError(f"{where}: cannot reach ({type(exc).__name__})", step=step) from exc
    except (httpx.WriteError, httpx.WriteTimeout) as exc:
        raise TransientError(f"{where}: sending failed ({type(exc).__name__})", step=step) from exc
    except httpx.TransportError as exc:
        raise http_mod.lost(where, type(exc).__name__, step=step, submit=submit) from exc
    finally:
        if STAMP and isinstance(stamp, list):
            stamp[0] = clock.now()
    text = self.redact(resp.text)
    try:
        body = http_mod.json.loads(text) if text.strip() else None
    except ValueError:
        body = None
    return http_mod.Answer(method, path, resp.status_code, resp.headers, body, text)


MUSIC = {"extend", "upload_cover", "upload_extend", "add_vocals", "add_instrumental"}
DONE_AT_FIRST = 0.85  # what a task found done at its first poll says: "a bit before that"


def family(op: str) -> str:
    return "generate" if op in MUSIC else op


class Poller(pacing.Poller):
    quantile = float(os.environ.get("ALBUM_POLL_QUANTILE", "0.5"))

    def estimate(self, op: str) -> float | None:
        """The first-poll target: this quantile of the recorded durations (median: 0.5)."""
        d = self.seen.get(family(op))
        if not d:
            return None
        ranked = sorted(d)
        return ranked[min(len(ranked) - 1, int(self.quantile * len(ranked)))]

    def observe(self, op: str, lo: float | None, hi: float) -> None:
        """A task of `op` was running at `lo` (None: never seen running) and done at `hi`,
        seconds after its submission, both taken when the poll was sent.

        A task seen running has its duration known to within one poll spacing: record the
        midpoint. One found done at its first poll says only "at most hi": record a little
        less, so that the median settles where half the tasks are done at their first poll
        (the median duration) instead of creeping upward with every poll that was late.
        """
        fam = family(op)
        guess = (lo + hi) / 2 if lo is not None else hi * DONE_AT_FIRST
        self.seen.setdefault(fam, deque(maxlen=50)).append(guess)
        self.learned.setdefault(fam, anyio.Event()).set()

    async def wait(self, op: str, t0: float, n: int) -> None:
        fam = family(op)
        if HOLD:
            await self._hold(fam, t0)
        seen = sorted(self.seen.get(fam, ()))
        if not LADDER or not seen:
            await super().wait(fam, t0, n)
            return
        # Poll at the quantiles p, then halfway to 1 each time (p = 0.5: the median, q75,
        # q87.5, ...): each poll finds the task done with probability 1 - p, about, so a
        # task needs 1 / (1 - p) ... polls on average, and a slow one is polled at most
        # log2(window) times before the longest duration seen.
        elapsed, level = self.clock.now() - t0, self.quantile
        while level < 1.0:
            at = seen[min(len(seen) - 1, int(level * len(seen)))]
            if at > elapsed + 1e-6:
                await self.clock.sleep(at - elapsed)
                return
            if int(level * len(seen)) >= len(seen) - 1:
                break
            level = 1 - (1 - level) / 2
        spacing = min(self.max_interval, max(self.interval / 5, 0.1 * seen[len(seen) // 2]))
        await self.clock.sleep(spacing)

    async def _hold(self, fam: str, t0: float) -> None:
        """While nothing is known about `fam`, only one task (the scout) polls; the others
        wait for what it learns instead of polling every max_interval. A scout that stops
        asking (its task failed) is replaced after two max_intervals."""
        scouts: dict[str, tuple[float, float]] = self.__dict__.setdefault("scouts", {})
        while self.estimate(fam) is None:
            now = self.clock.now()
            scout, seen = scouts.get(fam, (t0, now))
            if scout == t0 or now - seen > 2 * self.max_interval:
                scouts[fam] = (t0, now)
                return
            with anyio.move_on_after(self.max_interval):
                await self.learned.setdefault(fam, anyio.Event()).wait()


async def _poll(self: engine_mod.Engine, inst: Any, op: Any, task_id: str) -> Any:
    t0 = self.clock.now()
    timeout = inst.step.timeout
    backoff = pacing.Backoff(base=min(1.0, self.recipe.provider.poll_interval), cap=30.0)
    n = 0
    lo: float | None = None
    while True:
        if timeout is not None and self.clock.now() - t0 >= timeout:
            raise StepError(
                f"timed out after {timeout:g} s waiting for task {task_id}", step=inst.id
            )
        await self.poller.wait(op.type, t0, n)
        n += 1
        try:
            res = await self.remote.poll(op, task_id)
            self.counts.polls += 1
        except TransientError as exc:
            self.counts.polls += 1
            await self.clock.sleep(backoff.next(exc.retry_after))
            continue
        sent = SENT.get() - t0
        if res is None:
            lo = sent
            continue
        self.poller.observe(op.type, lo, sent)  # type: ignore[attr-defined]
        if not res.task_ids:
            res.task_ids = [task_id]
        return res


_run_work = engine_mod.Engine._run_work


async def run_work(self: engine_mod.Engine, inst: Any, work: Any) -> None:
    """Engine._run_work with the instance's depth (steps left on its longest downstream
    chain, itself included) in PRIO for the limiter."""
    depth: dict[str, int] = self.__dict__.get("depth") or self.__dict__.setdefault(
        "depth", depths(self.plan)
    )
    PRIO.set(depth.get(inst.id, 1))
    await _run_work(self, inst, work)


def depths(plan: Any) -> dict[str, int]:
    dependents: dict[str, list[str]] = {}
    for i in plan.instances.values():
        for d in i.deps:
            dependents.setdefault(d, []).append(i.id)
    out: dict[str, int] = {}

    def depth(iid: str) -> int:
        if iid not in out:
            out[iid] = 1 + max((depth(d) for d in dependents.get(iid, ())), default=0)
        return out[iid]

    for iid in plan.instances:
        depth(iid)
    return out


def apply(patches: set[str]) -> None:
    global STAMP, HOLD, LADDER
    http_mod.ApiClient.send = send  # type: ignore[method-assign]
    if "limiter" in patches:
        STAMP = True
        http_mod.RateLimiter = StampLimiter  # type: ignore[misc]
    if "priority" in patches:
        STAMP = True
        http_mod.RateLimiter = PriorityLimiter  # type: ignore[misc]
        engine_mod.Engine._run_work = run_work  # type: ignore[method-assign]
    if "hold" in patches:
        HOLD = True
    if "ladder" in patches:
        LADDER = True
    if patches & {"poller", "hold", "ladder"}:
        engine_mod.Poller = Poller  # type: ignore[misc]
        engine_mod.Engine._poll = _poll  # type: ignore[method-assign]


def main(argv: list[str]) -> int:
    apply({p for p in argv[0].split(",") if p})
    from runner.cli import main as cli

    return cli(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
