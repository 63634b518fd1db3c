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
late (a task found done after a long wait looks slow). The limiters add the time a
request has waited, a second for a second at the defaults' pace (pacing.Urgency), so
nothing waits forever.
benchmarks/album_policy.py is how this policy was chosen over others (first come first
served, polls first, the age of the song, draws already seen, ...); docs/BENCHMARKS-album.md
has its table.

An instance whose `if:` is known to be false before the run (it needs no step's outputs,
like `index % 10 == 9`) is skipped with all that waits for it: it is on no path. Other
conditions are taken to hold.

expected(j) is 0 for local work and for the ends of a reusable recipe's call. For a
service operation it is in the defaults' seconds (the step types' `expected`,
runner.steps.types), corrected by what the Poller learned in this run about how the operations
compare: a learned median divided by `unit`, how much faster or slower than the defaults
the service is (learned / default of the first durations learned, the geometric mean
when several families are learned at once), so that learning changes the order of
priorities but never their unit. A second of waiting on the engine's clock is worth
1 / unit of these seconds. The unit is fixed once: priorities already waiting in a
limiter's line were computed with it, and a unit that moved (each newly learned family
moves a mean) would let every newcomer outrank them or them outrank every newcomer
(measured: a poll waiting eight minutes behind newcomers). Before anything is learned the
unit is 1: the defaults are the service's seconds.

The same figures place polls (`standing`). For a task in flight, its slack is the longest
way to the end through the tasks in flight less the way through its own, each way being
what its task has left (its expected duration less how long it has run, at least 0) plus
its tail; its rivals are the tasks whose way is about as long. The poller looks closer at
a task without slack, less closely the more rivals share its place, and less often at a
task with slack (runner.pacing.Poller).

The tails take one pass over the instances in reverse topological order, O(instances +
edges); they are computed when the first request asks and again only when a learned
median has moved by more than a tenth from the one they used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from runner.pacing import SPACING, Poller, Urgency
from runner.plan.model import Instance, Plan

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
        self.unit = 1.0  # engine clock seconds per second of the defaults, as learned
        self.unit_fixed = False
        self.known: set[str] = set()  # families the run has learned durations of
        self.version = -1  # the poller's version the figures were checked against

    def submit(self, iid: str) -> Urgency:
        """The urgency of a request that submits instance `iid`'s task (or uploads for it)."""
        self._update()
        return Urgency(self._submit(iid), 1.0 / self.unit)

    def poll(self, iid: str) -> Urgency:
        """The urgency of a request about `iid`'s task once submitted (polls, fresh links)."""
        self._update()
        fam = self.family.get(iid)
        if fam is not None and fam not in self.known:
            return Urgency(self._submit(iid) + self.longest, 1.0 / self.unit)  # a probe
        return Urgency(self.tails.get(iid, 0.0), 1.0 / self.unit)

    def remaining(self, unfinished: dict[str, float]) -> tuple[float, bool] | None:
        """About how many engine seconds the run has left: over `unfinished` (instance id
        -> seconds its service task has run, 0 when not started), the longest of what its
        own task has left plus the way after it. And whether that comes from durations the
        run measured. None when no service work is left to go by."""
        self._update()
        best: float | None = None
        for iid, ran in unfinished.items():
            fam = self.family.get(iid)
            if fam is None and iid not in self.tails:
                continue
            way = self._way(iid, ran)
            if fam is not None or way > 0:
                best = way if best is None else max(best, way)
        return None if best is None else (best, bool(self.known))

    def standing(self, iid: str, inflight: dict[str, float]) -> tuple[float, int] | None:
        """Where instance `iid`'s task stands on the run's longest way, as (slack, rivals).
        Slack: how many engine seconds it could be found done late without moving the
        run's expected end, the longest way to the end through the tasks in flight
        (`inflight`: instance id -> when its task was submitted, engine clock) less the way
        through its own. A task past its expected duration counts as about done, so the
        longest-running tasks of the longest way have none. Rivals: how many tasks in
        flight (itself included) have a way at least as long as its own less a poll's
        spacing (runner.pacing.SPACING of its expected duration); of k rivals the run
        waits for the last one done, so each is that one about once in k. None while its
        family is not learned (its polls take turns: runner.pacing.Poller)."""
        self._update()
        fam = self.family.get(iid)
        if fam is None or fam not in self.known or iid not in inflight:
            return None
        now = self.poller.clock.now()
        ways = [self._way(j, now - t0) for j, t0 in inflight.items()]
        mine = self._way(iid, now - inflight[iid])
        near = SPACING * self.used.get(fam, 0.0) * self.unit
        return max(ways) - mine, sum(1 for w in ways if w >= mine - near)

    def _way(self, iid: str, ran: float) -> float:
        """Engine seconds from now to the end through `iid`, whose task has run `ran`: what
        its own task has left (at least 0) plus its tail."""
        fam = self.family.get(iid)
        own = max(0.0, self.used.get(fam, 0.0) * self.unit - ran) if fam else 0.0
        return own + self.tails.get(iid, 0.0) * self.unit

    def _submit(self, iid: str) -> float:
        fam = self.family.get(iid)
        return (self.used[fam] if fam else 0.0) + self.tails.get(iid, 0.0) + self.longest

    def expected(self) -> dict[str, float]:
        """Expected seconds per pace family, in the defaults' unit (see the top)."""
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
        if logs and not self.unit_fixed:
            self.unit = math.exp(sum(logs) / len(logs))  # geometric mean
            self.unit_fixed = True
        return {fam: v / self.unit if v is not None else self.defaults[fam][1]
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
