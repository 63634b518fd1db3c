"""The records the engine keeps and is handed: its options, one record per instance, the
run's counts, the work one instance has to do, and the progress view it reports to.

Typed here, beside nothing that runs, so that the engine's parts, the CLI that wires a run
and the tests read the same names, and the engine never imports the report (`UI` is a
Protocol: runner.report.progress implements it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from runner.pacing import Clock

if TYPE_CHECKING:
    from runner.callbacks.registry import Callbacks
    from runner.providers import Provider
    from runner.store.journal import KeyState


@dataclass
class Options:
    state_dir: Path
    concurrency: int = 50
    keep_going: bool = False
    only: set[str] = field(default_factory=set)
    force: set[str] = field(default_factory=set)
    resubmit_uncertain: bool = True
    frozen: bool = False
    max_credits: float | None = None
    clock: Clock = field(default_factory=Clock)
    handle_signals: bool = True
    callbacks: Callbacks | None = None  # --listen: the run's callback registry
    blobs: Any = None  # --cache: runner.store.blobsync.Blobs, files shared by content
    ledger: Any = None  # --cache: runner.store.ledger.Ledger, paid work claimed across runners


@dataclass(slots=True)
class StepRecord:
    id: str
    status: str = "pending"  # succeeded | cached | failed | skipped
    task_ids: list[str] = field(default_factory=list)
    attempts: int = 0
    outputs: Any = None
    error: str | None = None
    key: str | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # what the run told about this step


@dataclass
class Counts:
    submissions: int = 0
    polls: int = 0
    downloads: int = 0
    possibly_submitted: int = 0
    callbacks: int = 0  # tasks completed by a callback rather than a poll
    early_refused: int = 0  # early requests the service refused (rule 8): none was paid
    # Requests refused as "not finished" although every task they read had been seen
    # finished: the host's record lagging (rule 8); none was paid, each was sent again.
    lag_refused: int = 0


@dataclass(frozen=True, slots=True)
class Work:
    """What an instance has to do once its inputs are rendered and its key is not done
    (scheduler `_lookup`): the provider that does it, the rendered inputs, the key, what the
    journal holds for the key (None: nothing; ``submitted``: a task to poll, rule 2;
    ``done`` with a file missing: a result to restore, rule 1) and whether --force names it
    (a finished result is then paid for again, on purpose)."""

    provider: Provider
    inputs: dict[str, Any]
    key: str
    state: KeyState | None
    forced: bool


class FilesClient(Protocol):
    """What the engine downloads results with (runner.providers.download.Downloader):
    `url` into `dest` (the store), returning the stored file's {path, sha256, size, url}.
    Raises download.LinkExpired, download.DownloadRejected or TransientError."""

    async def fetch(self, url: str, dest: Any, *, max_bytes: int) -> dict[str, Any]: ...

    async def aclose(self) -> None: ...


class UI(Protocol):
    """The progress view the engine reports to (runner.report.progress)."""

    def event(self, iid: str, state: str, detail: str) -> None:
        """An instance changed state: running, submitted, resumed, first, succeeded,
        cached, failed, skipped."""

    def poll_due(self, iid: str, seconds: float) -> None:
        """The next poll of `iid`'s task is due in `seconds`."""

    def note(self, text: str) -> None:
        """A line worth saying (quiet runs may drop it)."""

    def always(self, text: str) -> None:
        """A line that must be said, quiet or not (a paid task the journal refused)."""
