"""Critical path first: the priorities the plan gives each instance's requests
(runner.engine.priority), and that the engine hands them to the provider's rate limiter."""

from __future__ import annotations

from pathlib import Path

import pytest
from doubles import Quiet, finished

from runner.engine.priority import CriticalPath
from runner.engine.records import Options
from runner.engine.scheduler import Engine
from runner.pacing import PRIORITY, FakeClock, Poller
from runner.plan import build as planner
from runner.providers import Op, Result, Submitted
from runner.recipe import load as recipes
from runner.report.progress import PlainProgress
from runner.steps.types import TYPES
from runner.steps.types import pace_of as _pace
from runner.store.journal import Store

# The async tests run on each backend of anyio (tests/conftest.py: anyio_backend).
pytestmark = pytest.mark.anyio

# Two songs: lyrics -> generate -> extend -> WAV (at the service) -> a trim (local, free),
# and a video of the first song only, so the first song's chain is the longer one.
ALBUM = """\
version: 1
name: t
provider: {kind: sunoapi, base_url: "http://127.0.0.1:9"}
steps:
  words:
    uses: lyrics
    for_each: [a, b]
    with: {prompt: "about {{ item }}"}
  song:
    uses: generate
    for_each: "{{ steps.words }}"
    with: {prompt: "{{ item.text }}", title: "T{{ index }}", style: pop}
  long:
    uses: extend
    for_each: "{{ steps.song }}"
    with: {audio: "{{ item.tracks[0] }}", continue_at: 20, prompt: more}
  master:
    uses: convert
    for_each: "{{ steps.long }}"
    with: {audio: "{{ item.tracks[0] }}", format: wav}
  short:
    uses: trim
    for_each: "{{ steps.master }}"
    with: {audio: "{{ item.file }}", start: 0, end: 10}
  teaser:
    uses: video
    with: {audio: "{{ steps.long[0].tracks[0] }}"}
"""


class Priorities:
    """The priorities a CriticalPath gives (the aging of each is looked at apart)."""

    def __init__(self, cp: CriticalPath) -> None:
        self.cp = cp

    def submit(self, iid: str) -> float:
        return self.cp.submit(iid).priority

    def poll(self, iid: str) -> float:
        return self.cp.poll(iid).priority


def critical_path(tmp_path: Path, text: str = ALBUM) -> tuple[Priorities, Poller]:
    path = tmp_path / "album.yaml"
    path.write_text(text)
    plan = planner.build(recipes.load(path))
    poller = Poller(10.0, 60.0, FakeClock(), family=_pace)
    cp = CriticalPath(plan, list(plan.instances.values()), "sunoapi", poller)
    return Priorities(cp), poller


def test_each_request_gets_the_longest_expected_way_to_the_end_from_the_step_defaults(
        tmp_path: Path):
    """Defaults (runner.steps.types): lyrics 10 s, music 150, WAV 30, video 60; the trim is
    local (0). The first song's chain ends in the video (60 > 30), the second's in its
    WAV. A poll gets what is left after its task; a submit its task too, and one longest
    task (150) on top, so it goes before polls of chains about as long."""
    cp, poller = critical_path(tmp_path)
    # Nothing learned yet: a poll is a probe, and goes before the submits.
    assert cp.poll("words[1]") == cp.submit("words[1]") + 150 == 10 + 330 + 150 + 150
    for op, lo, hi in (("lyrics", 9, 11), ("generate", 140, 160), ("convert", 29, 31),
                       ("video", 59, 61)):
        poller.learn(op, lo, hi)  # the very defaults: 10, 150, 30 and 60 s
    expected_tail = {
        "short[0]": 0, "master[0]": 0, "teaser": 0, "long[0]": 60, "song[0]": 210,
        "words[0]": 360,
        "short[1]": 0, "master[1]": 0, "long[1]": 30, "song[1]": 180, "words[1]": 330,
    }
    assert {i: cp.poll(i) for i in expected_tail} == expected_tail
    assert cp.submit("words[0]") == 10 + 360 + 150
    assert cp.submit("words[1]") == 10 + 330 + 150
    assert cp.submit("long[1]") == 150 + 30 + 150
    assert cp.submit("teaser") == 60 + 0 + 150
    # The first song (with its video) is the longer chain: its song goes before the
    # second song's lyrics (510 > 490), which go before the second song (480).
    order = sorted(["master[1]", "teaser", "long[0]", "song[1]", "words[1]", "song[0]"],
                   key=cp.submit, reverse=True)
    assert order == ["song[0]", "words[1]", "song[1]", "long[0]", "teaser", "master[1]"]


