"""What a clairvoyant client could do with the same draws: an achievable makespan.

The lower bound max(critical path, rate limit) is not reachable when both are close: the
first requests of every song compete for the same window at the start. This simulates a
client that knows every task's latency in advance: it polls each task exactly once, the
moment it is ready, sends at most R requests per sliding window of P seconds, and when
several requests are due it sends the one with the longest remaining chain first. No
network time, downloads free. The result is an upper bound on the best possible makespan,
so `sunoflow / oracle` says how much a better client could still gain, and
`oracle / lower bound` how far the bound itself is from reachable.
"""

from __future__ import annotations

import heapq
from collections import deque

# A song's stages, in order; the last stage's tasks run side by side.
STAGES: list[list[str]] = [["lyrics"], ["generate"], ["extend"], ["wav", "mp4", "separate_vocal"]]


def _rest(chain: dict[str, float], stage: int) -> float:
    """Model seconds of the chain after `stage` (the longest task of each later stage)."""
    return sum(max(chain.get(op, 0.0) for op in ops) for ops in STAGES[stage + 1 :])


def oracle(chains: dict[int, dict[str, float]], requests: int, per: float) -> float:
    """The makespan (same unit as the latencies) of the clairvoyant schedule."""
    sent: deque[float] = deque()
    # (available at, -priority, song, stage, op, kind) for requests not yet due
    future: list[tuple[float, float, int, int, str, str]] = []
    due: list[tuple[float, float, int, int, str, str]] = []  # (-priority, at, ...)
    left: dict[tuple[int, int], int] = {}  # tasks of a stage not yet finished

    def release(song: int, stage: int, t: float) -> None:
        if stage >= len(STAGES):
            return
        chain = chains[song]
        ops = [op for op in STAGES[stage] if op in chain]
        left[(song, stage)] = len(ops)
        for op in ops:
            prio = chain[op] + _rest(chain, stage)
            heapq.heappush(future, (t, -prio, song, stage, op, "submit"))

    for song in chains:
        release(song, 0, 0.0)
    t = end = 0.0
    while future or due:
        # The next slot the window allows.
        slot = max(t, sent[0] + per) if len(sent) >= requests else t
        while future and future[0][0] <= slot:
            at, negp, song, stage, op, kind = heapq.heappop(future)
            heapq.heappush(due, (negp, at, song, stage, op, kind))
        if not due:
            t = max(slot, future[0][0])
            continue
        negp, at, song, stage, op, kind = heapq.heappop(due)
        t = slot
        sent.append(t)
        if len(sent) > requests:
            sent.popleft()
        chain = chains[song]
        if kind == "submit":
            heapq.heappush(future, (t + chain[op], -_rest(chain, stage), song, stage, op, "poll"))
        else:
            end = max(end, t)
            left[(song, stage)] -= 1
            if left[(song, stage)] == 0:
                release(song, stage + 1, t)
    return end
