"""pacing.Slots.start: work that begins by taking a place waits in a queue, not as a parked
task, in the same order as tasks waiting in the line, and the queue never stalls; and the
engine's fan-outs use it (tasks alive stay bounded by the places, not by the number of
ready instances)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from runner.engine.records import Options
from runner.engine.scheduler import Engine
from runner.pacing import AHEAD, FakeClock, Slots, Urgency
from runner.plan import build as planner
from runner.providers import Op, Submitted
from runner.providers import registry as providers
from runner.recipe import load as recipes
from runner.report.progress import PlainProgress
from runner.store.journal import Store

# The async tests run on each backend of anyio (tests/conftest.py: anyio_backend).
pytestmark = pytest.mark.anyio


class Tasks:
    """Counts the test's own task and those it made: the loop's tasks less the test runner's
    (the anyio plugin keeps tasks of its own beside the test's, as many as its backend needs).
    Made in the test's own task, before it starts any."""

    def __init__(self) -> None:
        self.runner = len(anyio.get_running_tasks()) - 1

    def alive(self) -> int:
        return len(anyio.get_running_tasks()) - self.runner


async def test_work_waiting_for_a_slot_is_queued_and_starts_in_order():
    tasks = Tasks()
    order: list[int] = []
    peak = 0

    async def work(i: int, slots: Slots) -> None:
        nonlocal peak
        async with slots:
            peak = max(peak, tasks.alive())
            order.append(i)
            await anyio.lowlevel.checkpoint()

    async def main() -> None:
        slots = Slots(2, FakeClock())
        async with anyio.create_task_group() as tg:
            for i in range(100):
                slots.start(tg, work, i, slots)
            # Two were handed a place and started: the rest are queue entries.
            assert tasks.alive() <= 1 + 2
            assert len(slots.queue) == 100 - 2
        assert slots.held == 0

    await main()
    # Places are handed over in the queue's order. Work handed its place in the same
    # instant (at most the two places) may begin in either order: the backend's (asyncio
    # runs tasks in the order they were started, trio shuffles them on purpose).
    assert sorted(order) == list(range(100))
    assert all(abs(i - began) < 2 for began, i in enumerate(order)), order
    # The main task and the two holding a place: no task waits.
    assert peak <= 1 + 2


@pytest.mark.parametrize("how", ["returns", "raises"])
async def test_work_that_never_takes_its_slot_does_not_stall_the_queue(how: str):
    done: list[int] = []

    async def elsewhere(i: int) -> None:
        # Its key was another instance's work in flight, say: it ends without a slot.
        await anyio.lowlevel.checkpoint()
        done.append(i)
        if how == "raises":
            raise LookupError(i)

    async def guarded(i: int) -> None:
        try:
            await elsewhere(i)
        except LookupError:
            pass

    async def main() -> Slots:
        slots = Slots(1, FakeClock())
        async with anyio.create_task_group() as tg:
            for i in range(30):
                slots.start(tg, guarded, i)
        return slots

    slots = await main()
    assert done == list(range(30))  # each gave its place back when it ended
    assert slots.held == 0
    assert not slots.queue


async def test_a_place_handed_over_is_taken_once_even_from_child_tasks():
    # The handed-over place is shared with child tasks (they copy the context): two
    # children asking must not both take it (which would let more than `total` hold one).
    async def work(slots: Slots) -> None:
        async with anyio.create_task_group() as tg:
            async def child() -> None:
                async with slots:
                    peak[0] = max(peak[0], slots.held)
                    await anyio.lowlevel.checkpoint()

            tg.start_soon(child)
            tg.start_soon(child)

    peak = [0]

    async def main() -> Slots:
        slots = Slots(3, FakeClock())
        async with anyio.create_task_group() as tg:
            for _ in range(10):
                slots.start(tg, work, slots)
        return slots

    slots = await main()
    assert slots.held == 0
    assert peak[0] <= 3


async def test_queued_work_and_waiting_tasks_share_one_order():
    """A place freed goes to the more urgent of the queue's head and the line's head: the
    engine queues ready submits and lets running tasks ask for places to fetch files
    (AHEAD), and both must keep the order the rate limiter is meant to see."""
    tasks = Tasks()
    order: list[str] = []

    async def job(name: str, slots: Slots) -> None:
        async with slots:
            order.append(name)
            await anyio.lowlevel.checkpoint()

    async def fetch(slots: Slots) -> None:
        async with slots.take(AHEAD):
            order.append("fetch")

    async def main() -> None:
        slots = Slots(1, FakeClock())
        async with anyio.create_task_group() as tg:
            async with slots:  # taken: everything below waits
                slots.start(tg, job, "low", slots, urgency=Urgency(0.0))
                slots.start(tg, job, "high", slots, urgency=Urgency(100.0))
                tg.start_soon(fetch, slots)
                while not slots.line.heap:
                    await anyio.lowlevel.checkpoint()
                assert tasks.alive() == 2  # main and the fetch: the jobs are queue entries
                slots.start(tg, job, "mid", slots, urgency=Urgency(50.0))

    await main()
    assert order == ["fetch", "high", "mid", "low"]


class CountingLocal:
    """The real local provider, noting how many tasks are alive whenever it works."""

    kind = "local"

    def __init__(self, tasks: Tasks) -> None:
        self.tasks = tasks
        self.inner = providers.create(recipes.Provider(kind="local"), env={})
        self.peak = 0
        self.calls = 0

    async def submit(self, op: Op) -> Submitted:
        self.calls += 1
        self.peak = max(self.peak, self.tasks.alive())
        return await self.inner.submit(op)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_a_ready_fan_out_does_not_become_a_task_per_instance(tmp_path: Path):
    n = 120
    path = tmp_path / "r.yaml"
    path.write_text(f"""\
version: 1
name: fan
vars: {{n: {list(range(n))}}}
steps:
  a:
    uses: boost_style
    for_each: "{{{{ vars.n }}}}"
    with: {{content: "style {{{{ item }}}}"}}
""")
    plan = planner.build(recipes.load(path))
    store = Store(tmp_path / "state").open()
    local = CountingLocal(Tasks())
    eng = Engine(plan, store, {"local": local},
                 Options(state_dir=tmp_path / "state", concurrency=2, handle_signals=False),
                 PlainProgress(quiet=True))
    status = await eng.run()
    store.close()
    assert status == "succeeded"
    assert local.calls == n
    assert {r.status for r in eng.records.values()} == {"succeeded"}
    # The main task, the previews' writer (runner.store.previews.keep) and two working;
    # before Slots.start, all 120 ready instances were tasks parked in the limiter.
    assert local.peak <= 1 + 1 + 2
