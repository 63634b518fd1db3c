"""The rate limiter and the adaptive poller, on a fake clock: no real sleeps, no timing."""

from __future__ import annotations

import random
import statistics
from typing import Any

import anyio
import pytest

from runner.pacing import (
    AHEAD,
    COHORT_PROBES,
    DONE_AT_FIRST,
    FIRST_SHARE,
    PRIORITY,
    FakeClock,
    Poller,
    RateLimiter,
    Slots,
    Urgency,
)
from runner.steps.types import pace_of as _pace

# The async tests run on each backend of anyio (tests/conftest.py: anyio_backend).
pytestmark = pytest.mark.anyio


# -- rate limiter ---------------------------------------------------------------------------


async def test_a_slot_counts_from_its_answer_so_the_window_never_reopens_before_the_servers():
    """The server counts a request when it arrives, after our grant: a window counted from
    the grant reopens early and the next burst is rejected."""
    clock = FakeClock()
    lim = RateLimiter(2, 10.0, clock)

    async def go() -> float:
        a, b = await lim.acquire(), await lim.acquire()
        clock.t = 3.0
        lim.release(a)  # its answer arrived at 3 s
        clock.t = 4.0
        lim.release(b)
        await lim.acquire()
        return clock.now()

    assert await go() == pytest.approx(13.0)  # 10 s after the first answer, not after the grant


async def test_a_request_in_flight_holds_its_slot_however_long_it_takes():
    clock = FakeClock()
    lim = RateLimiter(1, 10.0, clock)
    granted: list[float] = []

    async def go() -> None:
        slow = await lim.acquire()

        async def answer_late() -> None:
            while clock.now() < 50.0:
                await anyio.lowlevel.checkpoint()
            lim.release(slow)

        async def next_request() -> None:
            await lim.acquire()
            granted.append(clock.now())

        async with anyio.create_task_group() as tg:
            tg.start_soon(answer_late)
            tg.start_soon(next_request)

    await go()
    assert granted
    assert granted[0] >= 60.0


async def test_the_window_admits_its_full_rate_when_answers_are_instant():
    clock = FakeClock()
    lim = RateLimiter(20, 10.0, clock)
    sent: list[float] = []

    async def go() -> None:
        for _ in range(100):
            async with lim.request():
                sent.append(clock.now())

    await go()
    for t in sent:
        assert sum(1 for u in sent if t <= u < t + 10.0) <= 20
    assert sent[-1] == pytest.approx(40.0)  # 100 requests: windows at 0, 10, 20, 30, 40


async def grants(lim: RateLimiter, clock: FakeClock, priorities: list[tuple[str, float]],
                 ) -> list[tuple[str, float]]:
    """Start one request per (name, priority), in that order, while a request in flight
    fills the window; once all of them wait, answer it. Return (name, time) in the order
    they were granted. Each joins the line before the next starts: the order tasks started
    together first run in is the backend's (trio shuffles it on purpose)."""
    out: list[tuple[str, float]] = []

    async def one(name: str, priority: float) -> None:
        async with lim.request(Urgency(priority)):
            out.append((name, clock.now()))

    async def go() -> None:
        first = await lim.acquire()
        async with anyio.create_task_group() as tg:
            for waiting, (name, priority) in enumerate(priorities, 1):
                tg.start_soon(one, name, priority)
                while len(lim.line) < waiting:
                    await anyio.lowlevel.checkpoint()
            lim.release(first)

    await go()
    return out


async def test_waiting_requests_are_served_most_urgent_first():
    """First come first served would give low, mid-a, mid-b, high."""
    clock = FakeClock()
    lim = RateLimiter(1, 1.0, clock)
    got = await grants(lim, clock,
                       [("low", 0.0), ("mid-a", 50.0), ("mid-b", 50.0), ("high", 100.0)])
    assert [name for name, _ in got] == ["high", "mid-a", "mid-b", "low"]
    times = [t for _, t in got]  # one a second: the full rate
    assert [b - a for a, b in zip(times, times[1:], strict=False)] == pytest.approx([1.0] * 3)


