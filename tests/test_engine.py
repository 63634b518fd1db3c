"""The engine's rules for paid work, driven through a scripted provider and a fake clock.

The provider here is a fake (it keeps a ledger of the tasks it "created" and charged),
not a mock: each test asserts on that ledger, which is what a user pays for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from doubles import Quiet, finished

from runner.engine.records import Counts, Options, StepRecord
from runner.engine.scheduler import Engine
from runner.errors import (
    AuthError,
    CreditsError,
    PossiblySubmitted,
    StepError,
    TaskFailed,
    TransientError,
)
from runner.pacing import SENT_AT, FakeClock
from runner.plan import build as planner
from runner.providers import Op, Result, Submitted
from runner.recipe import load as recipes
from runner.report.progress import PlainProgress
from runner.store.journal import Store

# The async tests run on each backend of anyio (tests/conftest.py: anyio_backend).
pytestmark = pytest.mark.anyio

RECIPE = """\
version: 1
name: t
provider: {kind: sunoapi, base_url: "http://127.0.0.1:9", poll_interval: 1,
           timeouts: {"*": 100h}}
steps:
  words:
    uses: lyrics
    for_each: [a, b, c]
    with: {prompt: "about {{ item }}"}
  song:
    uses: generate
    for_each: "{{ steps.words }}"
    %s
    with: {prompt: "{{ item.text }}", title: "T{{ index }}", style: pop}
"""


class Ledger:
    """What the fake service did: every task it created (and so charged for)."""

    def __init__(self) -> None:
        self.created: list[tuple[str, str]] = []  # (step, task id)
        self.polls = 0


@dataclass(frozen=True)
class Late:
    """A submit behaviour: answer `exc` (no task) after `seconds` of the run's clock."""

    seconds: float
    exc: StepError


class ScriptedProvider(Quiet):
    """A fake remote provider. `script` maps an instance id to a list of behaviours, used
    one per submit: "ok", or an exception to raise (before or after creating a task), or
    a Late one."""

    kind = "sunoapi"

    def __init__(self, ledger: Ledger, script: dict[str, list[Any]] | None = None,
                 poll_script: dict[str, list[Any]] | None = None) -> None:
        self.ledger = ledger
        self.script = script or {}
        self.poll_script = poll_script or {}
        self.n = 0
        self.events: list[tuple[str, str]] = []  # ("submit" | "done", step), in order
        self.clock: FakeClock | None = None  # the run's (run_engine sets it)

    async def submit(self, op: Op) -> Submitted:
        behaviours = self.script.get(op.step, [])
        b = behaviours.pop(0) if behaviours else "ok"
        if isinstance(b, Late):
            assert self.clock is not None
            await self.clock.sleep(b.seconds)
            b = b.exc
        if isinstance(b, TransientError | StepError):
            raise b  # answered "no task": nothing created
        self.n += 1
        task = f"task-{op.step}-{self.n}"
        self.ledger.created.append((op.step, task))
        self.events.append(("submit", op.step))
        if isinstance(b, Exception):
            raise b  # created, but the answer is lost (or auth/credits)
        return Submitted(task)

    async def poll(self, op: Op, task_id: str) -> Result | None:
        self.ledger.polls += 1
        behaviours = self.poll_script.get(op.step, [])
        b = behaviours.pop(0) if behaviours else "done"
        if isinstance(b, Exception):
            raise b
        if b == "running":
            return None
        if b == "until_all_submitted":
            # Running until every words[i] was submitted (or 20,000 polls, to end the test).
            subs = {st for kind, st in self.events if kind == "submit"}
            if not {"words[0]", "words[1]", "words[2]"} <= subs and self.ledger.polls < 20_000:
                behaviours.insert(0, b)
                return None
        self.events.append(("done", op.step))
        return finished(op, task_id, op.inputs.get("prompt", "la"))


