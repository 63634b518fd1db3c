"""The errors sunoflow shows to people, and the exit code each maps to.

Every user-facing failure is a :class:`SunoflowError`; the CLI's one top-level handler
prints it as one clean message and exits with its ``exit_code``. Anything else that
escapes is a bug: the CLI prints one line pointing at the log with the traceback.

::

    SunoflowError                  exit 1 unless stated
    ├── RecipeError                exit 2  loader, schema, templates, plan: a list of
    │                                      positioned Diagnostics, sorted by position
    ├── UsageError                 exit 2  bad command-line arguments (cli)
    ├── FrozenError                exit 3  --frozen would need a paid submission (engine)
    ├── Interrupted                exit 130 Ctrl-C / SIGTERM (engine)
    ├── BudgetError                exit 1  --max-credits: the estimate exceeds the cap (run)
    ├── StoreError                 exit 1  the state directory is unreadable or from a
    │   │                                  newer sunoflow (store)
    │   └── JournalError                   a durable journal line could not be written
    │                                      (disk full, I/O error): nothing more is
    │                                      submitted in this run (store, engine)
    ├── PathError                  exit 1  a folder or file sunoflow must write (--out,
    │                                      --state-dir, --report, the lock) cannot be
    │                                      written (paths, checked before the run)
    ├── ExportError                exit 1  album entries that could not be written, each
    │                                      a positioned Diagnostic; the others were (export)
    └── ProviderError              exit 1  raised by providers, translated at the HTTP
        │                                  boundary, carrying the step id
        ├── AuthError                      401: stop every new submission
        ├── CreditsError                   insufficient credits: stop every new submission
        │                                  (also: the balance cannot cover the plan, run)
        ├── WrongAddress                   the very first connection to a host was refused:
        │                                  its address is wrong; stop the run (http)
        ├── TransientError                 the request did not create a task, or a poll or
        │                                  download failed: retry with backoff
        ├── PossiblySubmitted              a submit may have created a task whose id we
        │                                  never saw (gateway 502/503/504, read timeout)
        │   └── answers.Garbled            the answer broke off or broke a bound but named
        │                                  its task id: the provider keeps the task
        ├── TaskFailed                     the service ran the task and failed it
        ├── Withheld                       the engine withdrew a submit before it left
        │                                  (early release: the host refuses it); nothing
        │                                  reached the service
        └── StepError                      a step's inputs or local work failed (ffmpeg,
                                           a render error at run time)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Diagnostic:
    """One positioned problem in a recipe. Ordered by file, then position."""

    file: str
    line: int
    col: int
    message: str
    hint: str | None = None

    def __str__(self) -> str:
        text = f"{self.file}:{self.line}:{self.col}: {self.message}"
        if self.hint:
            text += f"\n    hint: {self.hint}"
        return text


class SunoflowError(Exception):
    exit_code = 1


class RecipeError(SunoflowError):
    exit_code = 2

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = sorted(set(diagnostics))
        super().__init__("\n".join(str(d) for d in self.diagnostics))


class UsageError(SunoflowError):
    exit_code = 2


class FrozenError(SunoflowError):
    exit_code = 3


class Interrupted(SunoflowError):
    exit_code = 130


class StoreError(SunoflowError):
    pass


class JournalError(StoreError):
    """The journal could not take a line that proves a payment (store.Store.record)."""


class PathError(SunoflowError):
    pass


class BudgetError(SunoflowError):
    pass


class ExportError(SunoflowError):
    """Some `outputs:` entries failed; `written` lists the files of those that did not."""

    def __init__(self, diagnostics: list[Diagnostic], written: list[dict[str, object]]) -> None:
        self.diagnostics = diagnostics
        self.written = written
        super().__init__("\n".join(str(d) for d in diagnostics))


class ProviderError(SunoflowError):
    def __init__(self, message: str, *, step: str | None = None, code: int | None = None) -> None:
        self.step = step
        self.code = code
        super().__init__(message)

    @property
    def reason(self) -> str:
        """The message without the step id: for lines that already start with it."""
        return super().__str__()

    def __str__(self) -> str:
        return f"{self.step}: {self.reason}" if self.step else self.reason


class AuthError(ProviderError):
    pass


class CreditsError(ProviderError):
    pass


class WrongAddress(ProviderError):
    """No connection to a host that has not answered once in this run: the address is
    wrong (or the service is down). No task can exist, so the run stops at once instead of
    retrying for minutes."""


class TransientError(ProviderError):
    def __init__(self, message: str, *, retry_after: float | None = None, **kw: object) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kw)  # type: ignore[arg-type]


class PossiblySubmitted(ProviderError):
    pass


class TaskFailed(ProviderError):
    def __init__(self, message: str, *, refunded: bool = False, **kw: object) -> None:
        self.refunded = refunded
        super().__init__(message, **kw)  # type: ignore[arg-type]


class Withheld(ProviderError):
    """Raised through a provider by the engine's check (runner.pacing.SEND_CHECK), after
    the rate limiter and before the request is sent: the request never left."""


class StepError(ProviderError):
    pass
