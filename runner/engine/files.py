"""Results to stored files: every file placeholder of a provider's result (a file made
here, a URL of the service's) becomes a file in the content-addressed store, downloaded
through the files client the run hands the engine (records.FilesClient); an expired link
is refreshed through the provider, for the same task, never by paying again (rule 1)."""

from __future__ import annotations

from typing import Any

import anyio

from runner.engine.state import EngineState
from runner.errors import StepError, TransientError
from runner.pacing import Backoff
from runner.plan.model import Instance
from runner.providers import Fetch, Op, Produced, Result, download
from runner.store.journal import compact


class Files(EngineState):
    async def _materialize(self, result: Result, op: Op, task_id: str | None = None,
                           first: tuple[Any, list[Any]] | None = None
                           ) -> tuple[Any, list[dict[str, Any]]]:
        """Replace file placeholders with stored files; refresh expired links once or
        twice through the provider (never by paying again). `first`: the task's recorded
        first track, which the outputs keep as their first (rule 7)."""
        for attempt in range(3):
            files: list[dict[str, Any]] = list(first[1]) if first is not None else []
            memo: dict[Any, dict[str, Any]] = {}
            outputs = pin_first(result.outputs, first[0]) if first is not None \
                else result.outputs
            try:
                out = await self._walk(outputs, op, files, (), memo)
                return compact(out), compact(files)  # held all run: repeats held once
            except download.LinkExpired as exc:
                if task_id is None or attempt == 2:
                    raise StepError(f"result link expired: {exc}", step=op.step) from None
                fresh = await self._refresh(op, task_id)
                if fresh is None:
                    raise StepError(f"result link expired and the service could not "
                                    f"recover it: {exc}", step=op.step) from None
                result = fresh
            except download.DownloadRejected as exc:
                raise StepError(str(exc), step=op.step) from None
        raise AssertionError("unreachable")

    async def _walk(self, value: Any, op: Op, files: list[dict[str, Any]],
                    path: tuple[Any, ...], memo: dict[Any, dict[str, Any]]) -> Any:
        if isinstance(value, (Produced, Fetch)):
            # One placeholder may stand in several places (`file` and `tracks[0].file`):
            # store it once.
            info = memo.get(value)
            if info is None:
                if isinstance(value, Produced):
                    info = await anyio.to_thread.run_sync(self.store.ingest, value.path)
                else:
                    info = await self._fetch(value.url, op)
                memo[value] = info
                files.append({**info, "field": _dotted(path)})
            return info["path"]
        if isinstance(value, dict):
            return {k: await self._walk(v, op, files, (*path, k), memo)
                    for k, v in value.items()}
        if isinstance(value, list):
            return [await self._walk(v, op, files, (*path, i), memo)
                    for i, v in enumerate(value)]
        return value

    async def _fetch(self, url: str, op: Op) -> dict[str, Any]:
        backoff = Backoff(base=min(1.0, self.recipe.provider.poll_interval), cap=20.0)
        for n in range(6):
            try:
                info = await self.files_client.fetch(
                    url, self.store, max_bytes=self.recipe.provider.max_download_bytes)
                self.counts.downloads += 1
                return info
            except TransientError as exc:
                if n == 5:
                    raise StepError(f"download failed: {exc}", step=op.step) from None
                await self.clock.sleep(backoff.next())
        raise AssertionError("unreachable")

    async def _recover_blob(self, inst: Instance, f: dict[str, Any]) -> bool | None:
        """Put one missing stored file back by its recorded sha256 from its recorded URL
        (links expire after about 15 days): True when it is back, None when the URL had
        nothing, False when it serves other content. A shared cache was asked before
        (`_restore`: self.blobs.pull), by content hash."""
        url = f.get("url")
        if not isinstance(url, str):
            return None
        try:
            info = await self.files_client.fetch(
                url, self.store, max_bytes=self.recipe.provider.max_download_bytes)
        except (download.LinkExpired, download.DownloadRejected, TransientError):
            return None
        if info["sha256"] != f.get("sha256"):
            self.ui.note(f"{inst.id}: re-downloaded {url} but its content changed")
            return False
        return True

    async def _refresh(self, op: Op, task_id: str) -> Result | None:
        """Fresh result links for a finished task, retrying transient failures (free)."""
        backoff = Backoff(base=min(1.0, self.recipe.provider.poll_interval), cap=20.0)
        for n in range(5):
            try:
                return await self.remote.refresh(op, task_id)
            except TransientError:
                if n == 4:
                    raise
                await self.clock.sleep(backoff.next())
        return None


def _dotted(path: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in path)


def pin_first(outputs: Any, first: Any) -> Any:
    """`outputs` with the recorded first track in first place (rule 7): the same clip as
    the complete result lists, or, should the service have dropped or renamed it, in place
    of the complete result's first."""
    t0 = first["tracks"][0]
    tracks = outputs.get("tracks") if isinstance(outputs, dict) else None
    if not isinstance(tracks, list):
        return outputs
    rest = [t for t in tracks if not (isinstance(t, dict) and t.get("id") == t0.get("id"))]
    if len(rest) == len(tracks):
        rest = tracks[1:]
    return {**outputs, "tracks": [t0, *rest], "file": t0.get("file")}
