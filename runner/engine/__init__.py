"""The engine: run a plan's instances concurrently, journal every paid step, never pay twice.

One anyio task group owns the run. An instance starts when every instance it depends on
has finished; a CapacityLimiter bounds remote tasks in flight (--concurrency) and another
bounds local ffmpeg work (the cores). The provider's rate limiter paces every request.

The parts, each a module of this folder (one class per part, each built on the one
before, so a method is found in the part that owns it):

- records.py: Options, StepRecord, Counts, the Work of one instance, and UI (the progress
  view, a Protocol: the engine never imports runner.report);
- state.py: EngineState, what every part shares (made once, in its __init__);
- files.py: results to stored files, through the files client the run hands in;
- poller.py: waiting for a task (polls, callbacks) and its first stage (early release);
- refusals.py: the service's refusals of requests that read unfinished tasks, early ones
  and a lagging record's (rule 8);
- remote.py: the never-pay-twice path: intent, submit, the task id, the ledger's claims,
  restoring a finished result (rules 2-12);
- scheduler.py: Engine, the task group and its ready queue, one instance's lifecycle
  (render, key, cache, local work), rule 1;
- force.py: what --force and reroll name; priority.py, deadlines.py, early.py: the
  critical path, the deadlines, early release as a speculation.

This folder imports the plan, the steps, the store, the providers' interface and the
callbacks registry; never the CLI, the report or the album.

The never-pay-twice rules, each enforced where its number is cited in the parts:

1. A key whose journal says ``done`` is never run again (unless --force names its step).
2. A key with a recorded task id is polled, never resubmitted (resume).
3. ``intent`` is fsynced before a submit and the task id the moment it is returned, so the
   only unknowable window is a submit whose answer was lost ("possibly submitted"): by
   default resubmitted with a warning and counted, or stopped with --no-resubmit-uncertain.
4. A submit is retried automatically only when the provider proved no task was created
   (TransientError: a connect error, or the service's own "not created" codes).
5. A task the service failed is resubmitted only when it refunded the credits (531) or the
   step's ``retry`` asks for it (that costs credits).
6. 401 and "insufficient credits" stop every new submission at once; what is already paid
   for keeps being polled and downloaded.

With callbacks (`--listen`, Options.callbacks), a task this run submitted waits for its
callback or its next fallback poll, whichever comes first (`_callback`); a callback that
completes the task gives the same Result a poll would, and everything after it (the
journal's ``done``, the downloads) is unchanged. A reported failure is confirmed by a poll
first, since it decides rule 5.

Early release. A music task's first stage brings its first track before the second: a
`first` callback, or a poll that finds it (sunoapi's FIRST_SUCCESS, a `First` answer; one
poll is aimed at it, pacing.Poller.wait_first). The steps that read only that track
(`Instance.early`, found by the plan) start from it, and this must not make anyone pay
twice: a step's key is built from the inputs it renders, so the track a released step
rendered must be the very track every later run renders.

7. The first track is downloaded and journaled (``first``, fsynced) before any step is
   released on it; the ``done`` outputs put that recorded track first, whatever the
   complete result lists (`pin_first`); and a resumed run that finds a ``first`` for the
   task it polls releases the same steps from the same record, and never records another
   for that task. So a released step renders the same inputs, hence the same key, in this
   run and every later one. A task's first stage is taken once, whether a callback, a
   poll or both report it (`_poll`).

Early release is a speculation (runner.engine.early): nobody documents whether a service accepts
work on a task that has not finished. `release_on_first: auto` tries it unless the host
is known to refuse that operation; a refusal falls back, and is remembered.

8. A request sent early (a task it reads was released at its first stage and has not
   finished) that the service refuses by a definite answer created no task: the service
   answered, and said no (a 4xx, or its own "not created" code; never a gateway 5xx, a
   timeout or a lost answer, which may hide a task: early.refusal). `_submit` journals
   it ``failed`` (not submitted) before anything else, so a run killed before the
   resubmission submits it once on resume, and does not count it possibly submitted.
   The resubmission renders nothing anew (the same inputs, the first track pinned by
   rule 7, so the same key) and is sent once, only after every task it reads has
   finished: that request is not early, so it cannot be refused for being early.
   A host's record may lag its own answers: a request that is not early (every task it
   reads was seen finished: a poll's SUCCESS, a `complete` callback, an earlier run)
   refused by a definite answer that says a task it reads has not finished
   (early.SAYS), or by a 4xx that does not say why (early.MAYBE: a bare 404, 400, 422)
   within the run's waits for a lag (44 s with the defaults) of when the last task it
   reads finished (`_lag_recent`), made no task, and the journal says so (``failed``:
   `_submit` writes it only when no attempt lost its answer, and `_remote` checks it);
   it is sent again after growing waits (a quarter of the poll interval, at most 2 s,
   doubling up to the poll interval), at most six times, then the step fails naming the
   task it reads and how long it waited (`_lagging`). Nothing is learned from it: a
   lagging record is no refusal of early work. Any other refusal of a request that is
   not early fails the step at once: a bare one later than that after the finish (a lag
   longer than the run waits out, or far likelier a refusal of the request itself), a
   409 "record already exists" (early.EXISTS: a record that lags cannot make one up,
   and the same request would be answered the same way), any other 4xx. A refused
   request paid nothing; only a request the service takes can pay, and the step stops
   sending once one is taken. An early request whose answer was lost stays under rule
   3: on a host that accepts early work it may have made a task, so it is resubmitted
   with a warning and counted like any other; a later refusal does
   not clear it (a host's servers need not answer alike). After a refusal, the run sends
   that operation to that host early no more (`auto`): a request already waiting for the
   rate limiter is withdrawn before it leaves (errors.Withheld), and waits too. A task
   taken early that the service then fails for being early is learned the same way;
   whether to submit it again stays rule 5's (refunded, or `retry`), and that submission
   waits for the tasks it reads.

The ledger and the disk.

9. A journal that cannot take a line stops the run: no submit follows an ``intent`` that is
   not on disk, and a task id the journal refuses (after spending the state directory's
   reserve, store.Store.record) is kept in memory, printed and written again at the end
   (`_journal_task`); nothing more is submitted in that run.
10. The committed lock is the ledger: every key it records is known to the store before
    the run (runner.store.lock.seed) and is restored (`_restore`), never submitted.

Beyond one machine (`--cache`, runner.store.claims): the cache's ledger extends rules 1-3 to
every runner that shares it.

11. Before a paid submission the key is claimed in the ledger with a create-only write
    (`_claim`). A key the cache records as done is adopted, not paid; a key another runner
    has a task id for is polled by that id (and journaled, so rule 2 covers it from then
    on), never submitted; a live claim of another runner is waited for; a claim whose
    lease expired without a task id is "possibly submitted" and follows rule 3. The task id
    goes to the ledger right after the journal, and a claim under which nothing was
    submitted is freed. When the ledger cannot be reached, nothing is submitted: the run
    stops, since no claim can be checked. Stored files are pulled from the cache before
    any re-download, recovery or local re-making (`_restore`), and every finished key's
    files and record are pushed (`_share`); a cache that is unreachable for files is only
    a warning.

Restoring as other bytes (runner.store.aliases).

12. A finished key obtained again as other bytes than recorded (the service's fresh links
    or its recovery for the same task id, an `.m4a` for a recorded `.mp3`; a local step
    made again from such a file) keeps its recorded outputs: each changed file takes the
    recorded one's place, matched take by take, and its entry says which recorded file it
    stands for (`_restore`, `_local`). Keys read a stored file through what it stands for
    (runner.plan.keys), so every step that reads it renders its recorded key and is
    restored under rules 1 and 10, never submitted; `--frozen` builds it. The alias is
    written wherever the entry goes (the journal's ``done``, the lock, the cache's
    record), so a later run, with the state directory or from the lock alone, keys alike.
    Only a result whose files cannot be matched to the recorded ones take by take is taken
    as it is, and its readers get new keys.
"""
