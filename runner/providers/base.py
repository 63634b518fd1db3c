"""The providers' interface: the Protocols a provider implements and the records it
answers with (runner.providers.registry makes one by kind).

A provider knows HTTP (or ffmpeg) and nothing of the graph. The engine hands it one
operation at a time and does the journaling, retrying and downloading itself:

- ``submit(op)`` starts the work. A remote provider returns the service's task id as soon
  as it has one, or a result for synchronous endpoints; the local provider does the work
  and returns the result. It raises the errors of runner.errors, translated at the HTTP
  boundary: TransientError only when no task can have been created, PossiblySubmitted when
  one may have been.
- ``poll(op, task_id)`` returns None while the task runs, its result when done, and raises
  TaskFailed when the service failed it. A provider whose service reports a music task's
  first track before the second (``reports_first``: sunoapi's FIRST_SUCCESS) returns a
  ``First`` for that stage, so the steps that read only that track can start early.
  While a task runs, a provider whose service offers links to listen to the takes as they
  are made (sunoapi's `streamAudioUrl`) may answer ``Streams`` instead of None: the same
  "still running" to the engine, which only records the links for `sunoflow review`.

A provider whose service can push results (sunoapi's `callBackUrl`) is also a
``CallbackProvider``: it sends the run's listener URL on every submit, names the task a
callback body is about, and reads a body into the same Result (or First) a poll would give.

Results hold file placeholders: ``Fetch(url)`` for a file to download and ``Produced(path)``
for one made on this machine. The engine replaces each with the stored file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from runner.paths import Roots, readable


@dataclass(frozen=True)
class Fetch:
    url: str
    suffix: str = ""


@dataclass(frozen=True)
class Produced:
    path: Path


@dataclass
class Op:
    step: str  # the instance id, e.g. "song[2]", for messages
    type: str
    inputs: dict[str, Any]
    key: str
    scratch: Path  # where this operation may write files; made on first use of `workdir`
    base_dir: Path  # the recipe's folder: local paths in inputs are relative to it
    roots: Roots | None = None  # what it may read (default: the recipe's folder only)
    # Seconds this operation's local work (ffmpeg) may take, when the recipe sets a
    # deadline (runner.engine.deadlines.local_timeout); None: each ffmpeg's own default.
    timeout: float | None = None

    def local_file(self, text: str) -> Path:
        """The file a local path in the inputs names, resolved and confined (runner.paths):
        the only way a provider turns recipe text into a file it reads."""
        return readable(self.roots, self.base_dir, text, step=self.step)

    @property
    def workdir(self) -> Path:
        self.scratch.mkdir(parents=True, exist_ok=True)
        return self.scratch


@dataclass
class Result:
    outputs: dict[str, Any]
    credits: float | None = None
    task_ids: list[str] = field(default_factory=list)


@dataclass
class First:
    """A music task's first stage: the task still runs, and `result` holds only its first
    track, ready to download, as the complete result will list it (engine rule 7). Its
    own type, not a flag on Result: a caller that takes any answer for the finished task
    does not type-check."""

    result: Result
    streams: Streams | None = None  # the other takes' stream links, for the review page


@dataclass(frozen=True)
class Streams:
    """A running task's stream links (previews, not results): the engine treats this
    answer exactly as None ("still running") and records the links for the review page
    (runner.streams). `tracks`: one {"n", "id", "title", "stream_url"} per take, links
    http(s) only. Its own type, so no caller can take it for a finished task."""

    tracks: tuple[dict[str, Any], ...]


@dataclass
class Submitted:
    task_id: str | None = None
    result: Result | None = None


class Provider(Protocol):
    kind: str
    # Whether `poll` may answer a music task's first stage with a First: the engine then
    # aims one poll at that stage for a task whose dependants can start from it.
    reports_first: bool

    async def submit(self, op: Op) -> Submitted: ...

    async def poll(self, op: Op, task_id: str) -> Result | First | Streams | None: ...

    async def refresh(self, op: Op, task_id: str) -> Result | None:
        """Fresh result URLs for a finished task whose links expired (never a new task)."""
        ...

    async def credits(self) -> float | None: ...

    async def aclose(self) -> None: ...


class CallbackProvider(Provider, Protocol):
    def use_callback_url(self, url: str) -> None: ...

    def callback_task_id(self, body: Any) -> str | None: ...

    def from_callback(self, op: Op, task_id: str, body: Any
                      ) -> Result | First | Streams | None:
        """What a poll with the same content would answer: None (or Streams) while the
        task runs, a
        First for a music task's `first` stage, its Result when done; raises TaskFailed
        when the body reports a failure. Never raises anything else, whatever the body
        holds."""
        ...


class Uploads(Protocol):
    """Where a provider remembers the files it uploaded, across runs: {sha256 of the
    content: {"url", "host", "uploaded_at", "size", "name"}}. The state directory keeps
    it (runner.store.uploads); a provider is handed one and never sees the store."""

    def load(self) -> dict[str, dict[str, Any]]:
        """What was saved last ({} when nothing or nothing readable: a lost entry only
        costs a re-upload)."""
        ...

    def save(self, uploads: dict[str, dict[str, Any]]) -> None: ...
