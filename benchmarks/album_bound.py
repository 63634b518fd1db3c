"""Bounds on the album's makespan that count the rate limit on every request a client
must send, not only in total: a valid lower bound and a clairvoyant schedule.

DESIGN's lower bound is max(critical path, rate limit): the critical path assumes every
song starts at 0, the rate limit only counts requests. A rate-limited client cannot start
100 songs at 0: 100 lyrics and then 100 generate submits at 2 per second take ~100 s of
the rate budget. Two figures bracket the best any client can do with the draws of a run:

- `rate_aware_bound` (a lower bound). Each request j a client must send (a submit; with
  polling also the poll that finds the task done) cannot leave before `head_j`, its
  earliest time had every earlier step of its song left at its own earliest, and must leave
  by `C - tail_j`, where `tail_j` is the least time from it to the end of its song. Drop
  every other coupling between requests and keep only the window: 20 requests in any 10 s.
  Unit jobs with release times and deadlines under that window are all met, if at all,
  by sending each request as early as the window allows, the one with the earliest
  deadline first (exchange argument; sending earlier never takes capacity from later
  sends). The deadlines are C minus the tails, so that order is the longest tail first
  whatever C is, and the least feasible C is max_j(send_j + tail_j) of that one schedule.
  Every real schedule meets the relaxed constraints, so no client can beat this.
- `clairvoyant` (an achievable makespan). The same requests with the real precedence: a
  step is submitted when its input is ready (with callbacks: the music task's `first`
  stage, for the steps that read only tracks[0]), a poll (with polling) exactly when its
  task is ready, the request with the longest real remaining chain first. No network time,
  downloads free. album_oracle.py is this schedule for polling; this one also does
  callbacks.

All times in model seconds; `chains` is album_common.Analysis.chains (latency per
operation, per song).
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass

from album_common import LATENCY, RATE_REQUESTS, RATE_SECONDS

MUSIC = ("generate", "extend")
# op -> the op it reads (its parent in the song's chain)
PARENT = {"generate": "lyrics", "extend": "generate", "wav": "extend", "mp4": "extend",
          "separate_vocal": "extend"}


Key = tuple[int, str]  # (song, op)


@dataclass(frozen=True)
class Task:
    song: int
    op: str
    latency: float
    parent: str | None
    children: tuple[str, ...]


def tasks_of(chains: dict[int, dict[str, float]]) -> dict[Key, Task]:
    out: dict[Key, Task] = {}
    for song, chain in chains.items():
        for op, lat in chain.items():
            kids = tuple(k for k, p in PARENT.items() if p == op and k in chain)
            out[(song, op)] = Task(song, op, lat, PARENT.get(op) if op != "lyrics" else None,
                                   kids)
    return out


def _release(t: Task, first_at: float | None) -> float:
    """Time from a task's submit to when its children may be submitted (no poll)."""
    return (first_at if first_at is not None and t.op in MUSIC else 1.0) * t.latency


def tails(tasks: dict[Key, Task], first_at: float | None) -> dict[Key, float]:
    """Least time from each task's submit to the end of its song (model s)."""
    memo: dict[Key, float] = {}

    def tail(key: Key) -> float:
        if key not in memo:
            t = tasks[key]
            rel = _release(t, first_at)
            memo[key] = max([t.latency, *(rel + tail((t.song, k)) for k in t.children)])
        return memo[key]

    for key in tasks:
        tail(key)
    return memo


def heads(tasks: dict[Key, Task], first_at: float | None) -> dict[Key, float]:
    """Earliest submit of each task had every song started at 0 (model s)."""
    memo: dict[Key, float] = {}

    def head(key: Key) -> float:
        if key not in memo:
            t = tasks[key]
            memo[key] = 0.0 if t.parent is None else \
                head((t.song, t.parent)) + _release(tasks[(t.song, t.parent)], first_at)
        return memo[key]

    for key in tasks:
        head(key)
    return memo


