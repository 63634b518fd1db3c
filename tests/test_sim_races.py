"""benchmarks/sim_races.py, the races on a virtual clock: the real engine, poller and rate
limiter against an in-process service on trio's MockClock. Not a timing test: the clock
is virtual, so these figures are the policy's, the same on any machine. They guard the
polling policy against regressions the wall-clock benchmark (bench_races.py) could only
show on a quiet machine."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import sim_races  # noqa: E402


def test_four_songs_with_fixed_latencies_run_near_the_bound_with_few_requests(
        tmp_path: Path):
    """Scene a (4 songs, lyrics 10 s > generate 150 > extend 150 > WAV 30, early work
    accepted): the bound is 340 s; sunoflow starts each extend and WAV from the first
    take, so it ends before it, with ~3.6 API requests a paid task (a thread pool polling
    every 2.5 s sends ~26)."""
    r = sim_races.run_once("a", 7, 0.2, tmp_path, None)
    assert r.status == "succeeded"
    assert r.bound == 340.0
    assert r.limited == 0
    assert r.x < 1.0
    assert r.requests / r.tasks < 4.5


def test_a_host_that_refuses_early_work_costs_a_refusal_per_operation_not_the_album(
        tmp_path: Path):
    """Scene b against a host that refuses work on an unfinished task: the early requests
    are refused (no task, no charge) and every song still finishes, none rate-limited,
    within 1.15x the bound on this seed."""
    r = sim_races.run_once("b-refuse", 7, 0.2, tmp_path, None)
    assert r.status == "succeeded"
    assert r.tasks == 64  # one task per step instance: nothing paid twice
    assert 2 <= r.refused <= 16
    assert r.limited == 0
    assert r.x < 1.15


def test_with_callbacks_the_album_ends_when_its_longest_song_does(tmp_path: Path):
    """Scene b with callbacks (the service calls back each task's end and first stage):
    nothing is found late, so the run ends with the longest song's chain, with about one
    API request a task (its submit; a refused early one now and then) and no polls but
    the fallbacks."""
    r = sim_races.run_once("b-refuse", 7, 0.2, tmp_path, None, listen=True)
    assert r.status == "succeeded"
    assert r.tasks == 64
    assert r.x < 1.02
    assert r.requests / r.tasks < 1.3
    assert r.service.polls < 16


def test_a_seed_is_one_album_and_one_run(tmp_path: Path):
    """The simulator is an instrument: a seed gives the same album to every client (the
    latencies are keyed by song and operation, not by the order of submissions) and the
    same run each time (trio's scheduling seeded and sorted), so two policies compare on
    equal terms and a repeat says nothing new."""
    one = sim_races.run_once("b-refuse", 11, 0.2, tmp_path, None)
    two = sim_races.run_once("b-refuse", 11, 0.2, tmp_path, None)
    assert (one.makespan, one.requests) == (two.makespan, two.requests)
    pool = sim_races.run_pool("b-refuse", 11, 0.2, 17.5)
    assert pool.bound == one.bound
    latencies = sorted((t.song, t.op, t.latency) for t in one.service.tasks.values())
    assert sorted((t.song, t.op, t.latency) for t in pool.service.tasks.values()) == latencies
