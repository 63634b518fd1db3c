"""The Engine: one task group runs the selected instances, each as soon as every instance it
reads has finished (a ready queue drained synchronously, so a cached or skipped instance
costs no task), and one instance's lifecycle: render its inputs, key it, take a stored
result (rule 1), or do the work (local here, remote through runner.engine.remote)."""

from __future__ import annotations

import os
import signal
import time
from collections import deque
from typing import Any

import anyio

from runner import paths
from runner.engine import deadlines
from runner.engine.records import StepRecord, Work
from runner.engine.remote import Remote
from runner.engine.state import SUBMIT_GRACE
from runner.errors import (
    AuthError,
    CreditsError,
    JournalError,
    ProviderError,
    StepError,
    WrongAddress,
)
from runner.pacing import ANY, Slots, Urgency
from runner.plan.model import Instance
from runner.plan.scopes import Unrendered
from runner.providers import Op, offload
from runner.recipe import blame
from runner.recipe.template import TemplateError
from runner.steps import models
from runner.store import aliases
from runner.store.journal import KeyState


class Engine(Remote):
    async def run(self) -> str:
        """Run every selected instance; return succeeded | failed | interrupted.

        Scheduling is a ready queue drained synchronously: an instance that is cached or
        skipped finishes inline, so resuming a finished run spawns no task at all; only
        real work (ffmpeg, a service call) becomes a task in the group.
        """
        remaining: dict[str, int] = {}
        dependents: dict[str, list[str]] = {}
        early_of = self.early_of
        ids = {i.id for i in self.selected}
        for inst in self.selected:
            deps = [d for d in inst.deps if d in ids]
            remaining[inst.id] = len(deps)
            # A step of an operation this host refuses early waits for whole tasks.
            reads_first = inst.early if inst.early and self._speculates(inst) else ()
            for d in deps:
                (early_of if d in reads_first else dependents).setdefault(
                    d, []).append(inst.id)
            self.records[inst.id] = StepRecord(inst.id)
        ready = deque(i.id for i in self.selected if remaining[i.id] == 0)
        left = len(self.selected)
        try:
            async with anyio.create_task_group() as tg:
                if self.opts.handle_signals:
                    tg.start_soon(self._signals, tg.cancel_scope)
                tg.start_soon(self.previews.keep)  # ends with the group, like the above

                def release(iid: str) -> None:
                    nonlocal left
                    self._ended(iid)
                    status = self.records[iid].status
                    users = dependents.get(iid, ())
                    if iid not in self.first_released and iid in early_of:
                        users = [*users, *early_of[iid]]
                    for dep in users:
                        remaining[dep] -= 1
                        if status in ("failed", "skipped"):
                            self._skip(dep, f"needs {iid}, which {status}")
                        if remaining[dep] == 0:
                            ready.append(dep)
                    left -= 1
                    if left == 0:
                        tg.cancel_scope.cancel()  # ends the signal watcher too

                def drain() -> None:
                    while ready:
                        iid = ready.popleft()
                        inst = self.plan.instances[iid]
                        work = self._prepare(inst) if self.records[iid].status == "pending" \
                            else None
                        if work is not None:
                            self.queued[iid] = round(time.time(), 3)
                        if work is None:
                            release(iid)
                        elif (slots := self._first_slots(work)) is not None:
                            # Queued, not parked: a task per waiting instance is ~5 KB.
                            slots.start(tg, execute, inst, work, urgency=self._urgency(inst,
                                                                                       slots))
                        else:
                            tg.start_soon(execute, inst, work)

                async def execute(inst: Instance, work: Work) -> None:
                    await self._run_work(inst, work)
                    release(inst.id)
                    drain()

                def release_early(iid: str) -> None:
                    """`iid`'s first track is recorded: start what needs only that."""
                    if iid in self.first_released:
                        return
                    self.first_released.add(iid)
                    for dep in early_of.get(iid, ()):
                        if not self._speculates(self.plan.instances[dep]):
                            # Refused since the run began (rule 8): it waits for the whole
                            # task, as `release` then counts it among the dependents.
                            dependents.setdefault(iid, []).append(dep)
                            continue
                        remaining[dep] -= 1
                        if remaining[dep] == 0:
                            ready.append(dep)
                    drain()

                self._release_early = release_early

                drain()
                if left == 0:
                    tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                self.store.sync()
                # Every poll has ended: the previews file loses what is left (sync, as the
                # journal's above: one small write or unlink, once per run).
                self.previews.close()
                for step, task_id in self.rejournal():
                    self.ui.always(f"{step}: task {task_id} is paid for but NOT in the "
                                   "journal; before running again, check it on the service "
                                   "(the next run cannot know it and would submit again)")
                if self.owns_files:
                    await self.files_client.aclose()
        if self.interrupted:
            return "interrupted"
        if any(r.status == "failed" for r in self.records.values()) or self.stop_reason:
            return "failed"
        return "succeeded"

    def _skip(self, iid: str, why: str) -> None:
        rec = self.records[iid]
        if rec.status == "pending":
            rec.status, rec.error = "skipped", why
            self.ui.event(iid, "skipped", why)

    async def _signals(self, scope: anyio.CancelScope) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _sig in signals:
                if self.interrupted:
                    # A second Ctrl-C: leave at once (the journal is synced), but not
                    # leaving a local ffmpeg running: its own session keeps the terminal's
                    # signal from it, and os._exit runs no exit handler.
                    offload.abandon()
                    os._exit(130)
                self.interrupted = True
                self.stop_reason = "interrupted"
                self.ui.note("interrupted: stopping; in-flight tasks resume on the next run")
                # Give a submit already on the wire a moment to return its task id, so the
                # next run polls it instead of counting it as possibly submitted.
                with anyio.move_on_after(SUBMIT_GRACE):
                    await self.submits_idle.wait()
                self.store.sync()
                scope.cancel()
                return

    def _prepare(self, inst: Instance) -> Work | None:
        """The synchronous half of an instance: render, key, cache lookup. Returns None when
        the instance is finished already (cached, skipped, failed before any work), or the
        work to do."""
        rec = self.records[inst.id]
        try:
            if inst.kind != "step":
                self._call_end(inst, rec)
                return None
            return self._lookup(inst, rec)
        except ProviderError as exc:
            self._fail(rec, exc)
            return None

    def _first_slots(self, work: Work) -> Slots | None:
        """The slots this work takes first, so that it waits for them in their queue rather
        than as a parked task (pacing.Slots.start); None when it may wait on something else
        first (an equal key in flight, a task to poll, a stored result to restore). Only
        when a task starts depends on this, never what it does."""
        st = work.state
        if work.key in self.claims or (st is not None and not work.forced and
                                       st.status in ("done", "submitted")):
            return None
        return self.cpu_slots if work.provider.kind == "local" else self.remote_slots

    def _urgency(self, inst: Instance, slots: Slots) -> Urgency:
        """The urgency this instance asks its first place with: a submit's (the one
        `_remote` sets before it asks); local work first come first served."""
        return self.urgency.submit(inst.id) if slots is self.remote_slots else ANY

    async def _run_work(self, inst: Instance, work: Work) -> None:
        rec = self.records[inst.id]
        t_start = time.monotonic()
        try:
            outputs = await self._claimed(inst, rec, work)
            if outputs is None:
                return
            self._publish(inst, outputs)
            rec.outputs = outputs
        except WrongAddress as exc:
            if self.wrong_address:
                # Another step met the same refused address at the same moment: one
                # failure says it; this one simply did not run (nothing was created).
                self._skip(inst.id, "not run: the service's address is wrong (see above)")
            else:
                self.wrong_address = True
                self.stop_reason = str(exc)
                self._fail(rec, exc)
        except (AuthError, CreditsError) as exc:
            # Rule 6: no new submission from now on (`_remote_held` checks stop_reason in
            # its slot); what is paid for already keeps being polled and downloaded.
            self.stop_reason = str(exc)
            self._fail(rec, exc)
        except JournalError as exc:
            # The journal is what proves what was paid: without it nothing more is
            # submitted (rules 3 and 9); what is paid already is still polled.
            self.stop_reason = str(exc)
            self._fail(rec, StepError(str(exc), step=inst.id))
        except ProviderError as exc:
            self._fail(rec, exc)
        finally:
            rec.seconds = round(time.monotonic() - t_start, 3)

    async def _claimed(self, inst: Instance, rec: StepRecord, work: Work) -> Any:
        """Rule 1 within one run: two instances whose inputs render the same (the same step
        of two calls of one reusable recipe, say) are the same work. The first does it; the
        others wait for it and take its stored result, so equal keys are never in flight
        twice. A waiter only reads the store: it can never submit."""
        k = work.key
        first = self.claims.get(k)
        if first is None:
            self.claims[k] = done = anyio.Event()
            try:
                return await self._work(inst, rec, work)
            finally:
                done.set()
                # Later arrivals need only "it is over": one shared, set event stands for
                # every settled key (an event per instance was most of the claims' memory).
                if self.settled is None:
                    self.settled = done
                self.claims[k] = self.settled
        # Queued as work that starts with a place (`_first_slots`), it was handed one; the
        # instance it waits for may need a place to finish, so give it back first.
        self.remote_slots.forgo()
        self.cpu_slots.forgo()
        await first.wait()
        st = self.store.states.get(k)
        if st is not None and st.status == "done" and \
                all(self.store.has_blob(f) for f in st.files):
            self._cached(inst, rec, st, st.outputs)
            return None
        raise StepError("another step with the same inputs did this work, and it did not "
                        "finish", step=inst.id)

    def _fail(self, rec: StepRecord, exc: Exception) -> None:
        rec.status = "failed"
        rec.error = str(exc) if not isinstance(exc, ProviderError) or exc.step else \
            f"{rec.id}: {exc}"
        self.ui.event(rec.id, "failed", rec.error)
        if not self.opts.keep_going and not self.stop_reason:
            self.stop_reason = f"{rec.id} failed"

    def _call_end(self, inst: Instance, rec: StepRecord) -> None:
        """Enter or leave a call of a reusable recipe: no work, nothing paid."""
        try:
            if inst.kind == "enter":
                if not self.scopes.enter(inst, self._context_item(inst)):
                    rec.status, rec.error = "skipped", "if: condition is false"
                    return  # its steps say they are skipped, each in its turn
            else:
                rec.outputs = self.results[inst.id] = self.scopes.leave(inst)
        except TemplateError as exc:
            raise StepError(f"cannot render: {exc}", step=inst.call) from None
        rec.status = "succeeded"

    def _context_item(self, inst: Instance) -> Any:
        if inst.item_from is not None and inst.index is not None:
            return self.results.get(f"{inst.item_from}[{inst.index}]")
        return None

    def _lookup(self, inst: Instance, rec: StepRecord) -> Work | None:
        step = inst.step
        try:
            # Through the store's aliases (rule 12): a file obtained again as other bytes
            # keys as the recorded file it stands for.
            ident = self.scopes.identify(inst, self._context_item(inst), self.roots,
                                         self.file_hashes, check=lambda route, inputs:
                                         self._check_rendered(inst, route, inputs),
                                         aliases=self.store.aliases)
        except Unrendered as exc:
            # Said as the validator says it: the template's position in its own file (a
            # reusable recipe's, inside a call) and the closest name that exists.
            scope = self.plan.scopes.get(inst.scope)
            where = exc.where
            diag = blame.diagnose(scope.recipe if scope else self.recipe, where,
                                  step.if_ if where[-1] == "if" else step.with_.get(where[-1]),
                                  exc.ctx, exc.exc)
            raise StepError(f"cannot render inputs: {diag}", step=inst.id) from None
        if ident is None:
            rec.status, rec.error = "skipped", "if: condition is false"
            self.ui.event(inst.id, "skipped", "if: false")
            return None
        inputs, k = ident.inputs, ident.key
        prov = self.providers["local"] if ident.route == "local" else self.remote
        rec.key = k
        st = self.store.states.get(k)
        forced = inst.path in self.forced or inst.id in self.forced_ids
        # Rule 1: a done key is taken from the store, never run again (unless forced).
        if st is not None and st.status == "done" and not forced and \
                all(self.store.has_blob(f) for f in st.files):
            self._cached(inst, rec, st, st.outputs)
            return None
        if self.stop_reason:
            self._skip(inst.id, f"not run: {self.stop_reason}")
            return None
        # Rendered paths are confined here, before anything is read, uploaded or submitted:
        # a path the recipe may not read fails the step with no journal entry and no credit
        # spent (runner.paths).
        paths.check_inputs(inputs, self.roots, step=inst.id, uses=step.uses)
        return Work(prov, inputs, k, st, forced)

    def _check_rendered(self, inst: Instance, route: str, inputs: dict[str, Any]) -> None:
        """The same rules `validate` applied to what was known before the run, now on the
        rendered values: a request the provider would refuse is never sent (nothing is
        journaled or paid for it)."""
        kind = "local" if route == "local" else self.recipe.provider.kind
        for fld, msg, _hint in models.check(inst.step.uses, inputs, kind):
            raise StepError(f"{msg} (after rendering '{fld}')", step=inst.id)

    def _cached(self, inst: Instance, rec: StepRecord, st: KeyState, outputs: Any) -> None:
        rec.status, rec.task_ids, rec.attempts = "cached", list(st.task_ids), st.attempts
        rec.outputs = outputs
        self._publish(inst, outputs)
        self.ui.event(inst.id, "cached", "")

    async def _work(self, inst: Instance, rec: StepRecord, work: Work) -> Any:
        prov, inputs, k, st, forced = work.provider, work.inputs, work.key, work.state, \
            work.forced
        step = inst.step
        workdir = self.store.scratch(k)
        op = Op(inst.id, step.uses, inputs, k, workdir, self.base_dir, self.roots,
                timeout=deadlines.local_timeout(step.uses, step.timeout,
                                                self.recipe.provider.timeouts))
        recorded: KeyState | None = None
        if st is not None and st.status == "done" and not forced:
            # Some stored file went missing. Rule 1 holds here too: a finished remote task
            # is re-fetched (its URL, then the service's fresh links for the same task id),
            # never paid for again; only free local work is simply redone.
            outputs = await self._restore(inst, op, prov, st)
            if outputs is not None:
                self._cached(inst, rec, st, outputs)
                return None
            if prov.kind != "local" and self._price(inst) > 0:
                raise StepError("a stored result is missing and could not be fetched again "
                                f"(task {', '.join(st.task_ids) or 'unknown'}); not paying for "
                                "a new one: use --force or `sunoflow reroll` to do that on "
                                "purpose", step=inst.id)
            recorded, st = st, None
        if prov.kind == "local":
            outputs = await self._local(op, rec, recorded)
        else:
            if self.opts.frozen and self._price(inst) > 0 and \
                    not (st is not None and st.status == "submitted"):
                self.failed_paid.append(inst.id)
                raise StepError("--frozen: needs a paid submission (not in the lock and "
                                "store)", step=inst.id)
            # Forced, a finished result is paid for again on purpose; but a task a forced
            # run already submitted and never finished (killed, timed out) is polled, not
            # paid for a second time (rule 2 holds under --force and reroll too).
            outputs = await self._remote(inst, op, rec, st if not forced or (
                st is not None and st.status == "submitted") else None)
        rec.status = "succeeded"
        self.ui.event(inst.id, "succeeded", "")
        return outputs

    async def _local(self, op: Op, rec: StepRecord, recorded: KeyState | None = None) -> Any:
        """Do local work; `recorded`: the journal's or lock's finished result of this key,
        whose files went missing (made again here, free)."""
        async with self.cpu_slots:
            started = round(time.time(), 3)
            self.ui.event(op.step, "running", "")
            sub = await self.providers["local"].submit(op)
        assert sub.result is not None
        rec.attempts += 1
        finished = round(time.time(), 3)
        outputs, files = await self._materialize(sub.result, op)
        if recorded is not None:
            # Rule 12: made again from inputs that stand for the recorded ones (a song the
            # service's recovery gave back as .m4a), the same work may write other bytes.
            # The recorded outputs stay, each such file standing for the recorded one, so
            # the steps that read it keep their recorded keys (a paid one is not paid
            # again). A swap refused (two new files for one take: not one local step
            # writes) leaves the new result as it is, as `_restore` does, and the readers
            # get new keys: `--frozen` refuses the paid ones.
            kept = aliases.swap(recorded.outputs, recorded.files, outputs, files)
            if kept is not None:
                outputs, files = kept.outputs, kept.files
                if kept.changed:
                    self.ui.note(f"{op.step}: made again as other bytes than recorded; they "
                                 "stand for the recorded files, so the steps that read them "
                                 "keep their keys")
        # Local work is free and deterministic: losing this line in a crash costs nothing.
        self.store.record("done", op.key, op.step, outputs=outputs, files=files, durable=False,
                          times={**self._times(op.step, finished), "started": started})
        await self._share(op, outputs, files, [], None)
        return outputs

    def _ended(self, iid: str) -> None:
        """`iid` has finished (any status): wake the steps refused early that wait for it."""
        self.over.add(iid)
        ev = self._over_events.pop(iid, None)
        if ev is not None:
            ev.set()

    def time_left(self) -> tuple[float, bool] | None:
        """For the progress view: about how many seconds the run has left, and whether
        that comes from durations this run measured (else the step types' typical ones).
        The critical path's figures for the service's tasks (runner.engine.priority); a run with
        no service work goes by the pace of its finished steps so far."""
        left = {iid: self.clock.now() - t for iid, t in self.task_started.items()}
        left |= {inst.id: 0.0 for inst in self.selected if inst.id not in left}
        for iid, rec in self.records.items():
            if rec.status != "pending":
                left.pop(iid, None)  # (an instance not yet reached has no record)
        if not left:
            return None
        if self.urgency.remaining(left) is not None:
            return self.urgency.remaining(left)
        finished = [rec for rec in self.records.values() if rec.status == "succeeded"]
        if not finished:
            return None
        took = self.clock.now() - self.t_start
        return took / len(finished) * len(left), True
