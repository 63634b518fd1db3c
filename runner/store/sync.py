"""`sunoflow push` / `pull`, and what `status` and `clean` do with a cache.

`push RECIPE` puts every file the recipe's lock references into the cache, with the lock's
records of its steps (``done/<key>.json``), so a machine that has only the recipe and the
cache can rebuild the album; `pull RECIPE` fetches every such file this machine lacks
into its state directory. Both say how far they are as they go (like `dvc push`/`pull`),
and a second run costs one existence check per file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio

from runner.errors import UsageError
from runner.store import lock
from runner.store.blobsync import Blobs, Progress, lock_files
from runner.store.cache import Cache, CacheError, open_cache
from runner.store.journal import Store


def _lock_of(recipe_path: Path) -> dict[str, Any]:
    lock_path = lock.path_for(recipe_path)
    if not lock_path.exists():
        raise UsageError(f"no lock file {lock_path}: run the recipe first (push and pull "
                         "move the files its lock references)")
    return lock.read(lock_path)


def _fail(exc: CacheError) -> CacheError:
    return CacheError(f"{exc}; nothing more was transferred")


def push(recipe_path: Path, state: Path, url: str) -> int:
    data = _lock_of(recipe_path)
    store = Store(state).open(create=False)
    cache = open_cache(url)
    files = lock_files(data, store)
    here = [f for f in files if store.has_blob(f)]
    absent = len(files) - len(here)
    blobs = Blobs(cache, store, warn=lambda s: None)
    progress = Progress("push", len(here))

    async def go() -> int:
        from runner.store.claims import Ledger

        for f in here:
            await blobs.push([f])
            if blobs.down is not None:
                raise _fail(CacheError(blobs.down))
            progress.step(blobs.bytes_up)
        ledger = Ledger(cache, "push")
        return sum([await ledger.finish(_entry(iid, e)) is None
                    for iid, e in data["steps"].items() if e.get("key")])

    records = anyio.run(go)
    print(f"pushed {blobs.pushed} of {len(here)} files to {cache.url} ({blobs.bytes_up / 1e6:.1f}"
          f" MB; the others were there already), {records} new step records"
          + (f"; {absent} files the lock references are not in {state}" if absent else ""))
    return 1 if absent else 0


def _entry(iid: str, e: dict[str, Any]) -> dict[str, Any]:
    """A lock entry as the cache's ``done`` record (the same fields, runner.store.ledger)."""
    from runner.store.claims import entry_version

    files = [{k: f[k] for k in ("field", "sha256", "size", "ext", "url", "stands_for")
              if k in f} for f in e.get("files", [])]
    return {"v": entry_version(files), "key": e["key"], "step": iid,
            "task_ids": list(e.get("task_ids") or []), "credits": e.get("credits"),
            "outputs": e.get("outputs"), "files": files}


def pull(recipe_path: Path, state: Path, url: str) -> int:
    data = _lock_of(recipe_path)
    store = Store(state).open()
    cache = open_cache(url)
    files = lock_files(data, store)
    want = [f for f in files if not store.has_blob(f)]
    blobs = Blobs(cache, store, warn=lambda s: None)
    progress = Progress("pull", len(want))

    async def go() -> list[dict[str, Any]]:
        missing: list[dict[str, Any]] = []
        for f in want:
            missing += await blobs.pull([f])
            if blobs.down is not None:
                raise _fail(CacheError(blobs.down))
            progress.step(blobs.bytes_down)
        return missing

    missing = anyio.run(go)
    print(f"pulled {blobs.pulled} files from {cache.url} ({blobs.bytes_down / 1e6:.1f} MB); "
          f"{len(files) - len(want)} were here already"
          + (f"; {len(missing)} are not in the cache (`sunoflow run` re-downloads or "
             "re-makes them)" if missing else ""))
    return 1 if missing else 0


def prefetch(recipe_path: Path, state: Path, url: str) -> None:
    """`review --cache`: pull what the lock references before the page plays it; the page
    works without (a take it cannot find is shown as missing), so failures only warn."""
    import sys

    try:
        pull(recipe_path, state, url)
    except (CacheError, UsageError) as exc:
        print(f"sunoflow: {exc}; reviewing what is here", file=sys.stderr)


def status_rows(plan: Any, store: Store, cache: Cache) -> dict[str, dict[str, Any]]:
    """`status --cache`: the store as the cache completes it (nothing written here):
    finished keys the cache records count as done, and a done step whose files are missing
    here but present in the cache is ``in cache``."""
    from runner.store.blobsync import blob_name
    from runner.store.claims import Ledger, seed
    from runner.store.status import resolve

    async def go() -> dict[str, dict[str, Any]]:
        await seed(Ledger(cache, "status"), plan, store, persist=False)
        rows = resolve(plan, store)
        for row in rows.values():
            if row["status"] == "missing":
                st = store.states[row["key"]]
                gone = [f for f in st.files if not store.has_blob(f)]
                if all([await cache.head(blob_name(f["sha256"], lock.suffix(f["path"])))
                        for f in gone]):
                    row["status"] = "in cache"
        return rows

    return anyio.run(go)


def keep_copies(files: list[Path], url: str) -> set[Path]:
    """`clean --cache`: push each file about to be deleted unless the cache has it; return
    the files that are safe to delete (in the cache now). The cache itself is never
    cleaned: other machines and recipes share it (expire it with the bucket's rules)."""
    cache = open_cache(url)

    async def go() -> set[Path]:
        safe: set[Path] = set()
        for f in files:
            sha, ext = f.name[:64], lock.suffix(str(f))
            name = f"blobs/{sha}{ext}"
            try:
                if await cache.head(name) is None:
                    await cache.put(name, f)
            except CacheError as exc:
                print(f"sunoflow: {exc}; the remaining files are kept")
                break
            safe.add(f)
        return safe

    return anyio.run(go)
