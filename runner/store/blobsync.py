"""Stored files to and from the cache, by content: `PREFIX/blobs/<sha256><ext>`.

A push asks whether the cache has the file (one HEAD) and uploads it only when it does
not; a run remembers what it pushed, so each file costs at most one request per run once
the cache has it. A pull streams the object to a temporary file, checks its sha256 against
the recorded one and moves it into the store: a corrupt or foreign object is dropped,
never stored.

The cache is a convenience for files: when it cannot be reached, a run says so once and
goes on with its local store (re-downloading or re-making what it lacks, as without a
cache), and stops talking to it for files.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import anyio

from runner.store.cache import Cache, CacheError, Exists
from runner.store.journal import Store
from runner.store.lock import suffix


def blob_name(sha: str, ext: str) -> str:
    return f"blobs/{sha}{ext}"


class Blobs:
    def __init__(self, cache: Cache, store: Store, warn: Callable[[str], None]) -> None:
        self.cache, self.store, self.warn = cache, store, warn
        self.known: set[str] = set()  # names the cache is known to hold (pushed or seen)
        self.down: str | None = None  # why the cache is off for files, once it failed
        self.pulling: dict[str, anyio.Event] = {}  # sha256 -> set when its pull is over
        self.pushed = self.pulled = 0
        self.bytes_up = self.bytes_down = 0

    def _off(self, exc: CacheError) -> None:
        if self.down is None:
            self.down = str(exc)
            self.warn(f"{exc}; going on without the cache for files")

    async def push(self, files: Iterable[dict[str, Any]]) -> None:
        """Every one of these stored files into the cache, unless it has it already."""
        for f in files:
            if self.down is not None:
                return
            name = blob_name(f["sha256"], suffix(f["path"]))
            if name in self.known:
                continue
            # Claimed before the first await: two steps that carry the same file (a cover
            # image both takes share) push it once, not twice at the same moment.
            self.known.add(name)
            try:
                if await self.cache.head(name) is None:
                    if not self.store.has_blob(f):
                        continue  # nothing here to share (pulled later, or gone)
                    try:
                        # Create-only: another runner pushing the same file at the same
                        # moment is harmless (same name, same bytes); the first stands.
                        await self.cache.put(name, Path(f["path"]), create=True)
                    except Exists:
                        continue
                    self.pushed += 1
                    self.bytes_up += int(f.get("size") or 0)
            except CacheError as exc:
                self.known.discard(name)
                self._off(exc)
                return

    async def pull(self, files: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Fetch the stored files missing here from the cache; return those still missing
        (not in the cache, corrupt there, or the cache unreachable)."""
        still: list[dict[str, Any]] = []
        for f in files:
            # Steps that share a file (one song's track in its WAV and its video) may ask
            # for it at the same moment: the first fetches it, the others wait for that.
            busy = self.pulling.get(f["sha256"])
            if busy is not None:
                await busy.wait()
            if self.store.has_blob(f):
                continue
            if self.down is not None:
                still.append(f)
                continue
            self.pulling[f["sha256"]] = done = anyio.Event()
            try:
                if not await self._pull_one(f):
                    still.append(f)
            finally:
                done.set()
                del self.pulling[f["sha256"]]
        return still

    async def _pull_one(self, f: dict[str, Any]) -> bool:
        ext = suffix(f["path"])
        name = blob_name(f["sha256"], ext)
        self.store.tmp.mkdir(parents=True, exist_ok=True)
        # A name of its own: two steps may pull the same file at the same moment.
        tmp = self.store.tmp / f"pull-{f['sha256'][:16]}-{secrets.token_hex(6)}{ext}"
        try:
            if not await self.cache.get_file(name, tmp):
                return False
            info = await anyio.to_thread.run_sync(self.store.ingest, tmp)
        except CacheError as exc:
            self._off(exc)
            return False
        finally:
            tmp.unlink(missing_ok=True)
        if info["sha256"] != f["sha256"]:
            # Not what was recorded: keep it out of every step's outputs (it sits in the
            # store under its own hash, referenced by nothing, which `clean` removes).
            self.warn(f"cache {self.cache.url}: {name} does not hash to its name; ignored")
            return False
        self.known.add(name)
        self.pulled += 1
        self.bytes_down += info["size"]
        return True


def lock_files(data: dict[str, Any], store: Store) -> list[dict[str, Any]]:
    """Every file a lock references, as the store knows files ({path, sha256, size}),
    each once."""
    seen: dict[str, dict[str, Any]] = {}
    for entry in data["steps"].values():
        for f in entry.get("files", []):
            ext = f.get("ext", "")
            seen.setdefault(f["sha256"] + ext, {
                "path": str(store.blob_path(f["sha256"], ext)), "sha256": f["sha256"],
                "size": f["size"]})
    return list(seen.values())


class Progress:
    """`push`/`pull` progress: one line redrawn on a terminal, a line per tenth otherwise."""

    def __init__(self, verb: str, total: int) -> None:
        self.verb, self.total, self.n = verb, total, 0
        self.tty = sys.stderr.isatty()
        self._shown = -1

    def step(self, done_bytes: int) -> None:
        self.n += 1
        tenth = self.n * 10 // max(1, self.total)
        if self.tty or tenth != self._shown or self.n == self.total:
            self._shown = tenth
            end = "\r" if self.tty and self.n < self.total else "\n"
            print(f"{self.verb}: {self.n}/{self.total} files ({done_bytes / 1e6:.1f} MB "
                  "transferred)", end=end, file=sys.stderr, flush=True)
