"""Stream previews: the links a running task offers to listen to its takes as they are
made (sunoapi's `streamAudioUrl`), kept in the state directory for `sunoflow review`.

`STATE_DIR/previews.json`, version 1:

    {"v": 1, "tasks": {TASK_ID: {"step": "song[1]", "key": KEY, "t": EPOCH,
                                 "tracks": [{"n": 0, "id": ..., "title": ...,
                                             "stream_url": "https://..."}]}}}

The engine writes it (atomic replace) whenever a task's links change, and forgets a task
once its poll ends: the file then loses that task's entry too (written by `keep`, which the
engine runs beside its steps: the forgets of one moment make one write, never fsynced), and
is removed once no task is left (`close`, at the end of every run, so a finished run, or
one that offered no streams, leaves no previews behind). The review page reads it. It is
not the journal and decides nothing: what is paid, done or resubmitted is the journal's
alone (runner.engine), so losing or spoiling this file loses only previews. Links are
http(s) only (the provider checks; the reader checks again) and are never fetched by
sunoflow: the page's player points at them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import anyio

from runner import paths

FILE = "previews.json"
VERSION = 1
MAX_BYTES = 4 << 20  # a file larger than this is not ours to read whole


class Previews:
    """The run's previews: only tasks polled in this run, so the file stays as small as
    the work in flight."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILE
        self.tasks: dict[str, dict[str, Any]] = {}
        self.lock = anyio.Lock()
        self.broken = False  # a write failed (a full disk): previews are not worth a retry
        self.dirty = False  # a task was forgotten since the last write
        self._wake: anyio.Event | None = None  # set by `forget` while `keep` runs

    async def note(self, step: str, key: str, task_id: str, streams: Any) -> None:
        """Record a running task's links (a runner.providers.Streams); written only when
        they changed, so a task polled ten times writes once."""
        tracks = [dict(t) for t in getattr(streams, "tracks", ()) or ()]
        old = self.tasks.get(task_id)
        if not tracks or (old is not None and old["tracks"] == tracks):
            return
        self.tasks[task_id] = {"step": step, "key": key, "t": time.time(), "tracks": tracks}
        await self._save()

    def forget(self, task_id: str) -> None:
        """The task's poll ended (its takes arrived, it failed, or the run stopped): its
        links leave the file at `keep`'s next write. Synchronous: it is called on the way
        out of a poll, cancelled or not."""
        if self.tasks.pop(task_id, None) is not None:
            self.dirty = True
            if self._wake is not None:
                self._wake.set()

    async def keep(self) -> None:
        """Write the forgotten tasks out, for as long as the run lasts (the engine's task
        group runs it and cancels it at the end). At most one write is in flight; every
        forget meanwhile waits for the next, so many polls ending together cost one write,
        and writes are not fsynced: a preview lost in a crash is only a preview."""
        while not self.broken:  # (a failed write ends the previews, and so this loop)
            self._wake = anyio.Event()
            if not self.dirty:
                await self._wake.wait()
            await self._save()

    def close(self) -> None:
        """The run is over: the file holds what is still recorded, and is removed when
        nothing is (every poll has ended by now, so after any run: no previews left)."""
        if self.broken:
            return
        try:
            if not self.tasks:
                self.path.unlink(missing_ok=True)
            elif self.dirty:
                paths.replace_text(self.path, self._text())
            self.dirty = False
        except OSError:
            self.broken = True

    def _text(self) -> str:
        return json.dumps({"v": VERSION, "tasks": self.tasks}, ensure_ascii=False)

    async def _save(self) -> None:
        if self.broken:
            return
        async with self.lock:  # one writer at a time, each writing the latest whole state
            self.dirty = False
            try:
                if self.tasks:
                    await anyio.to_thread.run_sync(paths.replace_text, self.path, self._text())
                else:
                    await anyio.to_thread.run_sync(self.path.unlink, True)
            except OSError:
                self.broken = True


def read(state_dir: Path) -> dict[str, dict[str, Any]]:
    """The recorded previews by task id; {} when there are none or the file is not one we
    can read (an older or newer version, a spoiled file): previews are a nicety."""
    p = state_dir / FILE
    try:
        if p.stat().st_size > MAX_BYTES:
            return {}
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("v") != VERSION or \
            not isinstance(data.get("tasks"), dict):
        return {}
    out: dict[str, dict[str, Any]] = {}
    for tid, entry in data["tasks"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("tracks"), list):
            continue
        tracks = [t for t in entry["tracks"] if isinstance(t, dict)
                  and isinstance(t.get("n"), int) and not isinstance(t.get("n"), bool)
                  and isinstance(t.get("stream_url"), str)
                  and paths.is_url(t["stream_url"])]
        if tracks:
            out[str(tid)] = {**entry, "tracks": tracks}
    return out