async def test_arrivals_count_from_the_start_of_the_line_not_from_the_clocks_origin():
    """The engine's aging changes once the run has learned how fast the service is: a
    monotonic clock's hours since boot, multiplied by it, would outweigh any priority."""
    clock = FakeClock()
    clock.t = 25_000.0
    lim = RateLimiter(1, 1.0, clock)
    order: list[str] = []

    async def one(name: str, urgency: Urgency) -> None:
        async with lim.request(urgency):
            order.append(name)

    async def go() -> None:
        first = await lim.acquire()
        async with anyio.create_task_group() as tg:
            tg.start_soon(one, "early, aging 1", Urgency(10.0, 1.0))
            tg.start_soon(one, "later, aging 16", Urgency(500.0, 16.0))
            while len(lim.line) < 2:
                await anyio.lowlevel.checkpoint()
            lim.release(first)

    await go()
    assert order == ["later, aging 16", "early, aging 1"]


async def test_equal_priorities_are_first_come_first_served():
    clock = FakeClock()
    lim = RateLimiter(1, 1.0, clock)
    names = [f"r{i}" for i in range(9)]
    got = await grants(lim, clock, [(n, 7.0) for n in names])
    assert [name for name, _ in got] == names


async def test_a_waiting_request_is_overtaken_only_for_as_long_as_it_has_waited():
    """A steady stream of more urgent requests (one always waiting) does not starve a
    request of priority 0: each second waited counts as a second of priority, so it goes
    once the newcomers are less than its wait more urgent: after 100 s here."""
    clock = FakeClock()
    lim = RateLimiter(1, 1.0, clock)
    served: list[tuple[str, float]] = []

    async def go() -> None:
        async with anyio.create_task_group() as tg:

            async def urgent() -> None:
                async with lim.request(Urgency(100.0)):
                    served.append(("urgent", clock.now()))
                if not any(name == "low" for name, _ in served):
                    tg.start_soon(urgent)  # the next newcomer, as long as `low` waits

            async def low() -> None:
                async with lim.request(Urgency(0.0)):
                    served.append(("low", clock.now()))

            tg.start_soon(urgent)
            while not served:  # it holds the only place before `low` arrives (on any backend)
                await anyio.lowlevel.checkpoint()
            tg.start_soon(low)
            tg.start_soon(urgent)

    await go()
    at = next(t for name, t in served if name == "low")
    # (Each newcomer joins the line as the one before it is served, in the order the
    # backend runs the two: trio's order puts `low` a second or two later than asyncio's.)
    assert 99.0 <= at <= 105.0
    assert sum(1 for name, _ in served if name == "urgent") >= 98


async def test_a_cancelled_waiter_leaves_the_line_and_the_next_one_goes():
    clock = FakeClock()
    lim = RateLimiter(1, 10.0, clock)
    got: list[str] = []

    async def patient() -> None:
        async with lim.request(Urgency(0.0)):
            got.append("patient")

    async def go() -> None:
        scope = anyio.CancelScope()

        async def urgent() -> None:
            with scope:
                await lim.acquire(Urgency(100.0))
                got.append("urgent")

        first = await lim.acquire()  # in flight: nobody gets in until it is answered
        with anyio.fail_after(10):  # real seconds, only so that a regression fails, not hangs
            async with anyio.create_task_group() as tg:
                tg.start_soon(urgent)
                tg.start_soon(patient)
                while len(lim.line) < 2:
                    await anyio.lowlevel.checkpoint()
                scope.cancel()  # the head of the line gives up
                while len(lim.line) > 1:
                    await anyio.lowlevel.checkpoint()
                lim.release(first)

    await go()
    assert got == ["patient"]
    assert len(lim.line) == 0


async def test_places_go_to_the_most_urgent_task_first_and_equals_in_turn():
    """The engine's --concurrency places: a submit holds one while it waits for the rate
    limiter, so a first-come line here would undo the limiter's order."""
    clock = FakeClock()
    slots = Slots(1, clock)
    order: list[str] = []

    async def task(name: str, priority: float) -> None:
        PRIORITY.set(Urgency(priority))
        async with slots:
            order.append(name)

    async def go() -> None:
        async with anyio.create_task_group() as tg:
            async with slots:  # taken: the four wait, each in the line before the next
                for waiting, (name, priority) in enumerate(
                        (("low", 0.0), ("mid-a", 50.0), ("mid-b", 50.0), ("high", 100.0)), 1):
                    tg.start_soon(task, name, priority)
                    while len(slots.line) < waiting:
                        await anyio.lowlevel.checkpoint()

    await go()
    assert order == ["high", "mid-a", "mid-b", "low"]
    assert slots.held == 0


