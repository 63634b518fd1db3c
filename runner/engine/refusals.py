"""Rule 8, the service's refusals of requests that read unfinished tasks: an early
request refused (said, learned per host and operation, and sent again once its sources
finish) and a host whose record lags its own answers (a request that is not early, refused
as if a source it reads had not finished, sent again after growing waits). Every path here
resends only after a definite "no task" answer; each says why that cannot pay twice."""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio

from runner.engine import early
from runner.engine.poller import Polling
from runner.engine.records import StepRecord
from runner.engine.state import LAG_RESENDS, lag_waits
from runner.errors import ProviderError, StepError, Withheld
from runner.plan.model import Instance
from runner.providers import Op
from runner.terminal import plural


class Refusals(Polling):
    def _unfinished_reads(self, inst: Instance) -> list[str]:
        """The tasks `inst` reads that were released at their first stage and have not
        finished: non-empty means a request now would be early."""
        return [d for d in inst.early if d in self.first_released and d not in self.over]

    def _early_check(self, op_type: str) -> Callable[[], None]:
        """SEND_CHECK for an early request: withdraw it if the host was found to refuse
        `op_type` early while it waited for the rate limiter (rule 8)."""
        def check() -> None:
            if not self.speculation.allows(op_type):
                raise Withheld(f"{op_type} is refused early by {self.speculation.host}")
        return check

    async def _whole(self, inst: Instance, ids: list[str]) -> None:
        """Wait until every task in `ids` has finished, holding no place (the places are
        what they need to finish); fail the step if one of them did not succeed."""
        self.remote_slots.forgo()
        for d in ids:
            if d not in self.over:
                await self._over_events.setdefault(d, anyio.Event()).wait()
        for d in ids:
            status = self.records[d].status
            if status not in ("succeeded", "cached"):
                raise StepError(f"needs {d}, which {status}", step=inst.id)

    async def _refused_early(self, inst: Instance, op: Op, rec: StepRecord,
                             exc: ProviderError, how: str, waits: list[str]) -> None:
        """Rule 8: the service refused this early request and created no task (`_submit`
        has journaled it as not submitted). Say so; learn it when the answer says why."""
        self.counts.early_refused += 1
        said = str(exc).removeprefix(f"{inst.id}: ")
        why = "because a task it reads has not finished" if how == early.SAYS else \
            "perhaps because a task it reads has not finished"
        note = (f"{inst.id}: the service refused the early {op.type} request {why} "
                f"({said}); it created no task, so nothing was paid: waiting for "
                f"{', '.join(waits)} to finish, then submitting once more")
        rec.notes.append(note)
        self.ui.note(note)
        if how == early.SAYS:
            await self._learn(inst, op, said)

    def _sources(self, inst: Instance) -> list[str]:
        """The instances with a service task that `inst` reads (through a call's ends): what
        a refusal saying "not finished" can be about."""
        found: list[str] = []
        seen: set[str] = set()
        todo = list(inst.deps)
        while todo:
            d = todo.pop(0)
            dep = self.plan.instances.get(d)
            if d in seen or dep is None:
                continue
            seen.add(d)
            if dep.kind != "step":
                todo.extend(dep.deps)  # a call's end: what flows through it
            elif (rec := self.records.get(d)) is not None and rec.task_ids:
                found.append(d)
        return found

    def _not_submitted(self, key_: str) -> bool:
        """Does the journal's last word on `key_` say that nothing was submitted (`_submit`
        writes ``failed`` only when every attempt of its call was answered "no task")?"""
        st = self.store.states.get(key_)
        return st is not None and st.status == "failed"

    def _since_finished(self, sources: list[str]) -> float | None:
        """Engine seconds since the last of `sources` finished: in this run, since its
        result was in hand (its ``done`` journaled, its files stored: when a request
        reading it could first be sent, so this run's own downloads do not count against
        the host); from an earlier run, since that run saw it finished (its ``done``'s
        `times.finished`). None when no run recorded when (a lock seeded it, a restore,
        an older journal)."""
        seen = []
        for d in sources:
            if d in self.finished_at:
                seen.append(self.finished_at[d])
                continue
            rec = self.records.get(d)
            st = self.store.states.get(rec.key) if rec is not None and rec.key else None
            if st is not None and st.finished is not None:
                seen.append(self.clock.now() - max(0.0, time.time() - st.finished))
        return self.clock.now() - max(seen) if seen else None

    def _lag_recent(self, inst: Instance, rec: StepRecord, sources: list[str]) -> bool:
        """Rule 8: may a first refusal that does not say why (early.MAYBE) of a request
        that is not early be the host's record lagging? Only when it came within the
        run's waits for a lag (the sum of `lag_waits`: 44 s with the defaults) of when the
        last of `sources` finished (`_since_finished`). A lag longer than that is not
        waited out anyway, so a later refusal is read as about the request itself and
        fails the step at once, instead of costing the waits."""
        since = self._since_finished(sources)
        window = sum(lag_waits(self.recipe.provider.poll_interval))
        if since is not None and since <= window:
            return True
        what = ", ".join(sources)
        when = f"{secs(since)} after {what} finished" if since is not None else \
            f"and no run recorded when {what} finished"
        rec.notes.append(f"{inst.id}: a refusal that does not say why, {when}: not read as "
                         f"the host's record lagging (the run waits out {secs(window)} of "
                         "lag)")
        return False

    async def _lagging(self, inst: Instance, op: Op, rec: StepRecord, exc: ProviderError,
                       how: str, lagged: list[float], sources: list[str]) -> None:
        """Rule 8, a host whose record lags: a request that is not early was refused,
        though `sources` were seen finished (a poll's SUCCESS, a `complete` callback, or
        an earlier run), by an answer saying that a task it reads has not finished
        (early.SAYS), or by a bare 4xx soon after (early.MAYBE, `_lag_recent`). Wait and
        let the caller send it again, at most LAG_RESENDS times (waits in `lagged`); then
        fail the step. Nothing is learned: a lagging record is no refusal of early work."""
        self.counts.lag_refused += 1
        said = str(exc).removeprefix(f"{inst.id}: ")
        what = ", ".join(sources)
        says = how == early.SAYS
        if len(lagged) >= LAG_RESENDS:
            why, had, cause = (f"as if {what} had not finished", "had", "something else is "
                               "wrong") if says else \
                ("without saying why", "had finished", "it refuses the request itself")
            raise StepError(
                f"the service refused {op.type} {plural(len(lagged) + 1, 'time')} {why} "
                f"({said}), waiting {secs(sum(lagged))} in all after it said {what} {had}: "
                f"its record may lag for longer, or {cause}; no task was made, so nothing "
                "was paid; run again later (only what is not done is paid for)",
                step=inst.id) from None
        delay = lag_waits(self.recipe.provider.poll_interval)[len(lagged)]
        if not lagged:
            why = (f"as if {what} had not finished ({said}), though it said {what} had: its "
                   "record seems to lag") if says else \
                (f"without saying why ({said}), {secs(self._since_finished(sources) or 0)} "
                 f"after {what} finished: its record may lag")
            note = (f"{inst.id}: the service refused the {op.type} request {why}; the "
                    "refusal made no task, so nothing was paid; submitting again after "
                    f"growing waits (at most {LAG_RESENDS} times)")
            rec.notes.append(note)
            self.ui.note(note)
        # Why sending it again cannot pay twice (rule 4's proof): `early.refusal` reads
        # SAYS or MAYBE only from a definite answer, the service's own 4xx refusal (an
        # exact StepError with a 4xx code; a TransientError never gets here, nor does a
        # gateway 5xx, a timeout or a lost answer: those are PossiblySubmitted), and such
        # an answer made no task (DESIGN section 4), whether or not its words say why:
        # the words, and how recent the finish was (`_lag_recent`), decide only whether
        # waiting may help, never whether a task exists. (A 409 never gets here: it says a
        # record exists. On WAV, MP4 and cover art the host keeps one record per source
        # and answers a second request 409 naming it, which the provider polls instead of
        # paying: a second guard, not needed by this proof.) The caller checked that the
        # journal's last word on the key is `_submit`'s ``failed`` (not submitted): no
        # attempt of that call lost its answer, so no request of this run for the key may
        # have made a task (one an earlier run may have made stays rule 3's: counted, and
        # resubmitted only as that rule allows, before any of these). A kill during this
        # wait leaves that record, and the next run submits the step once without
        # counting it possibly submitted; the resend writes its own ``intent`` first, and
        # takes the ledger's claim again (rule 11), as any submit.
        if self.stop_reason:
            return  # the caller's next submit says "not submitted"; waiting would not help
        await self.clock.sleep(delay)
        lagged.append(delay)

    async def _learn(self, inst: Instance, op: Op, message: str) -> None:
        """Remember that this host refuses `op.type` early: in this run at once, and in
        the state directory for later runs (`auto` sends it early no more)."""
        sp = self.speculation
        if not sp.learn(op.type, inst.id, message):
            return
        where = sp.memory.path
        try:
            await anyio.to_thread.run_sync(sp.memory.save)
            kept = f"; remembered in {where}" if where is not None and sp.memory.writable \
                else ""
        except OSError as exc:
            kept = f"; could not remember it in {where} ({exc.strerror or exc})"
        tail = "are still sent early (release_on_first: true)" if sp.mode == early.ALWAYS \
            else "wait for whole tasks"
        self.ui.note(f"early release: {sp.host} refuses {op.type} on an unfinished task; "
                     f"this run's other {op.type} steps {tail}{kept}")


def secs(seconds: float) -> str:
    return f"{seconds:.3g} s"
