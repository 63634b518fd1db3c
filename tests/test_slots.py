"""runner.slots: work that begins by taking a slot waits in a queue, not as a parked task,
and the queue never stalls; and the engine's fan-outs use it (tasks alive stay bounded by
the slots, not by the number of ready instances)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from runner import plan as planner
from runner import providers
from runner import recipe as recipes
from runner.engine import Engine, Options
from runner.progress import PlainProgress
from runner.providers import Op, Submitted
from runner.slots import Slots
from runner.store import Store


def tasks_alive() -> int:
    return len(anyio.get_running_tasks())


def test_work_waiting_for_a_slot_is_queued_and_starts_in_order():
    order: list[int] = []
    peak = 0

    async def work(i: int, slots: Slots) -> None:
        nonlocal peak
        async with slots:
            peak = max(peak, tasks_alive())
            order.append(i)
            await anyio.lowlevel.checkpoint()

    async def main() -> None:
        slots = Slots(2)
        async with anyio.create_task_group() as tg:
            for i in range(100):
                slots.start(tg, work, i, slots)
            # Two hold a slot, at most two more wait for one: the rest are queue entries.
            assert tasks_alive() <= 1 + 4
            assert len(slots.queue) >= 100 - 4

    anyio.run(main)
    assert order == list(range(100))
    # The main task, two holders, at most two waiting behind them (and one just started).
    assert peak <= 1 + 2 + 2 + 1


@pytest.mark.parametrize("how", ["returns", "raises"])
def test_work_that_never_takes_its_slot_does_not_stall_the_queue(how: str):
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
        slots = Slots(1)
        async with anyio.create_task_group() as tg:
            for i in range(30):
                slots.start(tg, guarded, i)
        return slots

    slots = anyio.run(main)
    assert done == list(range(30))
    assert slots.coming == 0
    assert not slots.queue


def test_a_slot_taken_in_a_child_task_counts_its_arrival_once():
    # The arrival mark is shared with child tasks (they copy the context): the slot taken
    # in a child must not count the task's arrival twice (which would let the queue start
    # more than it should, forever after).
    async def work(slots: Slots) -> None:
        async with anyio.create_task_group() as tg:
            async def child() -> None:
                async with slots:
                    await anyio.lowlevel.checkpoint()

            tg.start_soon(child)

    async def main() -> Slots:
        slots = Slots(3)
        async with anyio.create_task_group() as tg:
            for _ in range(10):
                slots.start(tg, work, slots)
        return slots

    slots = anyio.run(main)
    assert slots.coming == 0


class CountingLocal:
    """The real local provider, noting how many tasks are alive whenever it works."""

    kind = "local"

    def __init__(self) -> None:
        self.inner = providers.create(recipes.Provider(kind="local"), env={})
        self.peak = 0
        self.calls = 0

    async def submit(self, op: Op) -> Submitted:
        self.calls += 1
        self.peak = max(self.peak, tasks_alive())
        return await self.inner.submit(op)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_ready_fan_out_does_not_become_a_task_per_instance(tmp_path: Path):
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
    local = CountingLocal()
    eng = Engine(plan, store, {"local": local},  # type: ignore[dict-item]
                 Options(state_dir=tmp_path / "state", concurrency=2, handle_signals=False),
                 PlainProgress(quiet=True))
    status = anyio.run(eng.run)
    store.close()
    assert status == "succeeded"
    assert local.calls == n
    assert {r.status for r in eng.records.values()} == {"succeeded"}
    # The main task, two working, at most two waiting for a slot (and one just started);
    # before runner.slots, all 120 ready instances were tasks parked in the limiter.
    assert local.peak <= 1 + 2 + 2 + 1