async def test_fetching_a_finished_tasks_files_takes_a_place_before_any_submit():
    """A submit may hold its place for the rate limit; the files the next steps wait for
    are brief local work (the engine asks with AHEAD)."""
    clock = FakeClock()
    slots = Slots(1, clock)
    order: list[str] = []

    async def submit(name: str, priority: float) -> None:
        PRIORITY.set(Urgency(priority))
        async with slots:
            order.append(name)

    async def fetch() -> None:
        async with slots.take(AHEAD):
            order.append("fetch")

    async def go() -> None:
        async with anyio.create_task_group() as tg:
            async with slots:
                tg.start_soon(submit, "urgent submit", 1e6)
                tg.start_soon(fetch)
                tg.start_soon(submit, "submit", 0.0)
                while len(slots.line) < 3:
                    await anyio.lowlevel.checkpoint()

    await go()
    assert order == ["fetch", "urgent submit", "submit"]


async def test_a_cancelled_wait_for_a_place_leaves_the_line():
    clock = FakeClock()
    slots = Slots(1, clock)
    order: list[str] = []

    async def go() -> None:
        scope = anyio.CancelScope()

        async def urgent() -> None:
            PRIORITY.set(Urgency(100.0))
            with scope:
                async with slots:
                    order.append("urgent")

        async def patient() -> None:
            async with slots:
                order.append("patient")

        with anyio.fail_after(10):  # real seconds, only so that a regression fails, not hangs
            async with anyio.create_task_group() as tg:
                async with slots:
                    tg.start_soon(urgent)
                    tg.start_soon(patient)
                    while len(slots.line) < 2:
                        await anyio.lowlevel.checkpoint()
                    scope.cancel()
                    while len(slots.line) > 1:
                        await anyio.lowlevel.checkpoint()

    await go()
    assert order == ["patient"]
    assert slots.held == 0
    assert len(slots.line) == 0


# -- poller -----------------------------------------------------------------------------


async def simulate(poller: Poller, clock: FakeClock, op: str, durations: list[float],
                   ) -> dict[str, Any]:
    """Run tasks of `op` one after another through the poller's schedule; a poll sent at
    or after a task's duration finds it done."""
    polls, late = 0, []

    async def go() -> None:
        nonlocal polls
        for _i, d in enumerate(durations):
            t0, n, running = clock.now(), 0, None
            while True:
                await poller.wait(op, t0, n)
                n += 1
                polls += 1
                sent = clock.now() - t0
                if sent >= d:
                    poller.learn(op, running, sent)
                    late.append(sent - d)
                    break
                running = sent

    await go()
    return {"polls": polls / len(durations), "late": statistics.mean(late)}


async def test_the_estimate_settles_on_the_median_duration_instead_of_drifting_upward():
    """Learning `now - t0` after each answer only ever drifts up (every task is found at
    or after the estimate); learning from send times and midpoints does not."""
    rng = random.Random(3)
    durations = [60.0 * rng.lognormvariate(0, 0.2) for _ in range(300)]
    clock = FakeClock()
    poller = Poller(10.0, 60.0, clock)
    got = await simulate(poller, clock, "lyrics", durations)
    true_median = statistics.median(durations)
    est = poller.estimate("lyrics")
    assert est is not None
    assert abs(est - true_median) / true_median < 0.12
    assert got["polls"] < 3.0  # two or three polls per task
    assert got["late"] < 0.1 * true_median  # found done within a tenth of the usual duration


async def test_polls_start_at_the_median_and_then_rise_no_more_than_a_tenth_of_it_apart():
    clock = FakeClock()
    poller = Poller(10.0, 60.0, clock)
    for d in range(100, 200, 5):  # 20 durations, median 150
        poller.learn("wav", None, d / 0.85)
    median = poller.estimate("wav")
    assert median is not None

    async def go() -> None:
        for n in range(8):
            await poller.wait("wav", 0.0, n)

    await go()
    assert clock.slept[0] == pytest.approx(median)
    assert all(0 < s <= 0.1 * median + 1e-9 for s in clock.slept[1:])


def test_extend_learns_from_generate():
    clock = FakeClock()
    poller = Poller(10.0, 60.0, clock, family=_pace)
    assert poller.estimate("extend") is None
    for _ in range(20):
        poller.learn("generate", 90.0, 100.0)
    assert poller.estimate("extend") == 95.0
    assert poller.estimate("add_vocals") == 95.0
    assert poller.estimate("wav") is None  # a WAV takes its own time


