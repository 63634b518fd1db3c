"""The state directory: the journal of every step, and the content-addressed file store.

Layout (format version 1)::

    .sunoflow/
      VERSION                  "1"; a newer number is refused, never rewritten
      journal.jsonl            append-only events, one JSON object a line
      blobs/sha256/ab/<sha>.<ext>   every downloaded or produced file, by content
      tmp/                     partial downloads and scratch work (safe to delete)
      lock                     held (flock) by the one run using this directory, and by
                               `clean` while it deletes
      recipes.json             the recipes (and their locks) that used this directory
                               (runner.store.ledger), so that `clean` keeps what each refers to
      reserve                  64 KiB of spare room, given back to the journal when the
                               disk is full so the task id of a paid submit can be written
      absorbed.json            which lock the journal already holds whole (runner.store.ledger):
                               a resume need not parse it

Journal events, per step key (see plan.key): ``intent`` (about to submit, attempt n),
``submitted`` (the service's task id), ``uncertain`` (a submit whose answer was lost),
``first`` (a music task's first track, ready before the second; the steps that read only
that track have started from it), ``done`` (outputs, with the sha256 and size of every
file; a file obtained again as other bytes than recorded says which recorded file it
stands for, ``stands_for``: runner.store.aliases), ``failed``.

Durability rule: ``intent`` and ``submitted`` are flushed and fsynced before the engine
goes on, because they are what proves a task was paid for. A ``done`` of a local step may
be lost in a crash at no cost (the work is free and deterministic), so those are synced in
batches. A torn last line (a kill -9 mid-write) is ignored when reading; any other line
that is not a journal event of the right shape is skipped with a warning naming its line
(`Store.warnings`), never taking the valid lines around it with it.

A durable write that fails (a short write, ENOSPC, EIO, a failed fsync) is undone (the file
is cut back to where the line began) and raises JournalError, so no submit follows an
``intent`` that is not on disk. Before that, once, the reserve file is deleted and the line
written again: the task id of a submit that already happened is what must not be lost, and
a full disk is the likely cause. After the reserve was spent, `degraded` says why, and the
engine submits nothing more.

Stored paths are absolute: the state directory is made absolute once, when the Store is
made (relative to the working directory of the invocation). A journal written elsewhere (a
moved state directory, or a relative path stored by an older sunoflow) is read with each
stored file's path rebuilt from its content hash under this directory.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner import paths
from runner.errors import JournalError, StoreError
from runner.store import aliases

FORMAT = 1
# Events a reader must understand to be safe carry a higher "v": an older sunoflow that
# meets one stops with "event from a newer sunoflow" instead of ignoring it. ``first``
# pins a step's first track (runner.engine, rule 7): ignoring it could re-key the
# steps started from that track, and so pay for them twice. A ``done`` whose files say
# what they stand for (runner.store.aliases) is version 3, for the same reason: ignoring
# ``stands_for`` re-keys the steps that read those files (rule 12). Every other ``done``
# stays version 1, readable by any sunoflow.
EVENT_VERSION = {"first": 2}
STANDS_FOR = 3
READS = 3  # the highest event version this sunoflow understands
SYNC_EVERY = 0.2  # seconds between batched fsyncs of non-critical events
INTERN_UP_TO = 256  # characters: longer strings (lyrics, say) are seldom repeated
RESERVE_BYTES = 64 * 1024  # spare room for a few hundred journal lines on a full disk
EVENTS = frozenset({"intent", "submitted", "uncertain", "done", "first", "failed", "forget"})


@dataclass(slots=True)
class KeyState:
    key: str
    step: str = ""
    status: str = "new"  # new | intent | submitted | uncertain | done | failed
    task_id: str | None = None
    attempts: int = 0
    outputs: Any = None
    files: list[dict[str, Any]] = field(default_factory=list)
    task_ids: list[str] = field(default_factory=list)
    error: str | None = None
    credits: float | None = None
    # ``first``: the task it came from, its outputs (one track) and files. Kept after
    # ``done``: the done outputs start with this very track.
    first_task: str | None = None
    first: Any = None
    first_files: list[dict[str, Any]] = field(default_factory=list)
    # When the run that recorded ``done`` saw the task finished (epoch seconds, its
    # `times.finished`); None when no run did (a restore, a lock, an older journal).
    finished: float | None = None


_ABSENT = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP})  # as pathlib


def compact(value: Any) -> Any:
    """A step's outputs (JSON-shaped) with their keys and short strings interned, so that
    what repeats is held once: every track has the same dozen keys, and a task id, a
    model, a style, a stored file's path or a URL appear several times across a result,
    its `files` and the steps that carry it on. Outputs are kept for the whole run (the
    templates of later steps read them), so this is most of their size."""
    if isinstance(value, str):
        return sys.intern(value) if len(value) <= INTERN_UP_TO else value
    if isinstance(value, dict):
        return {sys.intern(k) if type(k) is str else k: compact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [compact(v) for v in value]
    return value


class Store:
    def __init__(self, root: Path, *, readonly: bool = False) -> None:
        # Absolute once, here: every path the journal stores and every later lookup then
        # mean the same file whatever folder a later command runs from.
        self.root = Path(os.path.abspath(root))
        self.blobs = root / "blobs" / "sha256"
        self.tmp = root / "tmp"
        self.journal_path = root / "journal.jsonl"
        self.states: dict[str, KeyState] = {}
        # Stored name -> the recorded stored name it stands for (runner.store.aliases), from
        # every ``done`` applied: what keys read a stored file as (runner.plan.keys). An alias
        # is a fact about two files, so a later ``done`` of the same key does not undo it.
        self.aliases: dict[str, str] = {}
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._last_sync = 0.0
        self._dirty = False
        self._write_lock = threading.Lock()  # records may come from worker threads
        self._torn = False  # a failed write could not be cut back: start the next on a new line
        self.degraded: str | None = None  # why the journal had to spend its reserve
        self.warnings: list[str] = []  # journal lines skipped when reading (line numbers)
        # `status` and `plan`: events (a lock's seed) are applied in memory, never written.
        self.readonly = readonly

    # --- opening -------------------------------------------------------------------

    def open(self, *, create: bool = True) -> Store:
        try:
            return self._open(create)
        except OSError as exc:
            raise StoreError(f"cannot use the state directory {self.root}: "
                             f"{exc.strerror or exc}") from None

    def _open(self, create: bool) -> Store:
        if not self.root.exists():
            if not create:
                return self
            self.root.mkdir(parents=True)
        vfile = self.root / "VERSION"
        if vfile.exists():
            try:
                v = int(vfile.read_text().strip())
            except ValueError:
                raise StoreError(f"{vfile}: not a sunoflow state directory") from None
            if v > FORMAT:
                raise StoreError(f"{self.root} was written by a newer sunoflow (format {v}); "
                                 f"this one reads format {FORMAT}")
        elif create:
            vfile.write_text(f"{FORMAT}\n")
        self.load()
        return self

    def lock(self, purpose: str = "run") -> None:
        """One run per state directory: a second concurrent run would submit the same work,
        and `clean` would delete what the run has just recorded."""
        self._lock_fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = None
            why = "two runs on one state directory could pay twice" if purpose == "run" \
                else "it could delete files the run has just made; nothing was deleted"
            raise StoreError(f"another sunoflow run is using {self.root}; wait for it to "
                             f"finish ({why})") from None

    def load(self) -> None:
        self.states.clear()
        self.aliases.clear()
        self.warnings.clear()
        if not self.journal_path.exists():
            return
        prefix = str(self.blobs) + os.sep
        with self.journal_path.open("rb") as f:
            for n, raw in enumerate(f, 1):
                if not raw.endswith(b"\n"):
                    break  # torn last write: the event never happened
                if not raw.strip():
                    continue
                try:
                    ev = json.loads(raw)
                except ValueError:
                    self.warnings.append(f"{self.journal_path}:{n}: skipped a line that is "
                                         "not JSON (a torn write)")
                    continue
                if isinstance(ev, dict) and type(ev.get("v")) is int and ev["v"] > READS:
                    raise StoreError(f"{self.journal_path}:{n}: event from a newer sunoflow")
                why = malformed(ev)
                if why is not None:
                    self.warnings.append(f"{self.journal_path}:{n}: skipped a line that is "
                                         f"not a journal event ({why})")
                    continue
                if ev["e"] in ("done", "first"):
                    self._relocate(ev, prefix)
                    ev["outputs"] = compact(ev.get("outputs"))
                    ev["files"] = compact(ev.get("files", []))
                self._apply(ev)

    def _relocate(self, ev: dict[str, Any], prefix: str) -> None:
        """Point the stored files of an event written with another state directory path
        (moved, or relative to another working directory) into this one, by content hash.
        Costs one string test per file when nothing moved."""
        files = ev.get("files")
        if not files:
            return
        for f in files:
            if not f["path"].startswith(prefix):
                break
        else:
            return

        def move(value: Any) -> Any:
            if isinstance(value, str):
                if "/blobs/sha256/" in value and not value.startswith(prefix):
                    name = value.rsplit("/", 1)[-1]
                    return str(self.blobs / name[:2] / name)
                return value
            if isinstance(value, dict):
                return {k: move(v) for k, v in value.items()}
            if isinstance(value, list):
                return [move(v) for v in value]
            return value

        ev["files"] = move(files)
        ev["outputs"] = move(ev.get("outputs"))

    def _apply(self, ev: dict[str, Any]) -> None:
        k = ev["key"]
        st = self.states.get(k)
        if st is None:
            k = sys.intern(k)  # plan.key interns the keys it makes: one string per key
            st = self.states[k] = KeyState(k)
        st.step = ev.get("step", st.step)
        e = ev["e"]
        if e == "intent":
            st.status, st.task_id = "intent", None
            st.attempts = ev.get("attempt", st.attempts + 1)
        elif e == "submitted":
            st.status, st.task_id = "submitted", ev["task_id"]
            st.task_ids.append(ev["task_id"])
        elif e == "uncertain":
            st.status = "uncertain"
        elif e == "done":
            st.status, st.outputs = "done", ev["outputs"]
            st.files = ev.get("files", [])
            st.credits = ev.get("credits")
            for new, recorded in aliases.pairs(st.files):
                self.aliases[sys.intern(new)] = sys.intern(recorded)
            times = ev.get("times")
            at = times.get("finished") if isinstance(times, dict) else None
            st.finished = float(at) if isinstance(at, int | float) and \
                not isinstance(at, bool) else None
            if ev.get("task_ids"):
                st.task_ids = list(ev["task_ids"])
        elif e == "first":
            st.first_task, st.first = ev.get("task_id"), ev["outputs"]
            st.first_files = ev.get("files", [])
        elif e == "failed":
            st.status, st.error = "failed", ev.get("error")
            st.task_id = None
        elif e == "forget":
            del self.states[k]

    # --- writing -------------------------------------------------------------------

    def _open_journal(self) -> int:
        if self._fd is None:
            try:
                fd = os.open(self.journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            except OSError as exc:
                raise JournalError(f"cannot open the journal {self.journal_path}: "
                                   f"{exc.strerror}") from None
            size = os.fstat(fd).st_size
            if size:
                with self.journal_path.open("rb") as f:
                    f.seek(size - 1)
                    self._torn = f.read(1) != b"\n"  # finish a torn line so ours starts clean
            self._fd = fd
        return self._fd

    def record(self, event: str, key: str, step: str, *, durable: bool = True,
               **data: Any) -> None:
        v = STANDS_FOR if event == "done" and any(
            f.get("stands_for") for f in data.get("files", ())) else \
            EVENT_VERSION.get(event, FORMAT)
        ev = {"v": v, "e": event, "key": key, "step": step, "t": round(time.time(), 3),
              **data}
        if self.readonly:
            self._apply(ev)
            return
        line = (json.dumps(ev, separators=(",", ":"), default=str) + "\n").encode()
        with self._write_lock:
            fd = self._open_journal()
            now = time.monotonic()
            sync = durable or now - self._last_sync > SYNC_EVERY
            try:
                self._append(fd, line, sync)
            except OSError as exc:
                # The line is not on disk. A durable line other than ``intent`` may prove a
                # payment that already happened (a task id): spend the reserve on it, once,
                # and write it again. An ``intent`` that cannot be written is refused: no
                # submit follows it, so nothing is lost.
                if not (durable and event != "intent" and self._spend_reserve(exc)):
                    raise JournalError(self._failed(event, exc)) from None
                try:
                    self._append(fd, line, True)
                except OSError as again:
                    raise JournalError(self._failed(event, again)) from None
            self._apply(ev)
            if sync:
                self._last_sync, self._dirty = now, False
            else:
                self._dirty = True

    def _append(self, fd: int, line: bytes, sync: bool) -> None:
        """Append one whole line, or nothing: a short write (a full disk takes what fits in
        the last block) is cut back, so no torn line is left for a reader to misjudge."""
        start = os.fstat(fd).st_size
        try:
            data = (b"\n" if self._torn else b"") + line
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                if n <= 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                view = view[n:]
            self._torn = False
            if sync:
                os.fsync(fd)
        except OSError:
            try:
                os.ftruncate(fd, start)
            except OSError:
                self._torn = True
            raise

    def _spend_reserve(self, exc: OSError) -> bool:
        reserve = self.root / "reserve"
        try:
            reserve.unlink()
        except OSError:
            return False
        self.degraded = (f"the state directory's disk could not take a journal line "
                         f"({exc.strerror}); its reserve was used to record it")
        return True

    def _failed(self, event: str, exc: OSError) -> str:
        return (f"cannot write to the journal {self.journal_path} ({exc.strerror or exc}); "
                + ("nothing more is submitted" if event in ("intent", "submitted")
                   else "stopping") + ": free some space or fix the disk, then run again")

    def reserve(self) -> None:
        """Make sure the reserve file exists (before anything is paid): 64 KiB the journal
        can give back to itself when the disk fills up, so a task id already paid for is
        still written. A disk that cannot hold it refuses the run before any submit."""
        path = self.root / "reserve"
        try:
            if path.stat().st_size == RESERVE_BYTES:
                return
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise JournalError(f"cannot use {path}: {exc.strerror}") from None
        try:
            with path.open("wb") as f:
                f.write(bytes(RESERVE_BYTES))
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            with contextlib.suppress(OSError):
                path.unlink()
            raise JournalError(f"the state directory {self.root} has no room for the journal "
                               f"({exc.strerror}); nothing was submitted: free some space, "
                               "then run again") from None

    def sync(self) -> None:
        if self._fd is not None and self._dirty:
            try:
                os.fsync(self._fd)
            except OSError as exc:
                self.degraded = f"the journal could not be synced ({exc.strerror})"
                return
            self._dirty = False

    def close(self) -> None:
        self.sync()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # --- blobs ---------------------------------------------------------------------

    def scratch(self, name: str) -> Path:
        """A scratch folder for one step's work (created by whoever writes into it)."""
        return self.tmp / name

    def blob_path(self, sha: str, suffix: str) -> Path:
        return self.blobs / sha[:2] / f"{sha}{suffix}"

    def ingest(self, path: Path, *, move: bool = True) -> dict[str, Any]:
        """Hash `path` and put it in the store; return {path, sha256, size}."""
        sha = paths.sha256_file(path)
        dest = self.blob_path(sha, _suffix(path))
        if dest.exists():
            if move:
                path.unlink(missing_ok=True)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            if move:
                os.replace(path, dest)
            else:
                paths.replace_copy(path, dest)
        return {"path": str(dest), "sha256": sha, "size": dest.stat().st_size}

    def has_blob(self, info: dict[str, Any]) -> bool:
        # One stat of the path string, as Path.exists would judge it: every cached instance
        # checks its files, and pathlib interns each path's every component.
        try:
            size = os.stat(info["path"]).st_size
        except OSError as exc:
            if exc.errno in _ABSENT:
                return False
            raise
        return bool(size == info.get("size", size))

    def clear_tmp(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self.tmp)


