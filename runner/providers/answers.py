"""Reading what a service answers: bounded, defensive, redacted, and of the expected types.

An API answer comes from the network, so it is untrusted like a recipe: it may be endless,
arrive one byte a second, nest a million levels deep, carry `imageUrl: 123`, a 4000-digit
duration or the key escaped as JSON. Everything here runs at the HTTP boundary
(`http.ApiClient.send`) or wraps a provider's public methods, so the providers' readers
see only answers of bounded size and depth whose well-known fields have the types they
expect, and no exception but the provider's own errors leaves them:

- at most MAX_ANSWER_BYTES of body, and the whole exchange within `deadline(...)`;
- JSON nested at most MAX_DEPTH levels, `NaN`/`Infinity` read as null, integers past
  Python's 4300 digits refused; a body that breaks a bound is "not the service's JSON"
  (http.py decides what that means for a submit and for a poll);
- `shape()`: fields named like links must be strings, like text must be scalars (made
  strings), like numbers finite numbers; a value of the wrong type reads as absent.
  Unknown fields and structure pass unchanged (with bounded depth);
- the key is redacted in every decoded string (`\\u0073k-...` is the key too);
- `guard_submit` / `guard_poll` / `guard_callback`: whatever a reader still trips over
  becomes a provider error, and a submit whose answer went wrong but names a task keeps
  that task id, so it is polled instead of paid for again.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar, cast

import httpx

from runner.errors import PossiblySubmitted, ProviderError, StepError, TaskFailed

if TYPE_CHECKING:
    from runner.providers.base import First, Op, Result, Streams, Submitted

MAX_ANSWER_BYTES = 8 << 20  # answers are a few KiB; a record with lyrics some 100 KiB
MAX_DEPTH = 32  # the deepest documented answer nests 5 levels
MIN_UPLOAD_RATE = 64 << 10  # bytes/s an upload is given on top of the answer's deadline

# The answer (status, body text, paid) to this task's paid request, else its last free
# one, set by http.ApiClient.send: guard_submit reads a task id from a paid one when the
# reader fails, and knows from a free one that nothing was submitted yet.
ANSWER: ContextVar[tuple[int, str, bool] | None] = ContextVar("sunoflow-answer", default=None)


def answered(status: int, text: str, *, paid: bool) -> None:
    """Record an answer for guard_submit (a free one never hides a paid one)."""
    now = ANSWER.get()
    if paid or now is None or not now[2]:
        ANSWER.set((status, text, paid))


class Garbled(PossiblySubmitted):
    """A submit's answer that could not be read whole, from which a task id was read
    (`task_id`): guard_submit turns it into that task, polled instead of paid again. Left
    unguarded, it is a plain PossiblySubmitted, which is safe (engine rule 3)."""

    def __init__(self, message: str, *, task_id: str, **kw: Any) -> None:
        self.task_id = task_id
        super().__init__(message, **kw)


def deadline(request_timeout: float, upload_bytes: int = 0) -> float:
    """Seconds one API request may take in all (connect, send, the whole answer): the
    per-read timeout alone lets an answer dripping a byte at a time last for ever."""
    return 2 * request_timeout + upload_bytes / MIN_UPLOAD_RATE


class TooLarge(Exception):
    pass


async def read_capped(resp: httpx.Response, into: list[bytes],
                      cap: int = MAX_ANSWER_BYTES) -> bytes:
    """The body of `resp`, at most `cap` bytes (decoded); the chunks land in `into` as they
    come, so a caller interrupted by its deadline still has what arrived."""
    length = resp.headers.get("content-length", "")
    if length.strip().isdigit() and int(length) > cap:
        raise TooLarge(f"an answer of {int(length):,} bytes (the cap is {cap:,})")
    got = 0
    async for chunk in resp.aiter_bytes():
        got += len(chunk)
        if got > cap:
            raise TooLarge(f"an answer larger than {cap:,} bytes")
        into.append(chunk)
    return b"".join(into)


def decode(raw: bytes, resp: httpx.Response | None = None) -> str:
    encoding = (resp.charset_encoding if resp is not None else None) or "utf-8"
    try:
        return raw.decode(encoding, errors="replace")
    except LookupError:
        return raw.decode("utf-8", errors="replace")


def _constant(_: str) -> None:
    return None  # NaN, Infinity, -Infinity: not a value any field can use


def depth_ok(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether `value` nests at most `limit` containers deep (without recursion)."""
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            v = list(v.values())
        if isinstance(v, list):
            if d > limit:
                return False
            stack.extend((x, d + 1) for x in v if isinstance(x, (dict, list)))
    return True


