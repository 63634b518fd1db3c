"""Critical path first: how urgent each instance's requests to the service are.

When several requests wait for the provider's rate limit (runner.pacing.RateLimiter), the
one whose instance heads the longest expected way to the end of the run goes first:
delaying it delays the end, while a request with slack can wait at no cost. For an
instance i of the plan:

    tail(i)   = max over the instances j that wait for i of expected(j) + tail(j), else 0
    submit(i) = expected(i) + tail(i) + longest
    poll(i)   = tail(i)   (once a poll finds the task done, that is what is left)
              or, while the run has learned nothing about i's operation, submit(i) + longest

`longest` is the longest expected task of the plan: a submit goes before the polls of
chains up to one task longer than its own, because the task it starts runs while the poll
waits, and a poll sent later is more likely to find its task done. A probe (a poll of an
operation nothing is known about yet: runner.pacing.Poller) goes before the submits,
since every task of its kind waits for what it learns, and learns wrong when it is sent
late (a task found done after a long wait looks slow). The limiter adds the time
a request has waited (pacing.AGING), so nothing waits forever.
benchmarks/album_policy.py is how this policy was chosen over others (first come first
served, polls first, the age of the song, draws already seen, ...); docs/BENCHMARKS-album.md
has its table.

An instance whose `if:` is known to be false before the run (it needs no step's outputs,
like `index % 10 == 9`) is skipped with all that waits for it: it is on no path. Other
conditions are taken to hold.

expected(j) is 0 for local work and for the ends of a reusable recipe's call. For a
service operation it is the median duration the Poller learned for its pace family in
this run, else the step type's `expected` (runner.steps) scaled by how the families
learned so far compare with theirs: a service (or a benchmark's scaled fake) twice as fast
as the defaults on one operation is taken to be twice as fast on the others too.

The tails take one pass over the instances in reverse topological order, O(instances +
edges); they are computed when the first request asks and again only when a learned
median has moved by more than a tenth from the one they used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from runner.pacing import Poller
from runner.plan import Instance, Plan

MOVED = 0.1  # recompute the tails when an expected duration moved by more than this share


class CriticalPath:
    def __init__(self, plan: Plan, instances: Sequence[Instance], provider: str,
                 poller: Poller) -> None:
        """`instances`: those that run, in a topological order (dependencies first), as
        the plan has them; `provider`: the provider kind, which decides what runs at the
        service."""
        self.plan, self.instances, self.provider, self.poller = plan, instances, provider, \
            poller
        self.family: dict[str, str] = {}  # instance id -> pace family, service work only
        self.dead: set[str] = set()  # instances known to be skipped (a static `if:`)
        self.defaults: dict[str, tuple[str, float]] = {}  # family -> (a step type, seconds)
        self.used: dict[str, float] = {}  # family -> expected seconds the tails were made with
        self.tails: dict[str, float] = {}
        self.longest = 0.0
        self.known: set[str] = set()  # families the run has learned durations of
        self.version = -1  # the poller's version the figures were checked against

    def submit(self, iid: str) -> float:
        """The priority of a request that submits instance `iid`'s task (or uploads for it)."""
        self._update()
        fam = self.family.get(iid)
        return (self.used[fam] if fam else 0.0) + self.tails.get(iid, 0.0) + self.longest

    def poll(self, iid: str) -> float:
        """The priority of a request about `iid`'s task once submitted (polls, fresh links)."""
        self._update()
        fam = self.family.get(iid)
        if fam is not None and fam not in self.known:
            return self.submit(iid) + self.longest  # a probe
        return self.tails.get(iid, 0.0)

    def expected(self) -> dict[str, float]:
        """Expected seconds per pace family: learned, else the default scaled."""
        if not self.defaults:
            for inst in self.instances:
                # A false `if:` that needs no step's outputs skips the instance and all
                # that waits for it: they are on no path. (One render per such instance.)
                if self.plan.static_condition(inst) is False or \
                        any(d in self.dead for d in inst.deps):
                    self.dead.add(inst.id)
                    continue
                t = inst.step.type if inst.kind == "step" else None
                if t is None or t.support.get(self.provider) != "remote":
                    continue
                fam = self.poller.family(t.name)
                self.family[inst.id] = fam
                if fam not in self.defaults or self.defaults[fam][1] < t.expected:
                    self.defaults[fam] = (t.name, t.expected)
        learned = {fam: self.poller.estimate(op) for fam, (op, _) in self.defaults.items()}
        logs = [math.log(v / self.defaults[fam][1]) for fam, v in learned.items()
                if v is not None and v > 0 and self.defaults[fam][1] > 0]
        scale = math.exp(sum(logs) / len(logs)) if logs else 1.0  # geometric mean
        return {fam: v if v is not None else self.defaults[fam][1] * scale
                for fam, v in learned.items()}

    def _update(self) -> None:
        if self.version == self.poller.version:
            return
        self.version = self.poller.version
        now = self.expected()
        self.known = {fam for fam, (op, _) in self.defaults.items()
                      if self.poller.estimate(op) is not None}
        if self.used and all(abs(v - self.used[f]) <= MOVED * self.used[f]
                             for f, v in now.items()):
            return
        self.used = now
        self.longest = max(now.values(), default=0.0)
        tails = dict.fromkeys((i.id for i in self.instances), 0.0)
        for inst in reversed(self.instances):
            if inst.id in self.dead:
                continue
            fam = self.family.get(inst.id)
            way = (now[fam] if fam else 0.0) + tails[inst.id]
            for d in inst.deps:
                if tails.get(d, way) < way:
                    tails[d] = way
        self.tails = tails