def test_what_the_run_learns_reorders_the_priorities_but_keeps_their_unit(tmp_path: Path):
    """Priorities stay in the defaults' seconds: a service ten times faster than the
    defaults throughout (a benchmark's scaled fake) changes nothing; one whose WAV takes
    as long as the defaults say while its music is ten times faster makes the WAV count
    for more than the music, and a second of waiting for ten."""
    cp, poller = critical_path(tmp_path)
    before = {i: cp.submit(i) for i in ("words[0]", "song[1]", "long[0]", "master[1]")}
    assert cp.cp.submit("song[1]").aging == 1.0
    for _ in range(5):
        poller.learn("generate", 14.0, 16.0)  # (known to within 14-16 s: 15)
    assert poller.estimate("extend") == 15.0
    poller.learn("lyrics", 0.9, 1.1)
    assert {i: cp.submit(i) for i in before} == pytest.approx(before)
    # A second waited on the engine's clock is now worth ten of the defaults' seconds.
    assert cp.cp.submit("song[1]").aging == pytest.approx(10.0)
    for _ in range(3):
        poller.learn("convert", 29.0, 31.0)  # WAV: 30 s after all
    # The unit was fixed by the first learned (music: a tenth of the default), so the WAV
    # counts for 300 of the defaults' seconds, twice a song.
    music, wav = 150, 300
    assert cp.poll("long[1]") == pytest.approx(wav)
    assert cp.poll("long[0]") == pytest.approx(wav)  # longer than the video (its default)
    assert cp.submit("song[1]") == pytest.approx(music + music + wav + wav)  # + longest: WAV
    assert cp.cp.submit("song[1]").aging == pytest.approx(10.0)  # the unit stays
    # A move of less than a tenth keeps the tails as they were (no recomputation).
    for _ in range(6):
        poller.learn("generate", 15.5, 16.5)
    assert poller.estimate("generate") == 16.0
    assert cp.poll("song[1]") == pytest.approx(music + wav)


def test_a_step_known_to_be_skipped_is_on_no_path(tmp_path: Path):
    """Stems of the second song only (`if:` on the index, known before the run): its chain
    is the long one. An `if:` on a step's outputs is not known: taken to hold."""
    cp, poller = critical_path(tmp_path, ALBUM + """\
  stems:
    uses: separate
    for_each: "{{ steps.long }}"
    if: "{{ index == 1 }}"
    with: {audio: "{{ item.tracks[0] }}"}
  cover_art:
    uses: cover
    for_each: "{{ steps.stems }}"
    with: {audio: "{{ steps.long[index].tracks[0] }}"}
  maybe:
    uses: video
    if: "{{ steps.words[0].title == 'x' }}"
    with: {audio: "{{ steps.master[0].tracks[0] }}"}
""")
    for op in ("lyrics", "generate", "convert", "video", "separate", "cover"):
        d = TYPES[op].expected
        poller.learn(op, d - 1, d + 1)
    assert cp.poll("long[1]") == 90 + 30  # stems[1], then its cover art
    assert cp.poll("master[0]") == 60  # `maybe` may run
    # master[0] then `maybe` (90): not stems[0] and its cover (120), which are skipped.
    assert cp.poll("long[0]") == 30 + 60
    assert cp.poll("words[1]") > cp.poll("words[0]")


def test_a_call_of_a_reusable_recipe_is_on_the_path(tmp_path: Path):
    """The ends of a call do no work, but what follows a call waits for it: the path runs
    through them."""
    (tmp_path / "inner.yaml").write_text("""\
version: 1
name: inner
inputs:
  idea: {type: string}
steps:
  words: {uses: lyrics, with: {prompt: "{{ inputs.idea }}"}}
  song:
    uses: generate
    with: {prompt: "{{ steps.words.text }}", title: T, style: pop}
outputs:
  track: "{{ steps.song.tracks[0] }}"
""")
    cp, _ = critical_path(tmp_path, """\
version: 1
name: t
provider: {kind: sunoapi, base_url: "http://127.0.0.1:9"}
steps:
  full:
    uses: ./inner.yaml
    with: {idea: rain}
  master:
    uses: convert
    with: {audio: "{{ steps.full.track }}", format: wav}
""")
    assert cp.poll("full/song") == 150 + 30 + 150 + 150  # a probe: nothing is learned yet
    assert cp.submit("full/song") == 150 + 30 + 150
    assert cp.submit("full/words") == 10 + 180 + 150