def loads(text: str) -> Any:
    """The JSON value of `text`; ValueError when it is not JSON (a number past Python's
    4300 digits included) or nests past what the interpreter's recursion allows.
    `shape` then enforces MAX_DEPTH."""
    try:
        return json.loads(text, parse_constant=_constant)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


# --- the types of well-known fields ----------------------------------------------------

# Status fields and codes keep their own types (readers compare them as given).
TEXT = frozenset({"id", "title", "tags", "prompt", "text", "modelName", "model_name",
                  "msg", "message", "errorMessage", "fail_reason", "word", "lyric",
                  "negativeTags", "style", "taskId", "task_id", "audioId", "audio_id",
                  "result", "clip_id"})
NUMBER = frozenset({"duration", "startS", "endS", "continueAt", "continue_at",
                    "creditsConsumed", "credits"})
# Lists whose items readers use as text; structure (an object where a list belongs) is
# left as it came: a reader that trips over it fails the poll with a message, which keeps
# the task (a reader that took it for "no result" could fail a task that succeeded).
LIST_OF_TEXT = frozenset({"images"})


def _is_url_field(name: str) -> bool:
    return name.endswith(("Url", "_url")) or name in ("url", "downloadUrl")


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if abs(value) < 10 ** 15 else None
    if isinstance(value, float):
        return value if math.isfinite(value) and abs(value) < 1e15 else None
    if isinstance(value, str) and len(value) <= 40:
        try:
            f = float(value)
        except ValueError:
            return None
        return f if math.isfinite(f) and abs(f) < 1e15 else None
    return None


def _field(name: str, value: Any) -> Any:
    if value is None:
        return None
    if _is_url_field(name):
        return value if isinstance(value, str) else None
    if name in TEXT:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value) if not isinstance(value, float) or math.isfinite(value) \
                else None
        return None if isinstance(value, (dict, list)) else value
    if name in NUMBER:
        return _number(value)
    if name in LIST_OF_TEXT and isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return value