async def test_while_nothing_is_known_the_tasks_take_turns_a_few_probes_per_interval():
    """A cohort of 50 tasks with no duration known yet costs COHORT_PROBES polls per
    interval, not one per task per interval; once one is found done, the others are told
    at once."""
    clock = FakeClock()
    poller = Poller(10.0, 60.0, clock)
    probes: list[float] = []
    done_at = 95.0

    async def task() -> None:
        n, running = 0, None
        while True:
            await poller.wait("lyrics", 0.0, n)
            n += 1
            probes.append(clock.now())
            if clock.now() >= done_at:
                poller.learn("lyrics", running, clock.now())
                return
            running = clock.now()

    async def go() -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(task)

    await go()
    before = [t for t in probes if t < done_at]
    # A few probes per interval while unknown (a cohort), against 50 a poll each.
    assert len(before) <= COHORT_PROBES * done_at / 10.0 + 1
    assert poller.estimate("lyrics") is not None


def test_a_poll_that_waited_long_for_the_rate_limit_teaches_nothing():
    """Behind more urgent requests a poll may wait a minute: finding the task done then
    says nothing of when it ended, and learning it would make every later poll later."""
    clock = FakeClock()
    poller = Poller(10.0, 60.0, clock)
    poller.learn("wav", None, 90.0, waited=60.0)  # the first sample is all there is: kept
    assert poller.durations("wav") == [90.0 * 0.85]
    for _ in range(10):
        poller.learn("wav", 25.0, 35.0)  # 30 s
    assert poller.estimate("wav") == 30.0
    poller.learn("wav", None, 100.0, waited=60.0)
    poller.learn("wav", 28.0, 95.0, waited=60.0)
    assert len(poller.durations("wav")) == 11
    poller.learn("wav", None, 40.0, waited=2.0)  # within the spacing of polls (2 s here)
    assert len(poller.durations("wav")) == 12


# -- the poll aimed at the first stage --------------------------------------------------


async def test_one_poll_is_aimed_at_the_first_stage_once_durations_are_known():
    clock = FakeClock()
    poller = Poller(10.0, 60.0, clock, family=_pace)

    async def aim(t0: float) -> bool:
        return await poller.wait_first("extend", t0)

    # Nothing known: no poll to aim (the tasks take turns on the usual schedule).
    assert await aim(0.0) is False
    assert clock.slept == []
    for _ in range(9):
        poller.learn("generate", None, 100.0 / DONE_AT_FIRST)  # the median: 100
    # Until a first stage is seen: FIRST_SHARE of the median duration.
    assert await aim(clock.now()) is True
    assert clock.slept == [pytest.approx(FIRST_SHARE * 100.0)]
    # That moment is past (a resumed task): no extra poll, no sleep.
    assert await aim(clock.now() - 80.0) is False
    assert len(clock.slept) == 1
    # Learned from the aimed polls: a stage found at its aimed poll "at most then", one
    # found later within (lo, hi]; an unplanned poll with nothing before it teaches nothing.
    poller.learn_first("generate", None, 70.0 / DONE_AT_FIRST)
    poller.learn_first("generate", 60.0, 70.0)
    poller.learn_first("generate", 64.0, 76.0)
    poller.learn_first("generate", None, 30.0, planned=False)
    assert poller.first_estimate("add_vocals") == 70.0  # of (65, 70, 70): music shares it
    assert poller.first_estimate("convert") is None
    assert await aim(clock.now()) is True
    assert clock.slept[-1] == pytest.approx(70.0)
    # A first stage expected no earlier than the usual first poll: nothing to aim at.
    for _ in range(9):
        poller.learn_first("generate", None, 120.0 / DONE_AT_FIRST)
    assert await aim(clock.now()) is False


async def test_tasks_without_early_dependants_keep_their_schedule():
    """They never call `wait_first`, and what is learned of first stages leaves `wait`,
    their whole schedule, as it was: no extra poll, none moved."""
    async def schedule(learn_first: bool) -> list[float]:
        clock = FakeClock()
        poller = Poller(10.0, 60.0, clock, family=_pace)
        for d in range(80, 120, 2):
            poller.learn("generate", None, d / DONE_AT_FIRST)
        if learn_first:
            for d in range(50, 70, 2):
                poller.learn_first("generate", d - 5.0, float(d))

        async def polls() -> None:
            for n in range(6):
                await poller.wait("generate", 0.0, n)

        await polls()
        return clock.slept

    assert await schedule(True) == await schedule(False)
    assert len(await schedule(True)) == 6



# -- what is learned of a new family (issue 21) -------------------------------------------


def _expected(op: str) -> float:
    from runner.steps.types import TYPES
    return TYPES[op].expected if op in TYPES else 0.0


