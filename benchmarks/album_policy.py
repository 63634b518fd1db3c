"""How close a client *without* foresight can get to the album's lower bound: a simulator.

    python benchmarks/album_policy.py [--songs 10,100,1000] [--seeds 40] [--big-seeds 10]

The album and the service are those of the album benchmark (album_common: lyrics ->
generate -> extend -> WAV per song, a video of the first song, stems of every 10th; each
task's latency drawn from album_common.LATENCY the way the fake draws it; at most
RATE_REQUESTS requests per RATE_SECONDS, sliding window). Network time is zero and
downloads are free. What varies is the one choice a client controls once its requests
queue for the rate limit: *which waiting request goes next* (the policy), under three ways
of learning that a task is done (the detection):

- callbacks: the service says so, and that costs no request (ideal `--listen`);
- ideal polls: exactly one poll per task, due the moment the task is done (a poller that
  knew every latency: the best polling can do);
- median polls: a poller that knows each operation's median latency (what sunoflow's
  Poller learns): first poll at the median, then every tenth of it (at least 2 s).

Policies see what a real client sees when it decides: the album's shape, the medians,
the clock, and the latencies of tasks already done; never a latency still to come (except
`clairvoyant`, the reference row). Each policy gives a request a key when it starts
waiting; the smallest key is served first, equal keys in arrival order. "Remaining" is
the expected rest of the request's song after it (medians): for a submit, this task plus
the longest path through the stages after it; for a poll, only the stages after it.

The bound is the benchmark's: max(critical path of the drawn latencies, the rate limit of
the requests the detection needs at least: one per task with callbacks, two with polls;
bench_callbacks.py counts two per task for every run, which changes nothing where the
critical path binds). The figures are makespan / bound, mean (and max) over seeds, the
same draws for every policy.

What the simulator leaves out, and the real client (runner.engine.priority, runner.pacing) had
to handle: the medians are learned during the run (a poll of an operation nothing is
known about yet goes first there, and a poll that waited long in the queue teaches
nothing); submits wait for the rate limit inside a --concurrency place, so the places are
handed out in the same order (fetching a finished task's files first); conditions on the
index (`if: index % 10 == 9`) are known before the run.
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from album_common import LATENCY, RATE_REQUESTS, RATE_SECONDS, has_stems  # noqa: E402
from album_oracle import STAGES  # noqa: E402

from runner.fake.config import draw_latency  # noqa: E402

MEDIAN = {op: float(spec["median"]) for op, spec in LATENCY.items()}
SIGMA = {op: float(spec["sigma"]) for op, spec in LATENCY.items()}
MIN_GAP = 2.0  # model seconds between polls of one task at least (sunoflow: interval / 5)


def album(n: int) -> list[list[list[str]]]:
    """Per song, per stage, the operations it runs (a stage's operations run side by side)."""
    def ops(i: int, stage: list[str]) -> list[str]:
        return [op for op in stage if op not in ("mp4", "separate_vocal")
                or (op == "mp4" and i == 0) or (op == "separate_vocal" and has_stems(i))]

    return [[ops(i, stage) for stage in STAGES] for i in range(n)]


def draws(shape: list[list[list[str]]], seed: int) -> list[dict[str, float]]:
    rng = random.Random(seed)
    return [{op: draw_latency(rng, LATENCY[op]) for stage in song for op in stage}
            for song in shape]


@dataclass(frozen=True)
class Req:
    song: int
    stage: int
    op: str
    kind: str  # "submit" or "poll"
    at: float  # when it started waiting
    n: int = 0  # poll number, 0-based


@dataclass
class State:
    """What the simulated client knows when a request starts waiting."""

    shape: list[list[list[str]]]
    chains: list[dict[str, float]]  # the draws: only `clairvoyant` may read a future one
    now: float = 0.0
    start: dict[int, float] = field(default_factory=dict)  # song -> its first submit
    revealed: dict[int, float] = field(default_factory=dict)  # song -> stages done, drawn
    waiting: int = 0  # requests in the queue
    submit_key: dict[tuple[int, str], float] = field(default_factory=dict)  # for `draft`

    def rest(self, song: int, stage: int) -> float:
        """Expected model seconds of the song after `stage` (medians, longest of a stage)."""
        return sum(max(MEDIAN[op] for op in ops) for ops in self.shape[song][stage + 1:])

    def remaining(self, r: Req) -> float:
        return self.rest(r.song, r.stage) + (MEDIAN[r.op] if r.kind == "submit" else 0.0)

    def requests_left(self, r: Req, polls: bool) -> int:
        """Requests of the song's critical chain from this one on (one per task and stage
        with callbacks, two with polls)."""
        stages = len(self.shape[r.song]) - r.stage
        per = 2 if polls else 1
        return per * stages - (1 if r.kind == "poll" else 0)


Policy = Callable[[State, Req], float]


def _tail(st: State, r: Req, z: float) -> float:
    """A high quantile of the remaining time: the mean plus z standard deviations (the
    stage's longest operation stands for the stage)."""
    stages = st.shape[r.song][r.stage + 1:]
    longest = [max(ops, key=MEDIAN.__getitem__) for ops in stages]
    if r.kind == "submit":
        longest.append(r.op)
    var = sum((MEDIAN[op] * SIGMA[op]) ** 2 for op in longest)
    return st.remaining(r) + z * math.sqrt(var)


def _clairvoyant(st: State, r: Req) -> float:
    c = st.chains[r.song]
    rest = sum(max(c[op] for op in ops) for ops in st.shape[r.song][r.stage + 1:])
    return -(rest + (c[r.op] if r.kind == "submit" else 0.0))


def _draft_dynamic(st: State, r: Req) -> float:
    # The first draft's "dynamic": age of the song when the request was released plus the
    # remaining of its *submit* (a poll inherits its submit's key).
    age = r.at - st.start.get(r.song, r.at)
    if r.kind == "poll":
        return st.submit_key[(r.song, r.op)]
    return -(age + st.remaining(r))


def _age(st: State, r: Req) -> float:
    """How long ago the request's song sent its first request."""
    return r.at - st.start.get(r.song, r.at)


def _submit(r: Req, bonus: float) -> float:
    return bonus if r.kind == "submit" else 0.0


LONGEST = max(MEDIAN.values())  # the longest expected task: sunoflow's submit bonus


def policies(rate: float) -> dict[str, Policy]:
    """Every policy tried, by name; the key is computed when the request starts waiting
    (`r.at`), smallest first. `rate`: requests per model second the limit allows."""
    return {
        "fifo (sunoflow before)": lambda st, r: 0.0,
        "draft static (a poll keeps its submit's key)":
            lambda st, r: -(st.rest(r.song, r.stage) + MEDIAN[r.op]),
        "draft dynamic (+ song's age, likewise)": _draft_dynamic,
        "lrf: longest remaining first": lambda st, r: -st.remaining(r),
        "lrf, polls first": lambda st, r: -st.remaining(r) - _submit(r, -1e6),
        "lrf, submits first": lambda st, r: -st.remaining(r) - _submit(r, 1e6),
        "lrf, submit +1 s (ties: submits first)": lambda st, r: -st.remaining(r) - _submit(r, 1),
        "lrf, aging 1": lambda st, r: r.at - st.remaining(r),
        "**lrf, submit + longest task, aging 1 (sunoflow)**":
            lambda st, r: r.at - st.remaining(r) - _submit(r, LONGEST),
        "lrf + song's age": lambda st, r: -(st.remaining(r) + _age(st, r)),
        "lrf + song's age, submits first":
            lambda st, r: -(st.remaining(r) + _age(st, r)) - _submit(r, 1e6),
        "projected finish from revealed draws": lambda st, r: -(
            st.start.get(r.song, r.at) + st.revealed.get(r.song, 0.0) + st.remaining(r)),
        "lrf on a high quantile (mean + 2 sd)": lambda st, r: -_tail(st, r, 2.0),
        "lrf + the song's future queueing": lambda st, r: -(
            st.remaining(r) + st.waiting / rate * st.requests_left(r, True)),
        "lrf, submit + longest, aging -0.5 (lifo-ish)":
            lambda st, r: -0.5 * r.at - st.remaining(r) - _submit(r, LONGEST),
        "lrf, submits first, then song order":
            lambda st, r: -1000 * st.remaining(r) + r.song - _submit(r, 1e9),
        "clairvoyant (the real remaining, for reference)": _clairvoyant,
    }


DETECTIONS = ("callbacks", "ideal polls", "median polls")


def simulate(shape: list[list[list[str]]], chains: list[dict[str, float]], policy: Policy,
             detection: str, requests: int = RATE_REQUESTS, per: float = RATE_SECONDS,
             late: dict[str, list[float]] | None = None) -> float:
    """The makespan of one album under one policy and one detection (model seconds).
    `late`, when given, gets per operation how long after its end each task was found
    done (polls only)."""
    st = State(shape, chains)
    seq = 0
    queue: list[tuple[float, int, Req]] = []  # (key, arrival, request)
    events: list[tuple[float, int, str, Req]] = []  # (time, seq, what, request)
    sent: deque[float] = deque()  # send times of the last `requests` requests
    left: dict[tuple[int, int], int] = {}  # a stage's tasks not yet known done
    submitted: dict[tuple[int, str], float] = {}
    end = 0.0

    def push(at: float, what: str, r: Req) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (at, seq, what, r))

    def wait(r: Req) -> None:
        nonlocal seq
        st.now = r.at
        seq += 1
        key = policy(st, r)
        if r.kind == "submit":
            st.submit_key[(r.song, r.op)] = key
        heapq.heappush(queue, (key, seq, r))
        st.waiting += 1

    def release(song: int, stage: int, t: float) -> None:
        if stage >= len(shape[song]):
            return
        ops = shape[song][stage]
        left[(song, stage)] = len(ops)
        for op in ops:
            wait(Req(song, stage, op, "submit", t))

    def done(r: Req, t: float) -> None:
        nonlocal end
        end = max(end, t)
        left[(r.song, r.stage)] -= 1
        if left[(r.song, r.stage)] == 0:
            stage_ops = shape[r.song][r.stage]
            st.revealed[r.song] = st.revealed.get(r.song, 0.0) + \
                max(chains[r.song][op] for op in stage_ops)
            release(r.song, r.stage + 1, t)

    for song in range(len(shape)):
        release(song, 0, 0.0)
    t = 0.0
    while queue or events:
        slot = max(t, sent[0] + per) if len(sent) >= requests else t
        if not queue:
            slot = max(slot, events[0][0])
        while events and events[0][0] <= slot:
            at, _, what, r = heapq.heappop(events)
            if what == "done":
                done(r, at)
            else:
                wait(Req(r.song, r.stage, r.op, "poll", at, r.n))
        if not queue:
            t = slot
            continue
        _, _, r = heapq.heappop(queue)
        st.waiting -= 1
        t = slot
        sent.append(t)
        if len(sent) > requests:
            sent.popleft()
        d = chains[r.song][r.op]
        if r.kind == "submit":
            st.start.setdefault(r.song, t)
            submitted[(r.song, r.op)] = t
            if detection == "callbacks":
                push(t + d, "done", r)
            elif detection == "ideal polls":
                push(t + d, "poll", r)
            else:
                push(t + MEDIAN[r.op], "poll", r)
        elif t >= submitted[(r.song, r.op)] + d:
            if late is not None:
                late.setdefault(r.op, []).append(t - submitted[(r.song, r.op)] - d)
            done(r, t)
        else:  # found running: poll again a tenth of the median later
            push(t + max(MIN_GAP, 0.1 * MEDIAN[r.op]), "poll", Req(r.song, r.stage, r.op,
                                                                     "poll", t, r.n + 1))
    return end


