"""The lock file, `NAME.lock` beside `NAME.yaml`: the record that makes an album rebuildable.

The music service is not deterministic, so reproducibility comes from a record: for every
step instance, its key (what was asked), the provider and model, the task ids that
answered, the result ids and durations, the take kept, the credits reported, and the
sha256, size and source URL of every file. Outputs are stored with file paths replaced by
``sha256:<hash><ext>``, so the lock is independent of where the state directory lives.

The lock is deterministic: instances in plan order, keys in a fixed order, no timestamps;
two runs that did the same work write the same bytes. Every run seeds the state store
from it (store.record "done"; runner.cli.run), so a fresh checkout re-downloads or re-makes
every file and checks it against the recorded hash, without submitting anything paid:
the lock is the ledger of what was paid for.

Format 2 adds one field to a file's entry, ``stands_for`` (runner.store.aliases): the file
was obtained again as other bytes than recorded, and stands for the recorded file in the
keys of the steps that read it. A lock is written as format 2 only when an entry has one,
so every other lock stays format 1, readable by an older sunoflow; an older sunoflow
refuses a format 2 lock ("written by a newer sunoflow") rather than ignore the field,
which would re-key, and so pay for, the steps that read such a file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from runner.errors import StoreError
from runner.paths import fresh_file
from runner.plan.model import Plan
from runner.steps.models import is_local_task
from runner.store import aliases, yamlout
from runner.store.journal import Store

FORMAT = 2  # the newest format this sunoflow reads and writes
PLAIN = 1  # what a lock without ``stands_for`` is written as: any sunoflow reads it
HEADER = ("# sunoflow lock file: what every step's work answered, and the hash of every file.\n"
          "# Written by `sunoflow run`; commit it. `sunoflow run --frozen` rebuilds the album\n"
          "# from it without paying for anything.\n")


def path_for(recipe_path: Path) -> Path:
    return recipe_path.with_suffix(".lock")


def suffix(path: str) -> str:
    """`Path(path).suffix` of a stored file's path, without pathlib, which interns every
    component of every path it parses: the lock of 1,000 songs left megabytes in the
    interpreter's table of interned strings."""
    name = next((c for c in reversed(path.split("/")) if c not in ("", ".")), "")
    i = name.rfind(".")
    return name[i:] if 0 < i < len(name) - 1 else ""


def _ref(value: Any, by_path: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _ref(v, by_path) for k, v in value.items()}
    if isinstance(value, list):
        return [_ref(v, by_path) for v in value]
    if isinstance(value, str):
        if value in by_path:
            return by_path[value]
        if "/blobs/sha256/" in value:
            # A stored file this step carries from upstream (a source track's artwork).
            return "sha256:" + value.rsplit("/", 1)[-1]
    return value


def _unref(value: Any, store: Store) -> Any:
    if isinstance(value, dict):
        return {k: _unref(v, store) for k, v in value.items()}
    if isinstance(value, list):
        return [_unref(v, store) for v in value]
    if isinstance(value, str) and value.startswith("sha256:") and len(value) >= 71:
        sha, ext = value[7:71], value[71:]
        return str(store.blob_path(sha, ext))
    return value


Kept = dict[str, Any]  # instance id -> its entry in the lock as it was (`write`'s `keep`)


def build(plan: Plan, records: dict[str, Any], store: Store,
          keep: Kept | None = None) -> dict[str, Any]:
    """The whole lock as data (`write` streams the same, an entry at a time)."""
    return {**_head(plan, records, store, keep),
            "steps": dict(_entries(plan, records, store, keep))}


def _head(plan: Plan, records: dict[str, Any], store: Store,
          keep: Kept | None = None) -> dict[str, Any]:
    return {"version": _version(plan, records, store, keep), "recipe": plan.recipe.path.name,
            "provider": {"kind": plan.recipe.provider.kind,
                         "base_url": plan.recipe.provider.base_url}}


def _version(plan: Plan, records: dict[str, Any], store: Store,
             keep: Kept | None = None) -> int:
    """FORMAT when an entry's file stands for another, else PLAIN (the lock is streamed:
    its head is written before its entries)."""
    files = [f for _iid, st in _done(plan, records, store) for f in st.files]
    files += [f for e in (keep or {}).values() if isinstance(e, dict)
              for f in e.get("files") or () if isinstance(f, dict)]
    return FORMAT if any(f.get("stands_for") for f in files) else PLAIN


