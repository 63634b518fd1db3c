"""The never-pay-twice path (runner.engine's rules 2-12): the intent before a submit, the
submit and its retries, the task id journaled the moment it is known, the task polled to
its end and its files stored, a finished result restored without paying, and the shared
cache's claims (the service's refusals of early work and a lagging record's: refusals.py)."""

from __future__ import annotations

import time
from contextlib import AsyncExitStack
from typing import Any

import anyio

from runner.engine import early
from runner.engine.records import StepRecord
from runner.engine.refusals import Refusals, secs
from runner.engine.state import (
    MAX_REFUND_RETRIES,
    MAX_SUBMIT_RETRIES,
    MAX_UNCERTAIN_RESUBMITS,
)
from runner.errors import (
    JournalError,
    PossiblySubmitted,
    ProviderError,
    StepError,
    TaskFailed,
    TransientError,
    Withheld,
)
from runner.pacing import AHEAD, PRIORITY, SEND_CHECK, SENT_AT, Backoff, Clock
from runner.plan.model import Instance
from runner.providers import Op, Provider, Result
from runner.store import aliases
from runner.store.lock import suffix
from runner.terminal import plural


class Remote(Refusals):
    async def _remote(self, inst: Instance, op: Op, rec: StepRecord, st: Any) -> Any:
        # The ledger claims this call takes are renewed while held and released with it.
        async with AsyncExitStack() as holds:
            return await self._remote_held(inst, op, rec, st, holds)

    async def _remote_held(self, inst: Instance, op: Op, rec: StepRecord, st: Any,
                           holds: AsyncExitStack) -> Any:
        task_id: str | None = None
        attempts = st.attempts if st is not None else 0
        uncertain = False  # rule 3: an earlier run may have made a task we know no id of
        if st is not None and st.status == "submitted":
            task_id = st.task_id  # rule 2: resume by polling; never resubmit
            self.task_started.setdefault(inst.id, self.clock.now())
            self.ui.event(inst.id, "resumed", f"task {task_id}")
            if st.first is not None and st.first_task == task_id and \
                    all(self.store.has_blob(f) for f in st.first_files):
                self._released_first(inst, st.first)  # rule 7: the recorded first track
        elif st is not None and st.status in ("intent", "uncertain"):
            # Rule 3: the previous run may have created a task whose id it never learned
            # (with a ledger, decided in `_claim`: another runner may have its result).
            uncertain = True
            if self.ledger is None:
                self._resubmit_uncertain(inst, "an earlier run")
        refunds = failures = 0
        refused: str | None = None  # rule 8: how this step's early request was refused
        sent_early = False  # rule 8: the task being polled was submitted early
        lagged: list[float] = []  # rule 8: the waits before resends the host's lag asked for
        result: Result | None = None
        claim: Any = None
        while result is None:
            if task_id is None and self.ledger is not None:
                kind, got = await self._claim(inst, op, rec, uncertain)
                uncertain = False
                if kind == "done":
                    return got
                if kind == "task":
                    task_id = got  # rule 11: another runner's task, polled by its id
                    self.adopted.add(op.key)
                    await self._durable("submitted", op.key, op.step, task_id=task_id)
                    self.ui.event(inst.id, "resumed", f"task {task_id} (another runner's)")
                else:
                    claim = got
                    await holds.enter_async_context(claim.held())
            if task_id is None:
                # Rule 8: the tasks this step reads that were released at their first stage
                # and have not finished. After a refusal, or for an operation this host
                # refuses early, the request waits for them rather than go early.
                unfinished = self._unfinished_reads(inst)
                if unfinished and (refused is not None or not self._speculates(inst)):
                    if refused is None:
                        rec.notes.append(f"{self.speculation.host} refuses {op.type} on an "
                                         "unfinished task: waited for "
                                         f"{', '.join(unfinished)} to finish")
                    await self._whole(inst, unfinished)
                    unfinished = []
                # The --concurrency slots bound work on this machine (submits, downloads),
                # not tasks running at the service: a task being polled holds no slot.
                # Stop and budget are checked inside the slot, so a task that waited for
                # one cannot submit past a stop decided meanwhile.
                PRIORITY.set(self.urgency.submit(inst.id))
                SEND_CHECK.set(self._early_check(op.type) if unfinished else None)
                on_wire = False  # the submit left: from here a task may exist (rule 11)
                try:
                    async with self.remote_slots:
                        if self.store.degraded and not self.stop_reason:
                            self.stop_reason = self.store.degraded
                        if self.stop_reason:
                            raise StepError(f"not submitted: {self.stop_reason}",
                                            step=inst.id)
                        self._check_budget(inst)
                        attempts += 1
                        rec.attempts = attempts
                        await self._durable("intent", op.key, op.step, attempt=attempts,
                                            run=self.run_id)
                        SENT_AT.set(None)
                        on_wire = True
                        sub = await self._submit(op, claim)  # frees the claim on "no task"
                        sent = _wall(self.clock, SENT_AT.get())
                        self.counts.submissions += 1
                        self.spent += self._price(inst)
                except Withheld:
                    continue  # never sent (rule 8): back to the top, where it waits
                except ProviderError as exc:
                    how = early.refusal(exc)
                    if unfinished:
                        # Rule 8: only the answer to an early request, and only once (the
                        # next request waits for the tasks it reads: it is not early).
                        if how is None or refused is not None:
                            raise
                        refused = how
                        await self._refused_early(inst, op, rec, exc, how, unfinished)
                        continue
                    # Not early: every task this request reads was seen finished. An
                    # answer that says one has not finished reads as the host's record
                    # lagging. So may a bare 4xx (MAYBE): a record that does not know
                    # the task yet may well answer "not found" or "invalid", and nothing
                    # documents which; but it names no cause, and long after the finish
                    # the likeliest one is the request itself (a bad id, an input the
                    # host rejects), so only a first refusal that came soon after the
                    # finish starts the waits (`_lag_recent`). A 409 says a record
                    # exists: a record that lags cannot make one up, and it would be
                    # answered again (early.EXISTS). A TransientError was retried by
                    # `_submit` (rule 4) already.
                    if how is None or isinstance(exc, TransientError) or \
                            (how == early.MAYBE and exc.code == early.EXISTS):
                        raise
                    sources = self._sources(inst)
                    if not sources or not self._not_submitted(op.key):
                        raise
                    if how == early.MAYBE and not lagged and \
                            not self._lag_recent(inst, rec, sources):
                        raise
                    await self._lagging(inst, op, rec, exc, how, lagged, sources)
                    continue
                finally:
                    SEND_CHECK.set(None)
                    if claim is not None and not on_wire:
                        # Stopped before the submit left (a stop, the budget, an
                        # interrupt): nothing was sent, so the claim is given back.
                        await self._free(claim, "stopped before submitting")
                if refused == early.MAYBE:
                    # The same request, refused while a task it reads ran, was taken once
                    # that task finished: the refusal was for being early.
                    await self._learn(inst, op, "refused while the task it reads ran, "
                                      "accepted once it finished")
                    refused = early.SAYS
                if lagged:
                    tries = plural(len(lagged), "more try", "more tries")
                    rec.notes.append(f"{inst.id}: taken after {tries}, {secs(sum(lagged))} "
                                     "after the first refusal (the host's record lagged); "
                                     "one task, paid once")
                    lagged.clear()  # a later submission (rule 5) starts afresh
                if sub.task_id is None:
                    assert sub.result is not None
                    result = sub.result
                    break
                task_id = sub.task_id
                sent_early = bool(unfinished)
                # `sent`: when the submit left the rate limiter (the wait before it is
                # the rate limit's), for `sunoflow review`'s timeline; optional.
                await self._journal_task(inst, op, task_id, sent)
                self.task_started[inst.id] = self.clock.now()
                if claim is not None:
                    await self._ledger_task(inst, claim, task_id)
                self.ui.event(inst.id, "submitted", f"task {task_id}")
            rec.task_ids.append(task_id)
            try:
                result = await self._poll(inst, op, task_id)
            except TaskFailed as exc:
                await self._durable("failed", op.key, op.step, error=str(exc), task_id=task_id)
                if self.ledger is not None:
                    await self._ledger_failed(op, task_id, str(exc))
                task_id = None
                if sent_early and refused is None and early.NOT_FINISHED.search(str(exc)):
                    # Another reading of rule 8: taken early, then failed for being early.
                    # Whether to pay again stays rule 5's; any new submission waits for
                    # the tasks this one reads, and the host is learned.
                    refused = early.SAYS
                    rec.notes.append(f"{inst.id}: the service failed the early task ({exc})")
                    await self._learn(inst, op, str(exc).removeprefix(f"{inst.id}: "))
                if exc.refunded and refunds < MAX_REFUND_RETRIES:
                    refunds += 1  # rule 5: refunded, so trying again costs nothing
                    self.ui.note(f"{inst.id}: the service failed the task and refunded it; "
                                 "submitting again")
                    continue
                if failures < inst.step.retry:
                    failures += 1  # rule 5: the recipe asked to pay for another try
                    self.ui.note(f"{_said(inst.id, exc)}; retry {failures} of {inst.step.retry} "
                                 "(a new paid submission)")
                    continue
                raise
        first = self._first_of(op.key, task_id)
        finished = round(time.time(), 3)
        # Fetching a finished task's files is brief local work that the next steps wait
        # for: it takes a place before any submit (which may hold one for the rate limit).
        async with self.remote_slots.take(AHEAD):
            outputs, files = await self._materialize(result, op, task_id, first)
        await self._durable("done", op.key, op.step, outputs=outputs, files=files,
                            task_ids=rec.task_ids, credits=result.credits,
                            times=self._times(op.step, finished))
        self.finished_at[inst.id] = self.clock.now()  # rule 8: how recent a finish is
        await self._share(op, outputs, files, rec.task_ids, result.credits)
        if claim is not None:
            claim.closed = True  # a result without a task id: the done record stands now
        return outputs

    async def _journal_task(self, inst: Instance, op: Op, task_id: str,
                            sent: float | None = None) -> None:
        """Record a paid task's id (rules 3 and 9). Should the journal refuse the line even
        after spending its reserve (store.Store.record), the id is not lost: it stays in this
        run's memory (the task is polled and its files fetched as usual, and the line is
        tried again when the run ends, `rejournal`), it is printed now so that a person can
        recover it, and nothing more is submitted."""
        try:
            await self._durable("submitted", op.key, op.step, task_id=task_id,
                                **({"sent": sent} if sent is not None else {}))
            if self.store.degraded and not self.stop_reason:
                self.stop_reason = self.store.degraded
                self.ui.always(f"{inst.id}: {self.store.degraded}: task {task_id} is "
                               "recorded, and nothing more is submitted in this run; free "
                               "some space, then run again (the task is polled, not paid)")
        except JournalError as exc:
            self.unjournaled[op.key] = (op.step, task_id)
            self.stop_reason = str(exc)
            self.ui.always(f"{inst.id}: task {task_id} was submitted and paid for, but its id "
                           f"could not be journaled ({exc}); keep this id: the run goes on "
                           "polling it and tries to record it again")

    def rejournal(self) -> list[tuple[str, str]]:
        """Try again to record the task ids the journal refused (`_journal_task`); return
        those still not recorded, as (step, task id). A task whose `done` was recorded
        since needs nothing more."""
        left = []
        for k, (step, task_id) in list(self.unjournaled.items()):
            st = self.store.states.get(k)
            if st is not None and (st.status == "done" or task_id in st.task_ids):
                del self.unjournaled[k]
                continue
            try:
                self.store.record("submitted", k, step, task_id=task_id)
                del self.unjournaled[k]
            except JournalError:
                left.append((step, task_id))
        return left

    def _resubmit_uncertain(self, inst: Instance, who: str) -> None:
        """Rule 3: a submission that may have made a task whose id nobody recorded."""
        self.counts.possibly_submitted += 1
        if not self.opts.resubmit_uncertain:
            raise StepError(f"possibly submitted by {who} (its task id was never recorded); "
                            "not resubmitting because of --no-resubmit-uncertain",
                            step=inst.id)
        self.ui.note(f"{inst.id}: possibly submitted by {who} without a recorded task id; "
                     "submitting again (the service has no way to look it up)")

    def _check_budget(self, inst: Instance) -> None:
        cap = self.opts.max_credits
        if cap is not None and self.spent + self._price(inst) > cap:
            self.stop_reason = f"--max-credits {cap:g} reached ({self.spent:g} spent)"
            raise StepError(f"not submitted: {self.stop_reason}", step=inst.id)

    async def _submit(self, op: Op, claim: Any = None) -> Any:
        backoff = Backoff(base=min(1.0, self.recipe.provider.poll_interval), cap=30.0)
        tries = uncertain = 0  # uncertain: submits of this call that may have made a task
        try:
            while True:
                self.inflight_submits += 1
                self.submits_idle = anyio.Event() if self.inflight_submits == 1 else \
                    self.submits_idle
                try:
                    return await self._submit_once(op)
                except PossiblySubmitted as exc:
                    uncertain += 1
                    await self._durable("uncertain", op.key, op.step, error=str(exc))
                    self.counts.possibly_submitted += 1
                    if not self.opts.resubmit_uncertain:
                        raise StepError(f"possibly submitted ({exc.reason}); not resubmitting "
                                        "because of --no-resubmit-uncertain",
                                        step=op.step) from None
                    if uncertain > MAX_UNCERTAIN_RESUBMITS:
                        # Every unanswered submit may have been a paid task: stop before a
                        # service that never answers costs us without bound.
                        raise StepError(f"{uncertain} submits got no answer ({exc.reason}); "
                                        "stopping so as not to pay again; check the service's "
                                        "dashboard, then run again", step=op.step) from None
                    self.ui.note(f"{_said(op.step, exc)}; the task may exist; submitting again")
                    await self._durable("intent", op.key, op.step,
                                        attempt=tries + uncertain + 1)
                except TransientError as exc:
                    if SEND_CHECK.get() is not None and early.refusal(exc) == early.SAYS:
                        # An early request refused with the service's own 5xx, saying
                        # why: retrying it now would only be refused again (rule 8).
                        raise
                    # Rule 4: the provider proved no task was created; retrying is free.
                    tries += 1
                    if tries > MAX_SUBMIT_RETRIES:
                        raise
                    delay = backoff.next(exc.retry_after)
                    self.ui.note(f"{_said(op.step, exc)}; retrying in {delay:.1f} s")
                    await self.clock.sleep(delay)
                finally:
                    self.inflight_submits -= 1
                    if self.inflight_submits == 0:
                        self.submits_idle.set()
        except ProviderError as exc:
            if not uncertain:
                # Every attempt was answered "no task" (a 4xx, a 401, no credits, a failed
                # upload before the submit, transient codes past the retries): say so, so
                # the next run does not count this step as possibly submitted (rule 3).
                await self._durable("failed", op.key, op.step, error=f"not submitted: {exc}")
                if claim is not None:
                    await self._free(claim, f"not submitted: {exc}")  # rule 11
            raise

    async def _submit_once(self, op: Op) -> Any:
        if self.callbacks is None:
            return await self.remote.submit(op)
        with self.callbacks.submitting():
            sub: Any = await self.remote.submit(op)
            if sub.task_id is not None:
                # Claimed while the submit still counts as on the wire, so a callback that
                # overtook this answer is waiting for it.
                self.callbacks.expect(sub.task_id)
            return sub

    async def _restore(self, inst: Instance, op: Op, prov: Provider, st: Any) -> Any:
        """A finished step's outputs, finding any stored file that has gone missing. The one
        restore path, whether files vanished from the store, the state directory was
        deleted (the lock then seeded the key: runner.store.lock.seed, rule 10) or --frozen
        builds from the lock. In order: each missing file by its content hash
        (`_recover_blob`: other places that may hold it, then its recorded URL); failing
        that, a local step is made again (free, deterministic: None), a remote one gets the
        provider's fresh links for the same task id. Never a new submission: each file must
        hash to what was recorded, or, obtained again as other bytes for the same task,
        stand for it (rule 12)."""
        missing = [f for f in st.files if not self.store.has_blob(f)]
        if missing and self.blobs is not None:
            missing = await self.blobs.pull(missing)  # the cache first: no service request
        if not missing:
            return st.outputs
        for f in missing:
            found = await self._recover_blob(inst, f)
            if found is None:
                break
            if not found:
                return None  # the recorded URL now serves other content
        else:
            await self._share(op, st.outputs, st.files, st.task_ids, st.credits)
            return st.outputs
        if prov.kind == "local":
            return None  # free and deterministic: make it again
        if not st.task_ids:
            return None
        task_id = st.task_ids[-1]
        try:
            fresh = await self._refresh(op, task_id)
        except ProviderError:
            return None
        if fresh is None:
            return None
        outputs, files = await self._materialize(fresh, op, task_id,
                                                 self._first_of(op.key, task_id))
        # Keep the recorded outputs (rule 12). Fresh links, or other bytes for the same
        # songs (the recovery's .m4a for a recorded .mp3), would change the inputs, hence
        # the keys, of every step that reads them, and those would be paid for again. The
        # same files keep their recorded entries (the lock is the same bytes after such a
        # restore; the fresh links expire as well, and a later restore asks again); a file
        # with other bytes takes the recorded one's place and stands for it.
        kept = aliases.swap(st.outputs, st.files, outputs, files)
        if kept is None:
            # Two new files for one recorded take: no alias can say which stands for it.
            # The new result is taken as it is (as before rule 12), so the steps that read
            # it get new keys: `--frozen` refuses them (exit 3), and a plain run pays for
            # those that are paid, each once, under rules 1-11 like any key it has not seen;
            # README's "not guaranteed" names this case.
            self.ui.note(f"{inst.id}: the service's files for task {task_id} differ from the "
                         "recorded ones and cannot be matched to them take by take; taking "
                         "them as they are: the steps that read them get new keys")
        else:
            outputs, files = kept.outputs, kept.files
            if kept.changed:
                self.ui.note(f"{inst.id}: the service gave task {task_id} back as other "
                             f"bytes ({_exts(files)}); they stand for the recorded files, so "
                             "the steps that read them keep their keys and are not paid for "
                             "again")
        await self._durable("done", op.key, op.step, outputs=outputs, files=files,
                            task_ids=list(st.task_ids), credits=st.credits)
        await self._share(op, outputs, files, st.task_ids, st.credits)
        return outputs

    async def _claim(self, inst: Instance, op: Op, rec: StepRecord,
                     uncertain: bool) -> tuple[str, Any]:
        """Decide through the ledger who pays for this key: ("done", outputs) when the
        cache has its result, ("task", id) when another runner submitted it, or ("claim",
        the claim) when this run holds it and submits. `uncertain`: this state directory's
        journal says an earlier run may have submitted it (rule 3). A step run again on
        purpose (--force, reroll) takes neither a cached result nor another's task: it
        claims the key afresh and pays, as asked."""
        from runner.store.cache import CacheError
        from runner.store.claims import adopt

        try:
            verdict = await self.ledger.acquire(
                op.key, op.step, takeover=self.opts.resubmit_uncertain,
                fresh=inst.path in self.forced)
        except CacheError as exc:
            # No claim can be checked: paying now could pay twice. Stop submitting.
            self.stop_reason = self.stop_reason or "the cache's ledger cannot be reached"
            raise StepError(f"not submitted: {exc}; without the ledger another runner's "
                            "claim cannot be checked", step=inst.id) from None
        if verdict.kind == "done":
            st = adopt(self.store, verdict.entry)
            outputs = await self._restore(inst, op, self.remote, st)
            if outputs is None:
                raise StepError("the cache records this step as done, but its files could "
                                "not be fetched; not paying again: use --force or "
                                "`sunoflow reroll` to do that on purpose", step=inst.id)
            rec.task_ids = list(st.task_ids)
            self.ui.event(inst.id, "cached", "from the cache")
            return ("done", outputs)
        if verdict.kind == "task":
            return ("task", verdict.task_id)
        if uncertain or verdict.uncertain:
            try:
                self._resubmit_uncertain(inst, "an earlier run" if uncertain else
                                         "another runner whose claim expired")
            except StepError:
                await self._free(verdict.claim, "possibly submitted; not resubmitting")
                raise
        return ("claim", verdict.claim)

    async def _ledger_task(self, inst: Instance, claim: Any, task_id: str) -> None:
        from runner.store.cache import CacheError

        try:
            await claim.task(task_id)
        except CacheError as exc:
            # Paid already: go on. The claim's lease keeps others waiting while it is
            # renewed; past it they count the key as possibly submitted.
            self.ui.note(f"{inst.id}: task {task_id} could not be recorded in the cache "
                         f"({exc})")

    async def _ledger_failed(self, op: Op, task_id: str, why: str) -> None:
        from runner.store.cache import CacheError

        try:
            await self.ledger.failed(op.key, task_id, why)
        except CacheError as exc:
            self.ui.note(f"{op.step}: {exc}")

    async def _free(self, claim: Any, why: str) -> None:
        """Give up a claim under which nothing was submitted (shielded: also on the way
        out of an interrupt), so the next runner need not wait for the lease."""
        from runner.store.cache import CacheError

        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            try:
                await claim.free(why)
            except CacheError:
                pass  # it expires with its lease

    async def _share(self, op: Op, outputs: Any, files: list[dict[str, Any]],
                     task_ids: list[str], credits: Any) -> None:
        """A finished key into the cache: its files (by content), then its record, so a
        reader of the record finds every file."""
        if self.blobs is not None:
            await self.blobs.push(files)
        if self.ledger is None or (self.blobs is not None and self.blobs.down):
            return  # (a cache found unreachable: said once, by the blobs)
        from runner.store.cache import CacheError
        from runner.store.claims import entry_of

        try:
            await self.ledger.finish(entry_of(op.key, op.step, outputs, files, task_ids,
                                              credits))
        except CacheError as exc:
            self.ui.note(f"{op.step}: the cache did not take its result ({exc})")


def _wall(clock: Clock, at: float | None) -> float | None:
    """A time of the engine's clock (`at`, monotonic) as epoch seconds."""
    if at is None:
        return None
    return round(time.time() - (clock.now() - at), 3)


def _exts(files: list[dict[str, Any]]) -> str:
    """`.mp3 -> .m4a`, for each file that stands for another (each pair once)."""
    seen = dict.fromkeys(f"{suffix(f['stands_for'])} -> {suffix(f['path'])}"
                         for f in files if f.get("stands_for"))
    return ", ".join(seen)




def _said(step: str, exc: ProviderError) -> str:
    """`exc` as a message about `step`, naming the step once (a provider's errors name it
    already)."""
    return str(exc) if exc.step else f"{step}: {exc}"