def shape(value: Any, depth: int = 1) -> Any:
    """`value` with every well-known field of the wrong type read as absent (None), and
    numbers and ids given as numbers or strings made what readers expect. ValueError when
    it nests deeper than MAX_DEPTH."""
    if isinstance(value, dict):
        if depth > MAX_DEPTH:
            raise ValueError(f"JSON nested deeper than {MAX_DEPTH} levels")
        return {k: shape(_field(k, v), depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        if depth > MAX_DEPTH:
            raise ValueError(f"JSON nested deeper than {MAX_DEPTH} levels")
        return [shape(v, depth + 1) for v in value]
    return value


def redact_tree(value: Any, redact: Callable[[str], str]) -> Any:
    """`value` with `redact` applied to every string in it, keys included."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_tree(k, redact): redact_tree(v, redact) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_tree(v, redact) for v in value]
    return value


_ESCAPE = re.compile(r"\\u00([2-7][0-9a-fA-F])|\\(/)")


def unescape_ascii(text: str) -> str:
    """JSON's escapes of printable ASCII (`\\u0073`, `\\/`) as the characters they stand
    for: what a message quotes from an answer is redacted after this, so an echo of the
    key escaped character by character is found too."""
    if "\\" not in text:
        return text
    return _ESCAPE.sub(lambda m: m.group(2) or chr(int(m.group(1), 16)), text)


# --- a task id from an answer that could not be read whole ------------------------------

_ID_TEXT = r"([A-Za-z0-9][A-Za-z0-9_.:\-]{0,127})"
_TASK_ID = re.compile(r'"(?:taskId|task_id)"\s*:\s*"' + _ID_TEXT + '"')
_DATA_ID = re.compile(r'"data"\s*:\s*"' + _ID_TEXT + '"')
_RELAY_OK = re.compile(r'"code"\s*:\s*"success"')


def salvage_task_id(text: str) -> str | None:
    """The one task id an answer's text names (`"taskId": "..."`, or a relay's
    `{"code": "success", "data": "..."}`), or None when it names none or several."""
    text = text[:MAX_ANSWER_BYTES]
    ids = set(_TASK_ID.findall(text))
    if not ids and _RELAY_OK.search(text):
        ids = set(_DATA_ID.findall(text))
    return ids.pop() if len(ids) == 1 else None


# --- guards around a provider's public methods --------------------------------------------

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
C = TypeVar("C", bound=Callable[..., Any])
_READ_ERRORS = (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError,
                RecursionError, UnicodeError, ArithmeticError)


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def guard_submit(fn: F) -> F:
    """A submit whose answer cannot be read keeps the task id the answer names (it is
    polled, never paid again: engine rule 2); without one, it is PossiblySubmitted when
    the paid request got an answer, a StepError when only a free one before it (an
    upload) did."""

    @functools.wraps(fn)
    async def submit(self: Any, op: Op) -> Submitted:
        from runner.providers.base import Submitted

        token = ANSWER.set(None)
        try:
            sub: Submitted = await fn(self, op)
            return sub
        except Garbled as exc:
            # Money safety: the service answered this submit and named exactly one task
            # id; polling it costs nothing, submitting again would pay a second time.
            return Submitted(exc.task_id)
        except PossiblySubmitted as exc:
            # The same for a whole 2xx answer a provider could not read (not JSON, nested
            # past the bound, no task id where one belongs): one id in its text is kept.
            tid = _salvaged()
            if tid is None:
                raise
            exc.__traceback__ = None
            return Submitted(tid)
        except _READ_ERRORS as exc:
            got = ANSWER.get()
            if got is None:
                raise  # no answer came: not the service's doing, but a bug (the crash log)
            if not got[2]:
                raise StepError(f"{op.type}: the service's answer before the submit (an "
                                f"upload) could not be read ({_why(exc)}); nothing was "
                                "submitted", step=op.step) from exc
            tid = _salvaged()
            if tid is not None:
                return Submitted(tid)
            raise PossiblySubmitted(f"{op.type}: the service's answer could not be read "
                                    f"({_why(exc)}); the task may exist",
                                    step=op.step) from exc
        finally:
            ANSWER.reset(token)

    return cast(F, submit)


def _salvaged() -> str | None:
    got = ANSWER.get()
    if got is None or not got[2] or not 200 <= got[0] < 300:
        return None
    return salvage_task_id(got[1])


def guard_poll(fn: F) -> F:
    """A poll (or refresh) whose answer a reader cannot use fails the step with a message;
    the task id stays recorded, so the next run polls it again (never pays)."""

    @functools.wraps(fn)
    async def poll(self: Any, op: Op, task_id: str) -> Any:
        try:
            res = await fn(self, op, task_id)
            check_result(res)
            return res
        except ProviderError:
            raise
        except _READ_ERRORS as exc:
            raise StepError(f"the service's answer about task {task_id} has an unexpected "
                            f"shape ({_why(exc)}); the task stays recorded and the next run "
                            "polls it again", step=op.step) from exc

    return cast(F, poll)


def guard_callback(fn: C) -> C:
    """A callback body is read like a poll answer (shaped, redacted); one a reader cannot
    use says nothing (None: the task is polled as usual). Only TaskFailed passes."""

    @functools.wraps(fn)
    def from_callback(self: Any, op: Op, task_id: str, body: Any
                      ) -> Result | First | Streams | None:
        try:
            if not depth_ok(body):
                return None
            body = shape(redact_tree(body, self.api.redact))  # (depth_ok: before recursion)
            res: Result | First | Streams | None = fn(self, op, task_id, body)
            check_result(res)
            return res
        except TaskFailed:
            raise
        except (ProviderError, *_READ_ERRORS):
            return None

    return cast(C, from_callback)


def check_result(res: Any) -> None:
    """A reader's Result of the types the engine stores: every file to fetch a link
    given as a string, every duration a finite number or None. ValueError if not."""
    from runner.providers.base import Fetch, First, Result

    if isinstance(res, First):
        res = res.result
    if not isinstance(res, Result):
        return
    stack: list[Any] = [res.outputs]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            d = v.get("duration", None)
            if d is not None and _number(d) is None:
                v["duration"] = None
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, Fetch) and not isinstance(v.url, str):
            # (Its scheme is judged by runner.providers.download, which refuses all but http(s).)
            raise ValueError(f"a result link that is not text: {v.url!r:.80}")
