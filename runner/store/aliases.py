"""Other bytes for a recorded result: a stored file that stands for the one a step recorded.

A finished step whose stored files are gone is restored, never paid for again (runner.engine,
rules 1 and 10): from its recorded URL, the service's fresh links for the same task id, or,
for a local step, by making it again. That can give *other bytes* than the journal or the
lock recorded: the service's recovery hands a song back as `.m4a` where an `.mp3` was
recorded, and a local step made again from such a file writes other bytes too. A stored
file enters a key by its content (runner.plan.keys.canonical), so every step that reads the
new file would get a new key, and a paid one among them would be paid for again.

Such a step keeps its recorded outputs instead (`swap`): each file whose bytes changed is
pointed at its new bytes, and the new file's entry says which recorded file it stands for,
``"stands_for": "sha256:<hash><ext>"`` (always the first recorded file: a file re-obtained
twice stands for the original, never for the one in between). Keys read a stored file
through what it stands for, so the steps that read it render the same inputs as before
apart from that path, hence the keys the journal and the lock recorded, and are restored,
not submitted. No key of an existing entry changes, and KEY_VERSION does not either.

The alias lives in the file's entry, wherever the entry goes: the journal's ``done``
(event version 3), the lock (format 2) and the shared cache's ``done`` record (version 2).
A reader that would ignore it would re-key, and so pay for, the steps that read the file,
so an older sunoflow refuses the journal line and the lock ("from a newer sunoflow"); it
does not read the cache record's version (runner.store.claims.entry_version), but it also
reads the lock first, which it refuses.
`clean` needs nothing more: the new file is referenced by the entry like any other, and
the recorded one is gone already.

Files are matched by the take they belong to (its id), not by their place in the list, so
a result that lists the takes in another order (the first take pinned by rule 7, say) swaps
each take's file for its own. A recorded file the new result lacks (artwork the service's
recovery does not return) keeps its record, as it does when the other files come back as
the same bytes. The one swap refused is one that cannot tell two new files apart (two at
the same take and name): the step then takes the new result as it is and its readers get
new keys; `--frozen` names them, and a plain run would pay for them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

REF = "sha256:"
_NAME_MIN = 64  # a stored name: the sha256 in hex, then the file's suffix


def name(path: str) -> str:
    """The stored name (`<sha256><ext>`) of a stored file's path: what a key sees."""
    return path.rsplit("/", 1)[-1]


def valid(ref: Any) -> bool:
    """Whether `ref` is a ``stands_for`` as sunoflow writes it."""
    return type(ref) is str and ref.startswith(REF) and len(ref) >= len(REF) + _NAME_MIN


def pairs(files: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
    """(stored name, the recorded stored name it stands for) for each file that stands for
    another: the entries of the store's alias table."""
    for f in files:
        ref = f.get("stands_for")
        if ref:
            yield name(f["path"]), ref[len(REF):]


@dataclass(frozen=True, slots=True)
class Swapped:
    outputs: Any
    files: list[dict[str, Any]]
    changed: int  # how many files now stand for a recorded one they are not


def swap(outputs: Any, files: list[dict[str, Any]], new_outputs: Any,
         new_files: list[dict[str, Any]]) -> Swapped | None:
    """A recorded result (`outputs`, `files`) obtained again as (`new_outputs`,
    `new_files`): the recorded outputs, each file whose stored name changed pointed at the
    new one, and the files, each changed one with ``stands_for``. A file is matched by its
    place (`_place`: the take it belongs to, wherever the new result lists that take);
    None when a place holds two new files (they cannot be told apart)."""
    held = _held(new_outputs)
    fresh: dict[tuple[Any, str], dict[str, Any] | None] = {}
    for n in new_files:
        place = _place(new_outputs, n, held)
        fresh[place] = None if place in fresh and fresh[place] != n else n
    held = _held(outputs)
    moved: dict[str, str] = {}  # recorded path -> new path
    kept: list[dict[str, Any]] = []
    for f in files:
        place = _place(outputs, f, held)
        if place not in fresh:
            kept.append(f)  # not given again: the record stays (as with the same bytes)
            continue
        g = fresh[place]
        if g is None:
            return None
        if name(g["path"]) == name(f["path"]):
            kept.append(f)  # the same bytes: the record, and what it stands for, stay
            continue
        moved[f["path"]] = g["path"]
        kept.append({**g, "field": f.get("field", ""),
                     "stands_for": f.get("stands_for") or REF + name(f["path"])})
    return Swapped(_moved(outputs, moved) if moved else outputs, kept, len(moved))


def _place(outputs: Any, f: dict[str, Any], held: dict[str, tuple[Any, str]]
           ) -> tuple[Any, str]:
    """Where file `f` sits in `outputs`, as a record and a new result of the same task are
    matched: (the `id` of the object that holds it, its name there), so that a take the
    service now lists in another order is still the same take (`tracks.1.file` of clip X:
    `(X, "file")`). A file found where no holder has an id (`file` at the top, found
    before `tracks.0.file`) is placed where its path is held by one (`held`), else by its
    field (a stem: `(None, "stems.vocals.file")`)."""
    field = f.get("field", "")
    holder, value = None, outputs
    parts = field.split(".") if field else []
    for part in parts:
        if isinstance(value, dict):
            holder, value = value, value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            holder = None
            break
    ident = holder.get("id") if isinstance(holder, dict) else None
    if ident is not None:
        return ident, parts[-1]
    return held.get(f["path"], (None, field))


def _held(outputs: Any) -> dict[str, tuple[Any, str]]:
    """Each string of `outputs` held by an object with an `id`: (that id, its name there),
    the first such place of each."""
    found: dict[str, tuple[Any, str]] = {}

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            ident = value.get("id")
            for k, v in value.items():
                if ident is not None and isinstance(v, str):
                    found.setdefault(v, (ident, str(k)))
                else:
                    walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(outputs)
    return found


def _moved(value: Any, moved: dict[str, str]) -> Any:
    if isinstance(value, str):
        return moved.get(value, value)
    if isinstance(value, dict):
        return {k: _moved(v, moved) for k, v in value.items()}
    if isinstance(value, list):
        return [_moved(v, moved) for v in value]
    return value