class Recorder(Quiet):
    """A service that finishes every task at its first poll and records the priority each
    request was sent with (what the rate limiter would order them by)."""

    kind = "sunoapi"

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, float]] = []  # (submit | poll, instance, priority)

    async def submit(self, op: Op) -> Submitted:
        self.seen.append(("submit", op.step, PRIORITY.get().priority))
        return Submitted(f"task-{op.step}")

    async def poll(self, op: Op, task_id: str) -> Result | None:
        self.seen.append(("poll", op.step, PRIORITY.get().priority))
        return finished(op, task_id)


async def test_the_engine_sends_each_request_with_its_critical_path_priority(tmp_path: Path):
    path = tmp_path / "r.yaml"
    path.write_text("""\
version: 1
name: t
provider: {kind: sunoapi, base_url: "http://127.0.0.1:9", poll_interval: 1}
steps:
  words:
    uses: lyrics
    for_each: [a, b, c]
    with: {prompt: "about {{ item }}"}
  song:
    uses: generate
    for_each: "{{ steps.words }}"
    with: {prompt: "{{ item.text }}", title: "T{{ index }}", style: pop}
""")
    plan = planner.build(recipes.load(path))
    store = Store(tmp_path / "state").open()
    rec = Recorder()
    eng = Engine(plan, store, {"local": rec, "sunoapi": rec},
                 Options(state_dir=tmp_path / "state", clock=FakeClock(), handle_signals=False),
                 PlainProgress(quiet=True))
    assert await eng.run() == "succeeded"
    store.close()
    got: dict[tuple[str, str], list[float]] = {}
    for kind, step, prio in rec.seen:
        got.setdefault((kind, step.split("[")[0]), []).append(prio)
    # Nothing is learned before the first submit: 10 + 150 (the song after it) + 150.
    # (What is learned later depends on how the tasks interleave: only orders are sure.)
    assert rec.seen[0] == ("submit", rec.seen[0][1], 310.0)
    # The first poll of a song is a probe (nothing known about music yet): before the
    # songs' submits. It teaches the run (done at once), so the next have nothing after.
    probe, *polls = got[("poll", "song")]
    assert probe > max(got[("submit", "song")])
    assert polls == [0.0, 0.0]
    assert min(got[("poll", "words")]) > 0  # a song still to make after each


def test_slack_is_what_a_task_in_flight_can_lose_without_moving_the_expected_end(
        tmp_path: Path):
    """Both songs' extends are in flight. The first song's chain ends in its video (60 s),
    the second's in its WAV (30 s): the first heads the longest way, so it has no slack
    and the second has 30 s; a task past its expected duration counts as about done, so
    the longer it runs the less slack its rivals have."""
    cp, poller = critical_path(tmp_path)
    for op, lo, hi in (("lyrics", 9, 11), ("generate", 140, 160), ("convert", 29, 31),
                       ("video", 59, 61)):
        poller.learn(op, lo, hi)  # the defaults: the unit stays 1
    clock = poller.clock
    assert isinstance(clock, FakeClock)
    clock.t = 100.0
    both = {"long[0]": 0.0, "long[1]": 0.0}  # submitted together, 100 s ago
    assert cp.cp.standing("long[0]", both)[0] == pytest.approx(0.0)
    assert cp.cp.standing("long[1]", both)[0] == pytest.approx(30.0)
    # The second submitted 40 s later: it now heads the way (90 s left + 30 against the
    # first's 50 + 60).
    later = {"long[0]": 0.0, "long[1]": 40.0}
    assert cp.cp.standing("long[0]", later)[0] == pytest.approx(10.0)
    assert cp.cp.standing("long[1]", later)[0] == pytest.approx(0.0)
    # Its rivals: the tasks in flight whose way is at least its own less a poll's spacing
    # (a tenth of 150 s), itself included. Together, the first heads the way by 30 s,
    # alone; 40 s apart, the two ways (110 and 120 s) are within 15 s of each other.
    assert cp.cp.standing("long[0]", both) == (pytest.approx(0.0), 1)
    assert cp.cp.standing("long[1]", later) == (pytest.approx(0.0), 2)
    assert cp.cp.standing("long[0]", later) == (pytest.approx(10.0), 2)
    # Not in flight, or its family not learned: nothing to say.
    assert cp.cp.standing("song[0]", both) is None
    fresh, _ = critical_path(tmp_path)
    assert fresh.cp.standing("long[0]", both) is None