@dataclass(frozen=True)
class Ran:
    """One engine run as these tests read it: what `Engine.run` returned and the engine's
    typed records of it."""

    status: str  # succeeded | failed | interrupted
    records: dict[str, StepRecord]
    counts: Counts
    stop_reason: str | None
    slept: list[float]  # every sleep of the run's FakeClock (backoffs, Retry-After)


# The scripted tasks run for as long as a test needs, on a fake clock that jumps ahead while
# every task waits: the default deadlines (runner.engine.deadlines) are lifted, and the tests of
# deadlines set a step's `timeout`.
async def run_engine(tmp_path: Path, provider: ScriptedProvider, *, step_extra: str = "",
                     recipe: str = RECIPE, **opts: Any) -> Ran:
    path = tmp_path / "r.yaml"
    tmp_path.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240
    path.write_text(recipe % step_extra)
    plan = planner.build(recipes.load(path))
    store = Store(tmp_path / "state").open()
    clock = provider.clock = FakeClock()
    # Every step here is remote; the local slot is never used.
    eng = Engine(plan, store, {"local": provider, "sunoapi": provider},
                 Options(state_dir=tmp_path / "state", clock=clock, handle_signals=False,
                         **opts), PlainProgress(quiet=True))
    status = await eng.run()
    store.close()
    return Ran(status, eng.records, eng.counts, eng.stop_reason, clock.slept)


def submitted(ledger: Ledger, step: str) -> int:
    return sum(1 for s, _ in ledger.created if s == step)


async def test_each_instance_is_submitted_once_and_a_second_run_submits_nothing(tmp_path: Path):
    ledger = Ledger()
    eng = await run_engine(tmp_path, ScriptedProvider(ledger))
    assert eng.status == "succeeded"
    assert len(ledger.created) == 6
    assert eng.counts.submissions == 6
    again = Ledger()
    eng2 = await run_engine(tmp_path, ScriptedProvider(again))
    assert again.created == []
    assert {r.status for r in eng2.records.values()} == {"cached"}


async def test_transient_submit_errors_are_retried_without_a_new_task(tmp_path: Path):
    ledger = Ledger()
    prov = ScriptedProvider(ledger, {"song[1]": [TransientError("430", retry_after=7.0),
                                                 TransientError("connect refused")]})
    eng = await run_engine(tmp_path, prov)
    assert eng.status == "succeeded"
    assert submitted(ledger, "song[1]") == 1
    assert eng.records["song[1]"].attempts == 1
    assert 7.0 in eng.slept  # Retry-After honoured


async def test_possibly_submitted_is_counted_and_resubmitted_by_default(tmp_path: Path):
    ledger = Ledger()
    prov = ScriptedProvider(ledger, {"song[0]": [PossiblySubmitted("HTTP 504")]})
    eng = await run_engine(tmp_path, prov)
    assert eng.status == "succeeded"
    assert submitted(ledger, "song[0]") == 2  # the lost one, and the resubmission
    assert eng.counts.possibly_submitted == 1


async def test_no_resubmit_uncertain_stops_instead(tmp_path: Path):
    ledger = Ledger()
    prov = ScriptedProvider(ledger, {"song[0]": [PossiblySubmitted("read timeout")]})
    eng = await run_engine(tmp_path, prov, resubmit_uncertain=False)
    assert eng.status == "failed"
    assert submitted(ledger, "song[0]") == 1
    assert "not resubmitting" in (eng.records["song[0]"].error or "")


async def test_a_failed_task_is_not_resubmitted_without_retry(tmp_path: Path):
    ledger = Ledger()
    prov = ScriptedProvider(ledger, poll_script={
        "song[2]": [TaskFailed("GENERATE_AUDIO_FAILED")]})
    eng = await run_engine(tmp_path, prov, keep_going=True)
    assert eng.status == "failed"
    assert submitted(ledger, "song[2]") == 1
    assert eng.records["song[2]"].status == "failed"
    assert eng.records["song[0]"].status == "succeeded"  # keep-going finished the others