def malformed(ev: Any) -> str | None:
    """Why a decoded journal line is not an event this reader can apply, or None. Checked
    before anything of it is used, so a line of the wrong shape (`{}`, `123`, a missing key,
    `files: "x"`) is skipped like a torn one instead of stopping every later run."""
    if type(ev) is not dict:
        return f"a JSON {type(ev).__name__}, not an object"
    get = ev.get
    if type(get("v", 1)) is not int:
        return "'v' is not a number"
    e = get("e")
    if e not in EVENTS:
        return f"unknown event {e!r}" if isinstance(e, str) else "no event name 'e'"
    k = get("key")
    if type(k) is not str or not k:
        return "no 'key'"
    if type(get("step", "")) is not str:
        return "'step' is not text"
    if e == "done" or e == "first":
        if "outputs" not in ev:
            return "no 'outputs'"
        files = get("files", ())
        if type(files) not in (list, tuple):
            return "'files' is not a list of stored files"
        for f in files:
            if type(f) is not dict or type(f.get("path")) is not str or \
                    type(f.get("sha256")) is not str or type(f.get("size", 0)) is not int or \
                    ("stands_for" in f and not aliases.valid(f["stands_for"])):
                return "'files' is not a list of stored files"
        # Only what a reader relies on is checked: a line refused for a field nobody
        # reads (credits, say) would be a result paid for and then forgotten.
        ids = get("task_ids")
        if ids is not None and (type(ids) is not list or
                                any(type(i) not in (str, int) for i in ids)):
            return "'task_ids' is not a list of task ids"
    elif e == "submitted" and type(get("task_id")) not in (str, int):
        return "no 'task_id'"
    elif e == "intent" and type(get("attempt", 1)) is not int:
        return "'attempt' is not a number"
    return None


def _suffix(path: Path) -> str:
    return paths.file_suffix(path.name)
