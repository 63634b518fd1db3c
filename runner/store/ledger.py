"""Which recipes use a state directory, and which stored files `clean` may delete.

Recipes in one folder share `.sunoflow/` (and any recipes may share a `--state-dir`), so a
stored file may be the paid result of any of them. Every `run` registers its recipe and
lock in ``recipes.json`` (format 1) in the state directory; `clean` reads all of them and
deletes a file only when nothing that used the directory may still need it:

- a file any registered lock refers to is kept;
- a file the journal recorded after the oldest registered lock was last written is kept
  (a run that paid for it and then failed, or ran with --only, wrote no lock);
- when a registered recipe has no lock (never finished, or its lock was deleted) its
  files cannot be told from the others, so every file the journal records is kept, and
  clean says which recipe holds them back (`clean --forget RECIPE` drops it from the
  list); a state directory made before the list existed is treated the same way;
- everything else (superseded results, files of forgotten recipes, leftovers that no lock
  and no journal line names) is deleted.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner import paths
from runner.errors import StoreError
from runner.store.journal import malformed

FORMAT = 1
NAME = "recipes.json"


@dataclass(frozen=True)
class User:
    """A recipe that used the state directory, and its lock."""

    recipe: Path
    lock: Path


def _path(root: Path) -> Path:
    return root / NAME


def users(root: Path) -> list[User] | None:
    """The recipes registered in state directory `root`; None when it keeps no list (made
    by an older sunoflow, or never run)."""
    f = _path(root)
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StoreError(f"{f}: cannot read the list of recipes using this state directory "
                         f"({exc}); delete it only if you know no other recipe uses "
                         "the directory") from None
    entries = data.get("recipes") if isinstance(data, dict) else None
    if not isinstance(entries, list) or int(data.get("version", 0)) > FORMAT:
        raise StoreError(f"{f}: not a list of recipes this sunoflow can read")
    out = []
    for e in entries:
        if isinstance(e, dict) and isinstance(e.get("recipe"), str) and \
                isinstance(e.get("lock"), str):
            out.append(User(_resolve(root, e["recipe"], e.get("rel")),
                            _resolve(root, e["lock"], e.get("lock_rel"))))
    return out


def _resolve(root: Path, absolute: str, rel: Any) -> Path:
    """A registered path: relative to the state directory's parent when it was there (the
    folder may have moved with its `.sunoflow/`), else as it was recorded."""
    if isinstance(rel, str):
        return Path(os.path.normpath(root.parent / rel))
    return Path(absolute)


def _entry(root: Path, user: User) -> dict[str, str]:
    e = {"recipe": str(user.recipe), "lock": str(user.lock)}
    for name, p in (("rel", user.recipe), ("lock_rel", user.lock)):
        try:
            e[name] = p.relative_to(root.parent).as_posix()
        except ValueError:
            pass
    return e


def _write(root: Path, listed: list[User]) -> None:
    text = json.dumps({"version": FORMAT, "recipes": [_entry(root, u) for u in listed]},
                      indent=2) + "\n"
    try:
        paths.replace_text(_path(root), text, fsync=True)
    except OSError as exc:
        raise StoreError(f"cannot record this recipe in {_path(root)} ({exc.strerror}); "
                         "nothing was submitted") from None


def register(root: Path, recipe: Path, lock: Path) -> None:
    """Add a recipe to the state directory's list (before anything is paid, so that no
    result of it exists that `clean` does not know whose it is)."""
    me = User(Path(os.path.abspath(recipe)), Path(os.path.abspath(lock)))
    listed = users(root) or []
    if me in listed:
        return
    _write(root, [*listed, me])


# --- which lock the journal already holds whole ------------------------------------------
#
# Every run makes the store know what the lock records (runner.store.lock.seed); parsing the lock
# of 10,000 steps costs most of a resume. A finished run leaves a mark: the lock's sha256
# and the journal's size and mtime right after the lock was written from it. While both
# are unchanged, every key that lock records is `done` in the journal (the lock was
# derived from exactly those lines, and the journal only grows), so seeding it would add
# nothing and is skipped. Any change to either (a new lock from a pull, one more journal
# line, a deleted state directory) reads the lock again.

ABSORBED = "absorbed.json"


def journal_mark(root: Path) -> list[int] | None:
    try:
        st = (root / "journal.jsonl").stat()
    except FileNotFoundError:
        return None
    return [st.st_size, st.st_mtime_ns]


def absorbed(root: Path, lock_sha: str) -> bool:
    """Whether the journal holds, `done`, every key of the lock whose sha256 is `lock_sha`."""
    try:
        data = json.loads((root / ABSORBED).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    mark = journal_mark(root)
    return isinstance(data, dict) and mark is not None and \
        data.get(lock_sha) == mark


def absorb(root: Path, lock_sha: str) -> None:
    """Leave the mark for the lock just written (or found current) from this journal. A
    failure only costs the next run one read of the lock."""
    path = root / ABSORBED
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    if not isinstance(data, dict):
        data = {}
    mark = journal_mark(root)
    if mark is None or data.get(lock_sha) == mark:
        return
    data = {k: v for k, v in list(data.items())[-31:]}  # one per recipe, a few kept
    data[lock_sha] = mark
    try:
        paths.replace_text(path, json.dumps(data) + "\n")
    except OSError:
        pass


def forget(root: Path, recipe: Path) -> bool:
    """Drop a recipe from the list; whether it was there."""
    me = Path(os.path.abspath(recipe))
    listed = users(root) or []
    kept = [u for u in listed if u.recipe != me]
    if len(kept) == len(listed):
        return False
    _write(root, kept)
    return True


@dataclass(frozen=True)
class Verdict:
    path: Path
    delete: bool
    why: str


def decide(root: Path, named: User) -> tuple[list[Verdict], list[str]]:
    """Every stored file with whether clean deletes it and why; and the notes to print
    (recipes that hold files back)."""
    from runner.store import lock as locks

    listed = users(root)
    notes: list[str] = []
    everyone = list(listed or [])
    if named not in everyone:
        everyone.append(named)
    by_lock: dict[str, str] = {}  # sha256 -> the lock that refers to it
    lockless: list[User] = []
    cutoff: float | None = None  # the oldest lock write
    for u in everyone:
        try:
            data = locks.read(u.lock)
            mtime = u.lock.stat().st_mtime
        except StoreError:
            if u.lock.exists():
                raise
            lockless.append(u)
            continue
        cutoff = mtime if cutoff is None else min(cutoff, mtime)
        for sha in locks.referenced(data):
            by_lock.setdefault(sha, u.lock.name)
    recorded = _journal_files(root)
    keep_all = listed is None or bool(lockless)
    if listed is None:
        notes.append(f"{root} has no list of the recipes that use it (made by an older "
                     "sunoflow): keeping every file its journal records; run each recipe "
                     "once to register it")
    for u in lockless:
        notes.append(f"{u.recipe} used this state directory and has no lock ({u.lock.name}):"
                     " keeping every file the journal records, since its files cannot be "
                     f"told apart; `sunoflow clean --forget {u.recipe}` drops it from the "
                     "list")
    blobs = root / "blobs" / "sha256"
    out = []
    for f in sorted(blobs.rglob("*")) if blobs.exists() else []:
        if not f.is_file():
            continue
        sha = f.name[:64]
        if sha in by_lock:
            out.append(Verdict(f, False, f"referenced by {by_lock[sha]}"))
            continue
        rec = recorded.get(sha)
        if rec is not None and keep_all:
            out.append(Verdict(f, False, f"recorded by the journal (step {rec[1]}) while a "
                               "recipe without a lock uses this directory"))
        elif rec is not None and cutoff is not None and rec[0] >= cutoff:
            out.append(Verdict(f, False, f"recorded by the journal (step {rec[1]}) after the "
                               "oldest lock was written: perhaps a run that did not finish"))
        elif rec is not None:
            out.append(Verdict(f, True, f"not referenced by any of {len(everyone)} recipes' "
                               f"locks (last recorded for step {rec[1]}, before they were "
                               "written)"))
        else:
            out.append(Verdict(f, True, "no lock and no journal line refers to it"))
    return out, notes



@dataclass(frozen=True)
class Swept:
    removed: int  # files deleted (or, on a dry run, that would be)
    freed: int  # their bytes
    kept: int


def sweep(root: Path, named: User, *, dry_run: bool, say: Callable[[str], None],
          keep_copies: Callable[[list[Path]], set[Path]] | None = None) -> Swept:
    """`sunoflow clean`'s walk over the stored files: delete each one `decide` lets go
    (with `dry_run`, only say so). `say` is told the notes and, on a dry run, every
    file's verdict. `keep_copies` (clean --cache) is handed the files to delete and
    returns those a cache now holds: only these go. The caller holds the state
    directory's lock (runner.store.journal.Store.lock): a run must not record or read a
    file while it is deleted."""
    verdicts, notes = decide(root, named)
    if keep_copies is not None and not dry_run:
        # --cache: a file goes only once the cache holds it (pushed now if need be).
        held = keep_copies([v.path for v in verdicts if v.delete])
        verdicts = [v if not v.delete or v.path in held else
                    Verdict(v.path, False, "the cache could not take it")
                    for v in verdicts]
    for note in notes:
        say(f"note: {note}")
    removed = freed = kept = 0
    for v in verdicts:
        if not v.delete:
            kept += 1
            if dry_run:
                say(f"keep {v.path}: {v.why}")
            continue
        removed += 1
        freed += v.path.stat().st_size
        if dry_run:
            say(f"would delete {v.path}: {v.why}")
        else:
            v.path.unlink()
    return Swept(removed, freed, kept)

def _journal_files(root: Path) -> dict[str, tuple[float, str]]:
    """sha256 -> (when last recorded, by which step) for every file a journal line names."""
    out: dict[str, tuple[float, str]] = {}
    for ev in _events(root / "journal.jsonl"):
        if ev["e"] not in ("done", "first"):
            continue
        t = ev.get("t")
        when = float(t) if isinstance(t, (int, float)) else float("inf")
        for f in ev.get("files", []):
            prev = out.get(f["sha256"])
            if prev is None or when >= prev[0]:
                out[f["sha256"]] = (when, ev.get("step", ""))
    return out


def _events(path: Path) -> Iterator[dict[str, Any]]:
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return
    with f:
        for raw in f:
            try:
                ev = json.loads(raw)
            except ValueError:
                continue
            if malformed(ev) is None:
                yield ev