async def test_retry_pays_for_another_try_only_when_asked(tmp_path: Path):
    ledger = Ledger()
    prov = ScriptedProvider(ledger, poll_script={
        "song[2]": [TaskFailed("SENSITIVE_WORD_ERROR")]})
    eng = await run_engine(tmp_path, prov, step_extra="retry: 1")
    assert eng.status == "succeeded"
    assert submitted(ledger, "song[2]") == 2


async def test_a_refunded_failure_is_resubmitted_for_free(tmp_path: Path):
    ledger = Ledger()
    prov = ScriptedProvider(ledger, poll_script={
        "song[0]": [TaskFailed("531 failed, refunded", refunded=True)]})
    eng = await run_engine(tmp_path, prov)
    assert eng.status == "succeeded"
    assert submitted(ledger, "song[0]") == 2


@pytest.mark.parametrize("exc", [AuthError("401: check SUNO_API_KEY"),
                                 CreditsError("insufficient credits")])
async def test_auth_and_credit_errors_stop_every_new_submission(tmp_path: Path, exc: Exception):
    ledger = Ledger()
    # The service answers words[0] with the error; nothing else may be submitted after it.
    prov = ScriptedProvider(ledger, {"words[0]": [exc]})
    eng = await run_engine(tmp_path, prov, keep_going=True, concurrency=1)
    assert eng.status == "failed"
    assert eng.stop_reason
    assert str(exc) in eng.stop_reason
    assert len(ledger.created) == 1
    assert all(r.status in ("failed", "skipped") for r in eng.records.values())


async def test_fail_fast_stops_submitting_but_keep_going_finishes_branches(tmp_path: Path):
    ledger = Ledger()
    prov = ScriptedProvider(ledger, poll_script={"words[0]": [TaskFailed("failed")]})
    eng = await run_engine(tmp_path / "a", prov, concurrency=1)
    assert eng.status == "failed"
    assert eng.records["song[0]"].status == "skipped"
    assert submitted(ledger, "song[1]") == 0
    ledger2 = Ledger()
    prov2 = ScriptedProvider(ledger2, poll_script={"words[0]": [TaskFailed("failed")]})
    eng2 = await run_engine(tmp_path / "b", prov2, concurrency=1, keep_going=True)
    assert eng2.records["song[0]"].status == "skipped"
    assert eng2.records["song[1]"].status == "succeeded"
    assert eng2.records["song[2]"].status == "succeeded"


async def test_resume_polls_a_recorded_task_and_never_resubmits_it(tmp_path: Path):
    ledger = Ledger()
    # First run: song[1] stays running until the step times out; its task id is recorded.
    prov = ScriptedProvider(ledger, poll_script={"song[1]": ["running"] * 1000})
    eng = await run_engine(tmp_path, prov, step_extra="timeout: 30")
    assert eng.records["song[1]"].status == "failed"
    first = [t for s, t in ledger.created if s == "song[1]"]
    assert len(first) == 1
    ledger2 = Ledger()
    prov2 = ScriptedProvider(ledger2)
    eng2 = await run_engine(tmp_path, prov2, step_extra="timeout: 30")
    assert eng2.status == "succeeded"
    assert ledger2.created == []
    assert eng2.records["song[1]"].task_ids == first


async def test_an_intent_without_a_task_id_is_possibly_submitted_on_resume(tmp_path: Path):
    ledger = Ledger()
    await run_engine(tmp_path, ScriptedProvider(ledger))
    store = Store(tmp_path / "state").open()
    key = next(k for k, s in store.states.items() if s.step == "song[0]")
    # Simulate a kill between the intent and the service's answer for a fresh key.
    store.record("forget", key, "song[0]")
    store.record("intent", key, "song[0]", attempt=1)
    store.close()
    ledger2 = Ledger()
    eng = await run_engine(tmp_path, ScriptedProvider(ledger2))
    assert eng.counts.possibly_submitted == 1
    assert submitted(ledger2, "song[0]") == 1
    ledger3 = Ledger()
    store = Store(tmp_path / "state").open()
    store.record("forget", key, "song[0]")
    store.record("intent", key, "song[0]", attempt=1)
    store.close()
    eng3 = await run_engine(tmp_path, ScriptedProvider(ledger3), resubmit_uncertain=False)
    assert ledger3.created == []
    assert eng3.records["song[0]"].status == "failed"


