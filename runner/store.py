"""The state directory: the journal of every step, and the content-addressed file store.

Layout (format version 1)::

    .sunoflow/
      VERSION                  "1"; a newer number is refused, never rewritten
      journal.jsonl            append-only events, one JSON object a line
      blobs/sha256/ab/<sha>.<ext>   every downloaded or produced file, by content
      tmp/                     partial downloads and scratch work (safe to delete)
      lock                     held (flock) by the one run using this directory

Journal events, per step key (see plan.key): ``intent`` (about to submit, attempt n),
``submitted`` (the service's task id), ``uncertain`` (a submit whose answer was lost),
``first`` (a music task's first track, ready before the second; the steps that read only
that track have started from it), ``done`` (outputs, with the sha256 and size of every
file), ``failed``.

Durability rule: ``intent`` and ``submitted`` are flushed and fsynced before the engine
goes on, because they are what proves a task was paid for. A ``done`` of a local step may
be lost in a crash at no cost (the work is free and deterministic), so those are synced in
batches. A torn last line (a kill -9 mid-write) is ignored when reading.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.errors import StoreError

FORMAT = 1
# Events a reader must understand to be safe carry a higher "v": an older sunoflow that
# meets one stops with "event from a newer sunoflow" instead of ignoring it. ``first``
# pins a step's first track (runner.engine, early release): ignoring it could re-key the
# steps started from that track, and so pay for them twice.
EVENT_VERSION = {"first": 2}
READS = 2  # the highest event version this sunoflow understands
SYNC_EVERY = 0.2  # seconds between batched fsyncs of non-critical events
HASH_CHUNK = 1 << 16  # bytes read at a time when hashing a file
INTERN_UP_TO = 256  # characters: longer strings (lyrics, say) are seldom repeated


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
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs" / "sha256"
        self.tmp = root / "tmp"
        self.journal_path = root / "journal.jsonl"
        self.states: dict[str, KeyState] = {}
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._last_sync = 0.0
        self._dirty = False
        self._write_lock = threading.Lock()  # records may come from worker threads

    # --- opening -------------------------------------------------------------------

    def open(self, *, create: bool = True) -> Store:
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

    def lock(self) -> None:
        """One run per state directory: a second concurrent run would submit the same work."""
        self._lock_fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreError(f"another sunoflow run is using {self.root}; wait for it to "
                             "finish (two runs on one state directory could pay twice)") from None

    def load(self) -> None:
        self.states.clear()
        if not self.journal_path.exists():
            return
        with self.journal_path.open("rb") as f:
            for raw in f:
                if not raw.endswith(b"\n"):
                    break  # torn last write: the event never happened
                try:
                    ev = json.loads(raw)
                except ValueError:
                    continue
                if ev.get("v", 1) > READS:
                    raise StoreError(f"{self.journal_path}: event from a newer sunoflow")
                if ev.get("e") == "done":
                    ev["outputs"] = compact(ev.get("outputs"))
                    ev["files"] = compact(ev.get("files", []))
                self._apply(ev)

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
            fd = os.open(self.journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            size = os.fstat(fd).st_size
            if size:
                with self.journal_path.open("rb") as f:
                    f.seek(size - 1)
                    if f.read(1) != b"\n":
                        os.write(fd, b"\n")  # finish a torn line so ours starts clean
            self._fd = fd
        return self._fd

    def record(self, event: str, key: str, step: str, *, durable: bool = True,
               **data: Any) -> None:
        ev = {"v": EVENT_VERSION.get(event, FORMAT), "e": event, "key": key, "step": step,
              "t": round(time.time(), 3), **data}
        line = (json.dumps(ev, separators=(",", ":"), default=str) + "\n").encode()
        with self._write_lock:
            fd = self._open_journal()
            os.write(fd, line)
            self._apply(ev)
            now = time.monotonic()
            if durable or now - self._last_sync > SYNC_EVERY:
                os.fsync(fd)
                self._last_sync, self._dirty = now, False
            else:
                self._dirty = True

    def sync(self) -> None:
        if self._fd is not None and self._dirty:
            os.fsync(self._fd)
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
        h = hashlib.sha256()
        # Into one small buffer: `read(1 << 20)` allocated a megabyte for every file being
        # hashed, a 4 KB image too, in each of the worker threads doing it.
        buf = bytearray(HASH_CHUNK)
        view = memoryview(buf)
        with path.open("rb", buffering=0) as f:
            while n := f.readinto(buf):
                h.update(view[:n])
        sha = h.hexdigest()
        dest = self.blob_path(sha, _suffix(path))
        if dest.exists():
            if move:
                path.unlink(missing_ok=True)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            if move:
                os.replace(path, dest)
            else:
                tmp = dest.with_name(dest.name + ".part")
                shutil.copyfile(path, tmp)
                os.replace(tmp, dest)
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


def _suffix(path: Path) -> str:
    s = path.suffix.lower()
    return s if s and len(s) <= 6 and s[1:].isalnum() else ""
