"""The shared ledger: who pays for a step key, across machines (`--cache`).

For each step key the cache holds what the journal holds: ``done/<key>.json`` (the
outputs and files, as in the lock) and, under ``ledger/<key>/``, the claims of the
submissions made for it. Runners never overwrite one another's records; every decision is
a create-only write (S3 ``If-None-Match: *``, obstore's ``mode="create"``), so of two
runners racing for the same object exactly one wins, whatever their clocks say.

A paid submission of key K, by a runner R:

1. ``done/K`` exists: nothing to pay; R adopts it (its files come from the blob cache).
2. Else R reads ``ledger/K/`` (one LIST). Claims are numbered: the highest, ``claim-n``,
   decides. No claim, ``free-n`` (its holder submitted nothing) or ``failed-n``: R creates
   ``claim-(n+1)``. Whoever's create succeeds holds the key; the others read again.
3. ``task-n`` exists (and no ``failed-n``: the task failed and a new submission is due,
   engine rule 5): the holder's submission has its task id. R does not submit: it polls
   that task id, as a resumed run polls a journaled one.
4. ``claim-n`` without a task: the holder is submitting. R waits while the holder's lease
   is live. A lease expired with no task id means the holder died in the window where a
   task may exist without its id being known: the key is "possibly submitted", the same
   policy as a local crash (engine rule 3): by default R claims ``claim-(n+1)`` and
   submits again, counted and with a warning; with --no-resubmit-uncertain it stops.

The lease. A holder renews its claim (writes ``beat-n``) every LEASE/3 seconds from the
claim until its task id is recorded (``task-n``) or it gives the key up (``free-n``: the
service answered that no task was made, or the run stopped before submitting), so a
submit that waits for the rate limit or is retried for minutes keeps its claim. An
observer judges expiry on its own clocks, never by comparing one machine's wall clock with
another's: a lease has expired when the newest of ``claim-n`` / ``beat-n`` has not changed
for LEASE seconds of the observer's monotonic clock, or when the store's own timestamp of
it is older than LEASE + SKEW by the observer's wall clock (so a key left by a runner that
died days ago is taken at once; this assumes the observer's clock is within SKEW of the
store's). LEASE defaults to 60 s (SUNOFLOW_CACHE_LEASE sets it; the tests use a second),
SKEW is 5 minutes. A runner recognises its own earlier claims by the id kept in its state
directory (one run per state directory holds its lock): a claim of its own that it does not
hold now is an earlier, dead run's, expired at once.

What is guaranteed: two runners with one cache never both submit a key while a claim is
live; a key is paid twice only after a holder died (or lost the cache for longer than its
lease) between claiming and recording its task id, exactly the case a single machine calls
"possibly submitted". The ledger cannot be checked when the cache is unreachable, so then
a run stops before paying (exit 1).
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio

from runner import paths
from runner.errors import StepError
from runner.store.cache import Cache, CacheError, Exists
from runner.store.journal import Store
from runner.store.lock import _ref, _unref, file_entry, stored_file, suffix

LEASE = 60.0
SKEW = 300.0
LEASE_ENV = "SUNOFLOW_CACHE_LEASE"
FORMAT = 1
ALIASED = 2  # a ``done`` record with a file that stands for another (`entry_version`)


def lease_from_env(env: Any = None) -> float:
    env = os.environ if env is None else env
    raw = env.get(LEASE_ENV)
    try:
        value = float(raw) if raw else LEASE
    except ValueError:
        value = LEASE
    return value if value > 0 else LEASE


def runner_id(store: Store) -> str:
    """This state directory's id in claims: random, made once, not a secret."""
    path = store.root / "runner-id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        rid = secrets.token_hex(8)
        paths.replace_text(path, rid + "\n")
        return rid


def entry_of(key: str, step: str, outputs: Any, files: list[dict[str, Any]],
             task_ids: list[str], credits: Any) -> dict[str, Any]:
    """A ``done`` record as the cache holds it: stored paths as sha256 references, as in
    the lock, so any machine reads it against its own store."""
    by_path = {f["path"]: f"sha256:{f['sha256']}{suffix(f['path'])}" for f in files}
    return {"v": entry_version(files), "key": key, "step": step, "task_ids": list(task_ids),
            "credits": credits, "outputs": _ref(outputs, by_path),
            "files": [file_entry(f) for f in files]}


def entry_version(files: list[dict[str, Any]]) -> int:
    """A ``done`` record whose files stand for recorded ones (runner.store.aliases) says
    version 2, as the lock does; an older sunoflow does not read the version of these
    records, so one adopting such a record without its lock re-keys the steps that read
    those files, as it would have before aliases existed."""
    return ALIASED if any(f.get("stands_for") for f in files) else FORMAT