async def test_only_runs_a_step_and_what_it_needs(tmp_path: Path):
    ledger = Ledger()
    eng = await run_engine(tmp_path, ScriptedProvider(ledger), only={"words"})
    assert {s for s, _ in ledger.created} == {"words[0]", "words[1]", "words[2]"}
    assert set(eng.records) == {"words[0]", "words[1]", "words[2]"}


async def test_force_reruns_the_step_and_downstream_only(tmp_path: Path):
    await run_engine(tmp_path, ScriptedProvider(Ledger()))
    ledger = Ledger()
    eng = await run_engine(tmp_path, ScriptedProvider(ledger), force={"song"})
    assert sorted(s for s, _ in ledger.created) == ["song[0]", "song[1]", "song[2]"]
    assert all(eng.records[f"words[{i}]"].status == "cached" for i in range(3))


async def test_max_credits_refuses_to_submit_past_the_budget(tmp_path: Path):
    ledger = Ledger()
    # lyrics cost 1 credit each by default, generate 12: 3 + 12 fits, the second song not.
    eng = await run_engine(tmp_path, ScriptedProvider(ledger), max_credits=20, concurrency=1)
    assert eng.status == "failed"
    assert len(ledger.created) == 4
    assert "--max-credits" in (eng.stop_reason or "")


async def test_journal_survives_a_torn_last_line(tmp_path: Path):
    await run_engine(tmp_path, ScriptedProvider(Ledger()))
    journal = tmp_path / "state" / "journal.jsonl"
    torn = b'{"v":1,"e":"intent","key":"abc","step":"song[0]"'
    with journal.open("ab") as f:
        f.write(torn)  # killed mid-write
    # The next run writes after the torn line (--force pays for song again): each of its
    # events must be a line of its own, not glued onto the torn one.
    ledger = Ledger()
    eng = await run_engine(tmp_path, ScriptedProvider(ledger), force={"song"})
    assert eng.status == "succeeded"
    assert submitted(ledger, "song[0]") == 1
    lines = [line for line in journal.read_bytes().split(b"\n") if line]
    assert torn in lines  # left alone, on its own line
    for line in lines:
        if line != torn:
            json.loads(line)  # every other line is a whole event
    # And a third run reads those events: everything is done, nothing is paid again.
    again = Ledger()
    eng3 = await run_engine(tmp_path, ScriptedProvider(again))
    assert again.created == []
    assert {r.status for r in eng3.records.values()} == {"cached"}


def test_newer_state_format_is_refused(tmp_path: Path):
    from runner.errors import StoreError

    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "VERSION").write_text("99\n")
    with pytest.raises(StoreError, match="newer sunoflow"):
        Store(tmp_path / "state").open()


def test_the_recipe_these_tests_share_plans_three_lyrics_and_three_songs(tmp_path: Path):
    # The counts the tests above assert (6 tasks, song[i] reading words[i]) rest on this.
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE % "")
    plan = planner.build(recipes.load(path))
    assert sorted(i.id for i in plan.steps()) == [
        "song[0]", "song[1]", "song[2]", "words[0]", "words[1]", "words[2]"]
    assert [plan.instances[f"song[{i}]"].deps for i in range(3)] == [
        ("words[0]",), ("words[1]",), ("words[2]",)]


