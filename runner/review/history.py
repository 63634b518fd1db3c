"""What the journal says happened, event by event: every result a key has had (a reroll's
old takes stay listenable) and the times the timeline draws. Read-only; a torn or
malformed line is skipped, as the store does (runner.store.journal)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class KeyHistory:
    key: str
    step: str = ""
    results: list[dict[str, Any]] = field(default_factory=list)  # every ``done``, oldest first
    events: list[dict[str, Any]] = field(default_factory=list)  # intent/submitted/first/failed
    status: str = "new"  # as the store would say: the last event's

    @property
    def generation(self) -> int:
        """How many results this key has had: a form made for an older one is stale."""
        return len(self.results)


@dataclass
class History:
    keys: dict[str, KeyHistory] = field(default_factory=dict)
    last_run: float | None = None  # the latest run that did work (its start, epoch s)
    size: int = 0  # bytes of journal read: a cheap "did anything change" for the live view

    def of(self, key: str | None) -> KeyHistory | None:
        return self.keys.get(key) if key else None


def read(journal: Path) -> History:
    h = History()
    try:
        raw = journal.read_bytes()
    except FileNotFoundError:
        return h
    h.size = len(raw)
    for line in raw.split(b"\n")[:-1]:  # the part after the last newline is a torn write
        try:
            ev = json.loads(line)
            key, e = ev["key"], ev["e"]
        except (ValueError, KeyError, TypeError):
            continue
        kh = h.keys.get(key)
        if kh is None:
            kh = h.keys[key] = KeyHistory(key)
        kh.step = ev.get("step", kh.step)
        if e == "forget":
            del h.keys[key]
            continue
        run = (ev.get("times") or {}).get("run") if e == "done" else ev.get("run")
        if isinstance(run, (int, float)) and (h.last_run is None or run > h.last_run):
            h.last_run = float(run)
        if e == "done":
            kh.results.append(ev)
        else:
            kh.events.append(ev)
        kh.status = e if e in ("intent", "submitted", "uncertain", "done", "failed") \
            else kh.status
    return h