def test_a_cohort_that_took_turns_learns_the_bracket_the_probes_drew_not_its_own_stale_one():
    """Four tasks submitted together at 0, all done at 155 s, one probe per 10 s while
    nothing is known (task k probed at 10 (k + 1) + 40 j): each task's own last "running"
    is up to 40 s old, so its midpoint said ~140 s (and every extend then polled ~12 s
    late). Another task's probe found one running at 150 s: every duration learned is
    within (150, 160]."""
    clock = FakeClock()
    poller = Poller(10.0, 60.0, clock, family=_pace)
    last: dict[int, float] = {}
    for t in range(10, 160, 10):  # probes at 10 ... 150: all running
        clock.t = float(t)
        last[(t // 10 - 1) % 4] = float(t)
        poller.saw_running("generate", float(t))
    clock.t = 160.0  # task 3's probe finds it done: its own last running was at 120
    poller.learn("generate", last[3], 160.0)
    for k in range(3):  # the others, told at once, poll and find theirs done
        clock.t = 160.5 + k
        poller.learn("generate", last[k], clock.t)
    learned = poller.durations("extend")
    assert len(learned) == 4
    assert all(150.0 < d <= 163.0 for d in learned), learned


def test_once_durations_are_known_samples_keep_their_own_edges():
    """The probes' floor is for brackets that opened while nothing was known: later
    samples (a task found done at its first poll; one seen running after the family was
    learned) are as before, so the estimate keeps its balance (DONE_AT_FIRST)."""
    clock = FakeClock()
    poller = Poller(10.0, 60.0, clock)
    poller.saw_running("lyrics", 50.0)
    poller.learn("lyrics", None, 60.0)
    assert poller.durations("lyrics") == [55.0]  # first: within (50, 60]
    clock.t = 100.0
    poller.learn("lyrics", None, 60.0)  # found done at its first poll, family known
    poller.learn("lyrics", 45.0, 60.0)  # its "running" was seen after the first duration
    poller.saw_running("lyrics", 58.0)  # known now: no floor for anyone
    assert poller.durations("lyrics") == sorted([55.0, 60.0 * DONE_AT_FIRST, 52.5])


async def test_a_new_family_polls_once_at_its_scaled_prior_besides_taking_turns():
    """Music found done at 0.9 of the defaults' 150 s (the polls that found it done: the
    upper edges of its brackets, not the "a bit less" learned from them): a WAV (defaults:
    30 s), nothing known of WAV yet, is polled at 0.9 x 30 = 27 s after its submission,
    besides its turns (one probe per interval for the family, which go on as before: a
    wrong prior costs that one poll and delays nothing)."""
    clock = FakeClock()
    poller = Poller(10.0, 60.0, clock, family=_pace, expected=_expected)
    assert poller.prior("convert") is None  # nothing learned: the defaults say nothing
    for _ in range(5):
        poller.learn("generate", None, 135.0)
    assert poller.estimate("generate") == pytest.approx(135.0 * DONE_AT_FIRST)
    assert poller.prior("convert") == pytest.approx(27.0)
    assert poller.prior("concat") is None  # no figure in the defaults
    # A family learned from fewer durations counts for less (lyrics: 10 s by default).
    poller.learn("lyrics", None, 20.0)
    assert poller.prior("convert") == pytest.approx(30.0 * (0.9 ** 5 * 2.0) ** (1 / 6))
    poller.seen.pop("lyrics")

    async def go() -> None:
        clock.t = 100.0
        assert await poller.wait("convert", 100.0, 0) is True
        assert clock.t == pytest.approx(110.0)  # its turn, as before
        assert await poller.wait("convert", 100.0, 1) is True
        assert clock.t == pytest.approx(120.0)  # and the next
        assert await poller.wait("convert", 100.0, 2) is True
        assert clock.t == pytest.approx(127.0)  # the prior's poll
        assert await poller.wait("convert", 100.0, 3) is True
        assert clock.t == pytest.approx(130.0)  # turns go on; no second prior poll
        # A prior's poll moves a turn due at that moment on by a fifth of the interval.
        clock.t, poller.turn["convert"] = 200.0, 227.0
        assert await poller.wait("convert", 200.0, 0) is True
        assert clock.t == pytest.approx(227.0)
        assert poller.turn["convert"] == pytest.approx(229.0)

    await go()


async def test_a_new_family_whose_first_stage_is_wanted_also_aims_a_poll_at_it():
    """Lyrics found done at 0.9 of the defaults' 10 s: nothing known of music yet, a song
    (150 s by default, so 135 s here) whose first stage a step waits for (`first`) is
    polled once at FIRST_SHARE of that, besides its turns and the prior's poll; without
    `first`, no such poll."""
    async def schedule(first: bool) -> list[float]:
        clock = FakeClock()
        poller = Poller(10.0, 60.0, clock, family=_pace, expected=_expected)
        for _ in range(5):
            poller.learn("lyrics", None, 9.0)
        assert poller.prior("generate") == pytest.approx(135.0)
        polls = []
        for n in range(4):
            if n == 1:
                poller.turn["music"] = 500.0  # the next turns: later, out of the way
            assert await poller.wait("generate", 0.0, n, first=first) is True
            polls.append(clock.t)
        return polls

    assert await schedule(True) == [pytest.approx(10.0), pytest.approx(FIRST_SHARE * 135.0),
                                    pytest.approx(135.0), pytest.approx(500.0)]
    assert await schedule(False) == [pytest.approx(10.0), pytest.approx(135.0),
                                     pytest.approx(500.0), pytest.approx(510.0)]


async def test_a_task_past_every_duration_looks_next_where_the_tasks_seen_were_all_done():
    """Fixed 150 s tasks learned as midpoints just short of it, (146, 153] each: a task
    found running at its first poll (the median, 149.5) polls next at 153, where every
    task seen was done, not a whole spacing (15 s) later."""
    clock = FakeClock()
    poller = Poller(10.0, 60.0, clock)
    for _ in range(8):
        poller.learn("generate", 146.0, 153.0)
    assert poller.estimate("generate") == 149.5

    async def go() -> None:
        await poller.wait("generate", 0.0, 0)
        assert clock.t == pytest.approx(149.5)
        await poller.wait("generate", 0.0, 1)
        assert clock.t == pytest.approx(153.0)
        # Past those edges too: every spacing, as before.
        await poller.wait("generate", 0.0, 2)
        assert clock.t == pytest.approx(153.0 + 14.95)

    await go()


async def test_a_task_without_slack_is_polled_closer_and_one_with_slack_less_often():
    """Durations known (median 150 s, spacing a tenth: 15 s). With no slack (it heads the
    run's longest way) the first poll goes at the first quartile and the next ones three
    times as close; with 60 s of
    slack the first poll waits half of it past the median, and the next ones go to the
    rising quantiles or half the slack apart; without a figure (None) the schedule is the
    usual one."""
    async def schedule(slack: float | None, crowded: bool = False,
                       rivals: int = 1) -> list[float]:
        clock = FakeClock()
        poller = Poller(10.0, 60.0, clock)
        for d in range(100, 200, 5):  # 20 durations, median 150
            poller.learn("wav", None, d / 0.85)

        async def go() -> None:
            for n in range(6):
                await poller.wait("wav", 0.0, n, slack=slack, crowded=crowded,
                                  rivals=rivals)

        await go()
        return clock.slept

    usual, critical, loose = await schedule(None), await schedule(0.0), await schedule(60.0)
    median = usual[0]
    assert median == pytest.approx(150.0)
    # Without slack the first poll goes at the first quartile (a short task is found there).
    assert critical[0] == pytest.approx(125.0)
    # ... unless polls queue for the rate limit: then an early poll takes another's place.
    assert (await schedule(0.0, crowded=True))[0] == pytest.approx(median)
    assert max(usual[1:]) == pytest.approx(0.1 * median, rel=0.05)
    assert max(critical[1:]) <= 0.1 * median / 3 + 1e-9
    assert min(critical[1:]) >= 10.0 / 5 - 1e-9  # never closer than a fifth of interval
    # Tied with 3 others for the longest way (4 rivals): the run waits for this one about
    # once in 4, so its polls go sqrt(4) = 2 times as far apart as a lone critical task's;
    # with 16, no closer than the usual spacing.
    four, many = await schedule(0.0, rivals=4), await schedule(0.0, rivals=16)
    assert four[0] == critical[0]
    assert max(four[1:]) == pytest.approx(2 * max(critical[1:]))
    assert max(many[1:]) == pytest.approx(max(usual[1:]))
    assert loose[0] == pytest.approx(median + 30.0)
    # Then the rising quantiles (185 s ...), or half the slack apart past them all.
    assert loose[1] == pytest.approx(5.0)
    assert max(loose[2:]) > max(usual[2:])
    assert sum(critical) < sum(usual) < sum(loose)