def _window_sends(jobs: list[tuple[float, float]], requests: int, per: float) -> float:
    """jobs: (release, tail). Send each as early as the window allows, longest tail first
    among those released; return max(send + tail)."""
    jobs = sorted(jobs)
    sent: deque[float] = deque()
    ready: list[float] = []  # -tail
    i, t, worst = 0, 0.0, 0.0
    while i < len(jobs) or ready:
        slot = max(t, sent[0] + per) if len(sent) >= requests else t
        if not ready:
            slot = max(slot, jobs[i][0])
        while i < len(jobs) and jobs[i][0] <= slot:
            heapq.heappush(ready, -jobs[i][1])
            i += 1
        tail = -heapq.heappop(ready)
        t = slot
        sent.append(t)
        if len(sent) > requests:
            sent.popleft()
        worst = max(worst, t + tail)
    return worst


def rate_aware_bound(chains: dict[int, dict[str, float]], first_at: float | None = None,
                     polls: bool = False, requests: int = RATE_REQUESTS,
                     per: float = RATE_SECONDS) -> float:
    """The lower bound of the module docstring. `polls`: each task also needs the poll
    that finds it done (a client without callbacks), which its children wait for."""
    tasks = tasks_of(chains)
    fa = None if polls else first_at
    hd, tl = heads(tasks, fa), tails(tasks, fa)
    jobs = [(hd[k], tl[k]) for k in tasks]
    if polls:
        jobs += [(hd[k] + t.latency, tl[k] - t.latency) for k, t in tasks.items()]
    return _window_sends(jobs, requests, per)


def clairvoyant(chains: dict[int, dict[str, float]], first_at: float | None = None,
                polls: bool = False, requests: int = RATE_REQUESTS,
                per: float = RATE_SECONDS) -> float:
    """The achievable schedule of the module docstring; its makespan (model s)."""
    return schedule(chains, first_at, polls, None, requests, per)


def expected_first(chains: dict[int, dict[str, float]], first_at: float | None = None,
                   polls: bool = False, requests: int = RATE_REQUESTS,
                   per: float = RATE_SECONDS) -> float:
    """The same schedule without foresight: the longest *expected* remaining chain first
    (every latency at its median, album_common.LATENCY), which is sunoflow's order
    (runner.engine.priority), executed perfectly: no network or local time, and with polls each
    poll exactly when its task is ready. The gap from `clairvoyant` is the price of not
    knowing the draws; the gap from here to a real run is the client's execution."""
    medians = {s: {op: float(LATENCY[op]["median"]) for op in c} for s, c in chains.items()}
    return schedule(chains, first_at, polls, medians, requests, per)


def schedule(chains: dict[int, dict[str, float]], first_at: float | None, polls: bool,
             believed: dict[int, dict[str, float]] | None, requests: int = RATE_REQUESTS,
             per: float = RATE_SECONDS) -> float:
    """List schedule of the album's requests through the window, the request with the
    longest remaining chain first, where the chain's latencies are `believed` (None: the
    real ones). Its makespan (model s)."""
    tasks = tasks_of(chains)
    fa = None if polls else first_at
    tl = tails(tasks_of(believed) if believed is not None else tasks, fa)
    seq = 0
    future: list[tuple[float, int, float, tuple[int, str], str]] = []  # (at, seq, -prio, ..)
    due: list[tuple[float, float, int, tuple[int, str], str]] = []

    def add(at: float, prio: float, key: tuple[int, str], kind: str) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(future, (at, seq, -prio, key, kind))

    for k, t in tasks.items():
        if t.parent is None:
            add(0.0, tl[k], k, "submit")
    sent: deque[float] = deque()
    t = end = 0.0
    while future or due:
        slot = max(t, sent[0] + per) if len(sent) >= requests else t
        if not due:
            slot = max(slot, future[0][0])
        while future and future[0][0] <= slot:
            at, s, negp, key, kind = heapq.heappop(future)
            heapq.heappush(due, (negp, at, s, key, kind))
        negp, at, s, key, kind = heapq.heappop(due)
        t = slot
        sent.append(t)
        if len(sent) > requests:
            sent.popleft()
        task = tasks[key]
        kids = [(task.song, c) for c in task.children]
        if kind == "submit":
            end = max(end, t + task.latency)
            if polls:
                add(t + task.latency, tl[key] - task.latency, key, "poll")
            else:
                for c in kids:
                    add(t + _release(task, fa), tl[c], c, "submit")
        else:
            for c in kids:
                add(t, tl[c], c, "submit")
    return end