async def test_a_service_that_never_answers_a_submit_is_not_paid_without_bound(tmp_path: Path):
    ledger = Ledger()
    prov = ScriptedProvider(ledger, {"song[0]": [PossiblySubmitted("HTTP 502")] * 50})
    eng = await run_engine(tmp_path, prov, keep_going=True)
    assert eng.records["song[0]"].status == "failed"
    assert "got no answer" in (eng.records["song[0]"].error or "")
    assert submitted(ledger, "song[0]") == 3  # the first and two resubmissions, no more
    assert eng.counts.possibly_submitted == 3


async def test_concurrency_bounds_submits_not_tasks_running_at_the_service(tmp_path: Path):
    # With one slot, a task being polled must not hold it: each lyrics task keeps running
    # until all three were submitted, which only happens if polling holds no slot.
    prov = ScriptedProvider(Ledger(), poll_script={
        f"words[{i}]": ["until_all_submitted"] for i in range(3)})
    eng = await run_engine(tmp_path, prov, concurrency=1)
    assert eng.status == "succeeded"
    in_flight = peak = 0
    for kind, _step in prov.events:
        in_flight += 1 if kind == "submit" else -1
        peak = max(peak, in_flight)
    assert peak == 3


async def test_a_queued_instance_whose_key_is_in_flight_gives_its_place_back(tmp_path: Path):
    # Two instances with the same inputs (one key) and one place: the first takes the
    # place to submit; the second is handed it next and finds the key in flight, so it
    # waits for the first, which needs a place again to fetch its files. Holding on to
    # the place it was handed would wait forever.
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE.split("  song:")[0].replace("for_each: [a, b, c]",
                                                       "for_each: [a, a]"))
    plan = planner.build(recipes.load(path))
    store = Store(tmp_path / "state").open()
    ledger = Ledger()
    prov = ScriptedProvider(ledger)
    eng = Engine(plan, store, {"local": prov, "sunoapi": prov},
                 Options(state_dir=tmp_path / "state", clock=FakeClock(), concurrency=1,
                         handle_signals=False), PlainProgress(quiet=True))

    async def go() -> str:
        with anyio.fail_after(20):  # real seconds, only so that a regression fails, not hangs
            return await eng.run()

    assert await go() == "succeeded"
    store.close()
    assert submitted(ledger, "words[0]") + submitted(ledger, "words[1]") == 1
    assert eng.remote_slots.held == 0


async def test_polls_that_queue_for_the_rate_limit_tell_the_poller_it_is_crowded(
        tmp_path: Path):
    """The engine keeps a moving average of how long its polls waited for the rate limit
    (the provider's SENT_AT, set when a request leaves the limiter, minus when the poll
    was asked for). While it is over a fifth of the poll interval, the poller is told the
    limiter is crowded, and places no early poll (runner.pacing.Poller.wait); with polls
    that leave at once it never is."""

    class Queued(ScriptedProvider):
        def __init__(self, ledger: Ledger, clock: FakeClock, wait: float) -> None:
            super().__init__(ledger, poll_script={
                f"song[{i}]": ["running"] * 4 for i in range(3)})
            self.clock, self.wait = clock, wait

        async def poll(self, op: Op, task_id: str) -> Result | None:
            SENT_AT.set(self.clock.now() + self.wait)  # it waited this long in the limiter
            return await super().poll(op, task_id)

    async def crowding(wait: float) -> list[bool]:
        path = tmp_path / f"w{wait:g}" / "r.yaml"
        path.parent.mkdir()
        path.write_text(RECIPE % "")
        plan = planner.build(recipes.load(path))
        store = Store(path.parent / "state").open()
        clock = FakeClock()
        prov = Queued(Ledger(), clock, wait)
        eng = Engine(plan, store, {"local": prov, "sunoapi": prov},
                     Options(state_dir=path.parent / "state", clock=clock,
                             handle_signals=False), PlainProgress(quiet=True))
        seen: list[bool] = []
        wait_of = eng.poller.wait

        async def spy(*args: Any, crowded: bool = False, **kw: Any) -> bool:
            seen.append(crowded)
            return await wait_of(*args, crowded=crowded, **kw)

        eng.poller.wait = spy  # type: ignore[method-assign]
        assert await eng.run() == "succeeded"
        store.close()
        return seen

    queued, free = await crowding(5.0), await crowding(0.0)
    assert free
    assert not any(free)
    assert any(queued)
    assert not queued[0]  # it takes polls that waited to say so


