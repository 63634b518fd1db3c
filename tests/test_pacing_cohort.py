"""The first cohort of a run: how the poller probes a family while nothing at all is known,
on trio's virtual clock (MockClock jumps to the next timer while every task sleeps), so
that many tasks waiting side by side keep one shared time. Not anyio-marked: each test
runs its own trio loop."""

from __future__ import annotations

import anyio
import trio.testing

from runner.pacing import COHORT_PROBES, Clock, Poller


class LoopClock(Clock):
    """The event loop's own clock: trio's MockClock jumps it while every task sleeps."""

    def now(self) -> float:
        return anyio.current_time()


def cohort_learns(prior_known: bool) -> tuple[float, int]:
    """16 lyrics submitted together, each done 10.5 s later, on a virtual clock: when a
    probe first finds one done, and how many polls were sent until then."""
    clock = LoopClock()
    poller = Poller(10.0, 60.0, clock, expected=lambda op: 10.0 if op == "lyrics" else 0.0)
    polls: list[float] = []
    learned: list[float] = []

    async def task(t0: float) -> None:
        n, running = 0, None
        while True:
            await poller.wait("lyrics", t0, n)
            n += 1
            now = clock.now()
            polls.append(now)
            if now - t0 >= 10.5:
                if not learned:
                    learned.append(now)
                poller.learn("lyrics", running, now - t0)
                return
            running = now - t0

    async def go() -> None:
        if prior_known:  # another family learned: lyrics get a prior (scaled defaults)
            poller.learn("generate", 140.0, 160.0)
        t0 = clock.now()
        async with anyio.create_task_group() as tg:
            for _ in range(16):
                tg.start_soon(task, t0)

    anyio.run(go, backend="trio",
              backend_options={"clock": trio.testing.MockClock(autojump_threshold=0)})
    return learned[0], sum(1 for t in polls if t < learned[0])


def test_a_first_cohort_with_nothing_known_probes_a_few_times_an_interval():
    """Nothing known at all (no prior): a cohort of 16 probes COHORT_PROBES times an
    interval, so lyrics of 10.5 s are found at 13.3 s, not at the second interval (20 s),
    for one probe more. Once any family is learned the prior places a poll instead,
    and the turns stay one an interval."""
    at, before = cohort_learns(prior_known=False)
    # The next probe is due 10 / COHORT_PROBES after the first; the waiters look every
    # interval / 5 (2 s), so it goes at 14 s.
    assert 10.0 + 10.0 / COHORT_PROBES <= at <= 10.0 + 10.0 / COHORT_PROBES + 2.0 < 20.0
    assert before == 1  # the probe at 10 s found it running; one probe, not 16 polls
    _, with_prior = cohort_learns(prior_known=True)
    assert with_prior <= 1


def test_a_cohort_that_took_turns_polls_at_once_when_the_first_is_found_done():
    """Four tasks submitted together, all done at 155 s: a probe finds the first done; the
    others, each probed (found running) while nothing was known, are past the median just
    learned and poll at once, not a poll spacing later. (On FakeClock, which adds up every
    sleeper's sleep, "at once" depended on the order the backend ran the sleepers in.)"""
    clock = LoopClock()
    poller = Poller(10.0, 60.0, clock)
    found: list[float] = []
    done_at = 155.0

    async def task() -> None:
        n, running = 0, None
        while True:
            await poller.wait("generate", 0.0, n)
            n += 1
            now = clock.now()
            if now >= done_at:
                poller.learn("generate", running, now)
                found.append(now)
                return
            running = now

    async def go() -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(task)

    anyio.run(go, backend="trio",
              backend_options={"clock": trio.testing.MockClock(autojump_threshold=0)})
    assert len(found) == 4
    assert done_at <= min(found) < done_at + 10.0
    assert max(found) - min(found) < 1e-6  # at once (a poll spacing is ~15 s)