def bound(shape: list[list[list[str]]], chains: list[dict[str, float]], detection: str,
          requests: int = RATE_REQUESTS, per: float = RATE_SECONDS) -> float:
    critical = max(sum(max(c[op] for op in ops) for ops in song)
                   for song, c in zip(shape, chains, strict=True))
    tasks = sum(len(c) for c in chains)
    need = tasks if detection == "callbacks" else 2 * tasks
    return max(critical, math.floor((need - 1) / requests) * per)


def table(n: int, seeds: int) -> list[str]:
    shape = album(n)
    pols = policies(RATE_REQUESTS / RATE_SECONDS)
    albums = [draws(shape, seed) for seed in range(seeds)]
    out = [f"#### {n} songs ({seeds} seeds): makespan / bound, mean (max)", "",
           "| policy | " + " | ".join(DETECTIONS) + " |",
           "|---|" + "---|" * len(DETECTIONS)]
    for name, pol in pols.items():
        cells = []
        for det in DETECTIONS:
            r = [simulate(shape, c, pol, det) / bound(shape, c, det) for c in albums]
            cells.append(f"{statistics.mean(r):.3f} ({max(r):.3f})")
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--songs", default="10,100,1000")
    p.add_argument("--seeds", type=int, default=40, help="albums per size up to 100 songs")
    p.add_argument("--big-seeds", type=int, default=10, help="albums per size above 100")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    for n in (int(s) for s in args.songs.split(",")):
        print("\n".join(table(n, args.seeds if n <= 100 else args.big_seeds)), "\n", flush=True)
    print(f"({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