# --- a host whose record lags (engine rule 8) -----------------------------------------
# song[i] reads words[i], which the run saw finished before song[i] was sent: a refusal
# saying a task it reads "has not finished" is the host's record lagging its own answer.

def lag_refusal() -> StepError:
    return StepError("task words-task has not finished", code=400)


def events_of(tmp_path: Path, step: str) -> list[str]:
    lines = (tmp_path / "state" / "journal.jsonl").read_text().splitlines()
    return [e["e"] for e in map(json.loads, lines) if e["step"] == step]


async def test_a_lagging_record_is_waited_for_and_the_step_paid_once(tmp_path: Path):
    ledger = Ledger()
    prov = ScriptedProvider(ledger, {"song[1]": [lag_refusal(), lag_refusal()]})
    eng = await run_engine(tmp_path, prov)
    assert eng.status == "succeeded"
    assert submitted(ledger, "song[1]") == 1
    # poll_interval 1: the waits start at a quarter of it and double.
    waits = [w for w in eng.slept if w in (0.25, 0.5)]
    assert waits == [0.25, 0.5]
    rec = eng.records["song[1]"]
    assert (rec.attempts, eng.counts.lag_refused, eng.counts.possibly_submitted) == (3, 2, 0)
    assert "as if words[1] had not finished" in rec.notes[0]
    assert rec.notes[1].startswith("song[1]: taken after 2 more tries, 0.75 s after")
    # Each refusal is journaled as not submitted before the next intent.
    assert events_of(tmp_path, "song[1]") == ["intent", "failed", "intent", "failed",
                                              "intent", "submitted", "done"]
    # A lagging record is no refusal of early work: nothing is learned of the host.
    assert not (tmp_path / "state" / "early.json").exists()


async def test_a_lag_past_the_bound_fails_the_step_and_the_next_run_pays_once(
        tmp_path: Path):
    ledger = Ledger()
    prov = ScriptedProvider(ledger, {"song[1]": [lag_refusal()] * 8})
    eng = await run_engine(tmp_path, prov, keep_going=True)
    assert eng.status == "failed"
    rec = eng.records["song[1]"]
    assert rec.status == "failed"
    assert submitted(ledger, "song[1]") == 0
    assert eng.counts.lag_refused == 7  # the first request and six resends
    assert rec.error == (
        "song[1]: the service refused generate 7 times as if words[1] had not finished "
        "(task words-task has not finished), waiting 4.75 s in all after it said words[1] "
        "had: its record may lag for longer, or something else is wrong; no task was "
        "made, so nothing was paid; run again later (only what is not done is paid for)")
    assert events_of(tmp_path, "song[1]")[-2:] == ["intent", "failed"]
    again = Ledger()
    eng2 = await run_engine(tmp_path, ScriptedProvider(again))
    assert eng2.status == "succeeded"
    assert [s for s, _ in again.created] == ["song[1]"]
    assert eng2.counts.possibly_submitted == 0


def bare_refusal() -> StepError:
    return StepError("POST /api/v1/wav/generate: the service rejected the request (404: "
                     "not found)", code=404)


# One song read from one lyrics task: nothing else sleeps on the run's FakeClock between
# `words` finishing and the answer to `song`, so the time between them is exact.
ONE = """\
version: 1
name: t
provider: {kind: sunoapi, base_url: "http://127.0.0.1:9", poll_interval: 1,
           timeouts: {"*": 100h}}
steps:
  words:
    uses: lyrics
    with: {prompt: "about rain"}
  song:
    uses: generate
    %s
    with: {prompt: "{{ steps.words.text }}", title: T, style: pop}
"""