def adopt(store: Store, entry: dict[str, Any], *, persist: bool = True) -> Any:
    """Record a cached ``done`` in this store (the journal, or only in memory for a
    read-only command); return the state."""
    files = [stored_file(store, f) for f in entry["files"]]
    data = {"outputs": _unref(entry.get("outputs"), store), "files": files,
            "task_ids": list(entry.get("task_ids") or []), "credits": entry.get("credits")}
    if persist:
        store.record("done", entry["key"], entry.get("step", ""), durable=False, **data)
    else:
        store._apply({"e": "done", "key": entry["key"], "step": entry.get("step", ""), **data})
    return store.states[entry["key"]]


@dataclass(frozen=True)
class Verdict:
    """What `Ledger.acquire` found: ``done`` (an entry to adopt), ``task`` (another
    runner's task id to poll) or ``claim`` (ours: submit). `uncertain`: the claim replaced
    an expired one that has no task id (possibly submitted)."""

    kind: str
    entry: dict[str, Any] | None = None
    task_id: str | None = None
    claim: Claim | None = None
    uncertain: bool = False


class Ledger:
    def __init__(self, cache: Cache, rid: str, *, lease: float = LEASE,
                 note: Callable[[str], None] = lambda s: None,
                 monotonic: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.cache, self.rid, self.lease, self.note = cache, rid, lease, note
        self.monotonic, self.wall = monotonic, wall
        self.claims = 0  # claims this run created (the benchmark reads it)
        self.last_n: dict[str, int] = {}  # key -> the claim number `acquire` last decided on

    # --- done records --------------------------------------------------------------

    async def done(self, key: str) -> dict[str, Any] | None:
        raw = await self.cache.get(f"done/{key}.json")
        return json.loads(raw) if raw else None

    async def finish(self, entry: dict[str, Any]) -> dict[str, Any] | None:
        """Publish a finished key, create-only: the first record of a key stands. Returns
        the record that was there already when ours lost, else None."""
        body = json.dumps(entry, separators=(",", ":"), sort_keys=True).encode()
        try:
            await self.cache.put(f"done/{entry['key']}.json", body, create=True)
        except Exists:
            return await self.done(entry["key"])
        return None

    async def done_keys(self) -> set[str]:
        return {m["path"].rsplit("/", 1)[-1].removesuffix(".json")
                for m in await self.cache.list("done/")}

    # --- claims --------------------------------------------------------------------

    async def acquire(self, key: str, step: str, *, takeover: bool,
                      fresh: bool = False) -> Verdict:
        """Decide who pays for `key` (steps 1-4 of the module docstring). Waits while
        another runner's live claim stands. `fresh`: a step run again on purpose
        (--force, reroll): a done record or a recorded task does not count, a new claim is
        taken after them. CacheError: the ledger cannot be checked."""
        seen: tuple[Any, ...] | None = None
        since = 0.0
        told = False
        while True:
            entry = None if fresh else await self.done(key)
            if entry is not None:
                return Verdict("done", entry=entry)
            objs = {m["path"].rsplit("/", 1)[-1]: m
                    for m in await self.cache.list(f"ledger/{key}/")}
            n = max((int(name[6:-5]) for name in objs
                     if name.startswith("claim-") and name[6:-5].isdigit()), default=-1)
            uncertain = False
            self.last_n[key] = n
            answered = f"task-{n}.json" in objs
            if n >= 0 and answered and f"failed-{n}.json" not in objs and not fresh:
                raw = await self.cache.get(f"ledger/{key}/task-{n}.json")
                if raw:
                    return Verdict("task", task_id=json.loads(raw)["task_id"])
            if n >= 0 and not answered and f"free-{n}.json" not in objs and \
                    f"failed-{n}.json" not in objs:
                raw = await self.cache.get(f"ledger/{key}/claim-{n}.json")
                holder = json.loads(raw).get("runner") if raw else None
                newest = max((objs[x] for x in (f"claim-{n}.json", f"beat-{n}.json")
                              if x in objs), key=lambda m: m["last_modified"])
                mark = (n, newest["path"], newest.get("e_tag"), newest["last_modified"])
                if mark != seen:
                    seen, since = mark, self.monotonic()
                stored_age = self.wall() - newest["last_modified"].timestamp()
                expired = holder == self.rid or self.monotonic() - since >= self.lease \
                    or stored_age > self.lease + SKEW
                if not expired:
                    if not told:
                        told = True
                        self.note(f"{step}: another runner ({holder}) is submitting it; "
                                  "waiting for its task id")
                    await anyio.sleep(min(max(self.lease / 8, 0.05), 5.0))
                    continue
                if not takeover:
                    who = "an earlier run of this state directory" if holder == self.rid \
                        else f"another runner ({holder})"
                    raise StepError(f"possibly submitted by {who} whose claim expired "
                                    "without a task id; not resubmitting because of "
                                    "--no-resubmit-uncertain", step=step)
                uncertain = True
            claim = await self._create(key, step, n + 1)
            if claim is not None:
                return Verdict("claim", claim=claim, uncertain=uncertain)
            seen = None  # someone else's claim now: judge it afresh

    async def failed(self, key: str, task_id: str, why: str) -> None:
        """The key's current task failed at the service: the next submission (a refund or
        the step's `retry`, engine rule 5) takes a new claim. Whoever saw it writes it."""
        n = self.last_n.get(key, -1)
        if n >= 0:
            await self.cache.put(f"ledger/{key}/failed-{n}.json", json.dumps(
                {"task_id": task_id, "runner": self.rid, "why": why[:200]}).encode())

    async def _create(self, key: str, step: str, n: int) -> Claim | None:
        nonce = secrets.token_hex(8)
        body = json.dumps({"v": FORMAT, "runner": self.rid, "nonce": nonce, "step": step,
                           "at": round(self.wall(), 3), "lease": self.lease}).encode()
        path = f"ledger/{key}/claim-{n}.json"
        try:
            await self.cache.put(path, body, create=True)
        except Exists:
            # Lost the race, or won it with a request the library retried after its answer
            # was lost: the nonce tells which.
            raw = await self.cache.get(path)
            if not raw or json.loads(raw).get("nonce") != nonce:
                return None
        self.claims += 1
        self.last_n[key] = n
        return Claim(self, key, n)


class Claim:
    """A held claim: renewed while held, closed by `task` or `free`."""

    def __init__(self, ledger: Ledger, key: str, n: int) -> None:
        self.ledger, self.key, self.n = ledger, key, n
        self.closed = False

    def _path(self, kind: str) -> str:
        return f"ledger/{self.key}/{kind}-{self.n}.json"

    @asynccontextmanager
    async def held(self) -> AsyncIterator[Claim]:
        """Renew the lease in the background until the block ends (structured: the
        renewal cannot outlive the submission it covers)."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._renew)
            try:
                yield self
            finally:
                tg.cancel_scope.cancel()

    async def _renew(self) -> None:
        beat = 0
        while not self.closed:
            await anyio.sleep(self.ledger.lease / 3)
            beat += 1
            body = json.dumps({"runner": self.ledger.rid, "beat": beat,
                               "at": round(self.ledger.wall(), 3)}).encode()
            try:
                await self.ledger.cache.put(self._path("beat"), body)
            except CacheError as exc:
                self.ledger.note(f"cannot renew the claim of {self.key}: {exc}")

    async def task(self, task_id: str) -> None:
        """The submission's task id: others poll it from now on."""
        await self.ledger.cache.put(self._path("task"), json.dumps(
            {"task_id": task_id, "runner": self.ledger.rid}).encode())
        self.closed = True

    async def free(self, why: str) -> None:
        """Nothing was submitted under this claim: the next runner may claim at once."""
        await self.ledger.cache.put(self._path("free"), json.dumps(
            {"runner": self.ledger.rid, "why": why[:200]}).encode())
        self.closed = True


async def seed(ledger: Ledger, plan: Any, store: Store, *, persist: bool = True) -> int:
    """Adopt every finished key of this plan that the cache records and this store does
    not (a fresh machine, a new CI job): walked level by level, since a step's key is
    known only once its inputs' outputs are. One LIST, then one GET per adopted key.
    Returns how many were adopted; nothing is fetched but records (files come later, from
    the blob cache, when a step needs them)."""
    from runner.store.status import resolve

    keys = await ledger.done_keys()
    adopted = 0
    while keys:
        want = {row["key"] for row in resolve(plan, store).values()
                if row["key"] in keys and getattr(store.states.get(row["key"]), "status",
                                                   None) != "done"}
        if not want:
            break
        for k in sorted(want):
            entry = await ledger.done(k)
            if entry is not None and entry.get("key") == k:
                adopt(store, entry, persist=persist)
                adopted += 1
        keys -= want
    if persist:
        store.sync()
    return adopted