def _done(plan: Plan, records: dict[str, Any], store: Store) -> Iterator[tuple[str, Any]]:
    """Every finished step instance with its journal state, in plan order."""
    for iid in plan.instances:
        rec = records.get(iid)
        if rec is None or rec.key is None or rec.status not in ("succeeded", "cached"):
            continue
        st = store.states.get(rec.key)
        if st is None or st.status != "done":
            continue
        yield iid, st


def _entries(plan: Plan, records: dict[str, Any], store: Store,
             keep: Kept | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every finished step instance's entry, in plan order; with `keep`, an instance this
    run did not finish keeps its entry there (a run that stopped early)."""
    done = dict(_done(plan, records, store))
    for iid in plan.instances:
        st = done.get(iid)
        if st is None:
            if keep is not None and isinstance(keep.get(iid), dict):
                yield iid, keep[iid]
            continue
        rec = records[iid]
        inst = plan.instances[iid]
        by_path = {f["path"]: f"sha256:{f['sha256']}{suffix(f['path'])}" for f in st.files}
        outputs = st.outputs
        remote = bool(st.task_ids) and not is_local_task(st.task_ids[0])
        entry: dict[str, Any] = {
            "key": rec.key,
            "uses": inst.step.uses,
            "provider": plan.recipe.provider.kind if remote else "local",
        }
        model = plan.static_value(inst, "model")
        tracks = outputs.get("tracks") if isinstance(outputs, dict) else None
        if isinstance(tracks, list) and tracks and isinstance(tracks[0], dict):
            model = tracks[0].get("model") or model
            entry["results"] = [{"id": t.get("id"), "duration": t.get("duration")}
                                for t in tracks if isinstance(t, dict)]
        if isinstance(model, str):
            entry["model"] = model
        if st.task_ids and remote:
            entry["task_ids"] = list(st.task_ids)
        if inst.step.take != "both":
            entry["take"] = inst.step.take
        if st.credits is not None:
            entry["credits"] = st.credits
        entry["files"] = [file_entry(f)
                          for f in sorted(st.files, key=lambda f: f.get("field", ""))]
        entry["outputs"] = _ref(outputs, by_path)
        yield iid, entry


def file_entry(f: dict[str, Any]) -> dict[str, Any]:
    """A stored file as the lock (and the shared cache) records it: by content, wherever
    the state directory is."""
    return {"field": f.get("field", ""), "sha256": f["sha256"], "size": f["size"],
            "ext": suffix(f["path"]), **({"url": f["url"]} if f.get("url") else {}),
            **({"stands_for": f["stands_for"]} if f.get("stands_for") else {})}


def stored_file(store: Store, f: dict[str, Any]) -> dict[str, Any]:
    """A file entry of the lock (or of the shared cache) as a file of this store; raises
    KeyError, TypeError or AttributeError for one not as sunoflow writes it."""
    ref = f.get("stands_for")
    if ref is not None and not aliases.valid(ref):
        raise TypeError("stands_for")
    return {"path": str(store.blob_path(f["sha256"], f.get("ext", ""))),
            "sha256": f["sha256"], "size": f["size"], "field": f.get("field", ""),
            **({"url": f["url"]} if f.get("url") else {}),
            **({"stands_for": ref} if ref else {})}


def dumps(data: dict[str, Any]) -> str:
    return HEADER + yamlout.dumps(data)


def write(path: Path, plan: Plan, records: dict[str, Any], store: Store,
          keep: Kept | None = None) -> bool:
    """Write the lock atomically; return True when the content changed. It is written an
    entry at a time: a lock lists every instance, and built whole (with its text) it was
    the largest thing a run held in memory. The same bytes as `dumps(build(...))`.
    `keep`: the entries of the lock as it was, for the instances this run did not finish
    (a run that failed, was interrupted or ran `--only` steps: what it paid for is
    recorded, and nothing the lock recorded is lost)."""
    # Through a fresh name: a `NAME.lock` link committed beside the recipe is replaced,
    # never written through.
    fd, tmp = fresh_file(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(HEADER + yamlout.dumps(_head(plan, records, store, keep)))
            empty = True
            for iid, entry in _entries(plan, records, store, keep):
                if empty:
                    f.write("steps:\n")
                    empty = False
                piece: list[str] = []
                yamlout.dump({iid: entry}, piece.append, "  ")
                f.write("".join(piece))
            if empty:
                f.write("steps: {}\n")
            f.flush()
            if _same(path, tmp):
                return False
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def _same(a: Path, b: Path) -> bool:
    """Whether two files hold the same bytes (False when `a` cannot be read)."""
    try:
        fa = a.open("rb")
    except OSError:
        return False
    with fa, b.open("rb") as fb:
        while True:
            x, y = fa.read(1 << 16), fb.read(1 << 16)
            if x != y:
                return False
            if not x:
                return True


def read(path: Path) -> dict[str, Any]:
    try:
        data = yaml.load(path.read_text(encoding="utf-8"),
                         Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (OSError, yaml.YAMLError) as exc:
        raise StoreError(f"{path}: cannot read the lock file: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("steps"), dict):
        raise StoreError(f"{path}: not a sunoflow lock file")
    if int(data.get("version", 0)) > FORMAT:
        raise StoreError(f"{path}: written by a newer sunoflow (lock format "
                         f"{data.get('version')})")
    return data


def made_at(path: Path) -> tuple[str, str | None] | None:
    """The provider, (kind, base URL), that the lock at `path` was written for, read from its
    head alone (the lines before `steps:`, so that a lock of 10,000 steps is not parsed for
    it). None when there is no readable lock or its head does not say."""
    head: list[str] = []
    try:
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("steps:"):
                    break
                head.append(line)
        data = yaml.safe_load("".join(head))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    prov = data.get("provider") if isinstance(data, dict) else None
    if not isinstance(prov, dict) or not isinstance(prov.get("kind"), str):
        return None
    base = prov.get("base_url")
    return prov["kind"], base if isinstance(base, str) else None


def paid_elsewhere(path: Path, kind: str, base_url: str | None
                   ) -> tuple[tuple[str, str | None], set[str]] | None:
    """When the lock at `path` was written for another provider than (`kind`, `base_url`):
    that provider, and the step instances the lock records as paid work there (the entries
    of a remote provider). Keys name the provider and its base URL (runner.plan.keys), so
    at this one none of that work is known, and all of it would be paid for again. None
    when the lock was written for this provider, records nothing paid, or cannot tell."""
    at = made_at(path)
    if at is None or at == (kind, base_url):
        return None
    paid = {iid for iid, e in read(path)["steps"].items()
            if isinstance(e, dict) and e.get("provider") not in (None, "local")}
    return (at, paid) if paid else None


def where(kind: str, base_url: str | None) -> str:
    """A provider as messages name it: `sunoapi at https://api.sunoapi.org`, `the local
    provider`."""
    if kind == "local":
        return "the local provider"
    return f"{kind} at {base_url}" if base_url else f"{kind} (no base URL)"


def seed(store: Store, data: dict[str, Any]) -> int:
    """Make the store know every locked result; return how many were added. Files are not
    fetched here: the engine re-downloads (by URL, or through the provider by task id) or
    re-makes whatever is missing, and checks each against its recorded sha256.

    The journal wins where it knows more: a ``done`` it holds is newer than or equal to
    the lock's, and a ``submitted`` task (a --force rerun that was stopped) is a paid task
    the next run must poll, not replace with the older locked result. Any other state
    (intent, uncertain, failed) gives way to the lock: its result was paid for and is
    taken instead of submitting again."""
    added = 0
    for iid, entry in data["steps"].items():
        k = entry.get("key") if isinstance(entry, dict) else None
        if not k or not isinstance(k, str):
            continue
        st = store.states.get(k)
        if st is not None and st.status in ("done", "submitted"):
            continue
        try:
            files = [stored_file(store, f) for f in entry.get("files", [])]
        except (KeyError, TypeError, AttributeError):
            # Refused rather than skipped: a skipped entry would be paid for again.
            raise StoreError(f"lock entry {iid}: its files are not as sunoflow writes them; "
                             "restore the lock from version control") from None
        task_ids = entry.get("task_ids") or []
        store.record("done", k, iid, durable=False, outputs=_unref(entry.get("outputs"), store),
                     files=files, task_ids=task_ids, credits=entry.get("credits"))
        added += 1
    store.sync()
    return added


def reading(store: Store, recipe_path: Path) -> Store:
    """`store` (made readonly) opened for reading, knowing also what the recipe's lock
    records, as a run would (`seed`): so `status` and `plan` say what a run would pay for
    even with the state directory gone. Nothing is written."""
    store.open(create=False)
    lock_path = path_for(recipe_path)
    if lock_path.is_file() and not lock_path.is_symlink():  # as a run reads it
        seed(store, read(lock_path))
    return store


def referenced(data: dict[str, Any]) -> set[str]:
    """The sha256 of every file the lock records. A lock not as sunoflow writes it is
    refused: `clean` must not delete what a damaged lock may still refer to."""
    try:
        return {str(f["sha256"]) for e in data["steps"].values() for f in e.get("files", [])}
    except (KeyError, TypeError, AttributeError):
        raise StoreError(f"{data.get('recipe', 'a lock')}: its files are not as sunoflow "
                         "writes them; restore the lock from version control") from None