async def test_a_bare_refusal_soon_after_the_finish_is_waited_for_and_paid_once(
        tmp_path: Path):
    """A 404 that does not say why, 3 s after `words` finished (within the 4.75 s
    the run waits out a lag at poll_interval 1), may be the host's record lagging
    (early.MAYBE): sent again after the same waits, paid once."""
    ledger = Ledger()
    prov = ScriptedProvider(ledger, {"song": [Late(3, bare_refusal()), bare_refusal()]})
    eng = await run_engine(tmp_path, prov, recipe=ONE)
    assert eng.status == "succeeded"
    assert submitted(ledger, "song") == 1
    assert [w for w in eng.slept if w in (0.25, 0.5)] == [0.25, 0.5]
    rec = eng.records["song"]
    assert (rec.attempts, eng.counts.lag_refused, eng.counts.possibly_submitted) == (3, 2, 0)
    assert rec.notes[0] == (
        "song: the service refused the generate request without saying why (POST "
        "/api/v1/wav/generate: the service rejected the request (404: not found)), 3 s "
        "after words finished: its record may lag; the refusal made no task, so nothing "
        "was paid; submitting again after growing waits (at most 6 times)")
    assert events_of(tmp_path, "song") == ["intent", "failed", "intent", "failed",
                                           "intent", "submitted", "done"]
    assert not (tmp_path / "state" / "early.json").exists()


async def test_a_bare_refusal_past_the_bound_fails_the_step_naming_it(tmp_path: Path):
    ledger = Ledger()
    prov = ScriptedProvider(ledger, {"song": [bare_refusal()] * 8})
    eng = await run_engine(tmp_path, prov, recipe=ONE)
    rec = eng.records["song"]
    assert (rec.status, submitted(ledger, "song"), eng.counts.lag_refused) == \
        ("failed", 0, 7)
    assert rec.error == (
        "song: the service refused generate 7 times without saying why (POST "
        "/api/v1/wav/generate: the service rejected the request (404: not found)), "
        "waiting 4.75 s in all after it said words had finished: its record may lag for "
        "longer, or it refuses the request itself; no task was made, so nothing was "
        "paid; run again later (only what is not done is paid for)")


async def test_a_bare_refusal_long_after_the_finish_fails_at_once(tmp_path: Path):
    """Past the 4.75 s the run waits out a lag, after `words` finished, a refusal
    that does not say why is about the request: no resend."""
    ledger = Ledger()
    prov = ScriptedProvider(ledger, {"song": [Late(5, bare_refusal())]})
    eng = await run_engine(tmp_path, prov, recipe=ONE)
    rec = eng.records["song"]
    assert (rec.status, rec.attempts, eng.counts.lag_refused) == ("failed", 1, 0)
    assert rec.error == ("song: POST /api/v1/wav/generate: the service rejected the "
                         "request (404: not found)")
    assert rec.notes == [
        "song: a refusal that does not say why, 5 s after words finished: not read as "
        "the host's record lagging (the run waits out 4.75 s of lag)"]


@pytest.mark.parametrize(("step", "exc"), [
    # "Record already exists": a record that lags cannot make one up (early.EXISTS).
    ("song[1]", StepError("conflict", code=409)),
    ("words[1]", lag_refusal()),  # words read no task: "not finished" is not a lag
], ids=["exists-409", "reads-no-task"])
async def test_other_refusals_of_a_request_that_is_not_early_fail_at_once(
        tmp_path: Path, step: str, exc: StepError):
    ledger = Ledger()
    eng = await run_engine(tmp_path, ScriptedProvider(ledger, {step: [exc]}),
                           keep_going=True)
    assert eng.records[step].status == "failed"
    assert eng.records[step].attempts == 1
    assert submitted(ledger, step) == 0
    assert eng.counts.lag_refused == 0
