"""HTTP plumbing shared by the remote providers: the key, the client, the rate limiter and
the translation of transport failures into runner.errors.

Whether a failed request may have created a paid task decides whether the engine may
retry it for free, so the translation is the same for every provider and lives here:

- the request never reached the service (connect error or timeout, no free connection in
  the pool): TransientError, for a submit as for a poll; but a connection refused (or a
  name that does not resolve) by a host that has not answered once in this run is
  WrongAddress: the address is wrong, no task can exist, and the run stops at once;
- the request was sent and its answer lost (read timeout, connection reset or closed,
  an HTTP 502/503/504 from a gateway, a 200 whose body we cannot read): for a submit
  PossiblySubmitted (the task may exist and we will never learn its id), for a poll
  TransientError (polling again is free).

What an answer's JSON envelope means is protocol-specific; each provider reads it.
"""

from __future__ import annotations

import email.utils
import functools
import os
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
from anyio.lowlevel import RunVar

from runner import paths
from runner.errors import (
    AuthError,
    PossiblySubmitted,
    StepError,
    TransientError,
    WrongAddress,
)
from runner.pacing import PRIORITY, SEND_CHECK, SENT_AT, Clock, RateLimiter
from runner.providers import answers
from runner.providers.httpclient import async_client
from runner.recipe.model import Provider as ProviderConfig

# The APIs require a callback URL on every submit, but sunoflow polls and runs no server.
# `.invalid` is reserved (RFC 2606): it never resolves, so no callback can leak results
# to a stranger's host, and the service's failed callback changes nothing for a poller.
PLACEHOLDER_CALLBACK = "https://localhost.invalid/sunoflow-callback"

GATEWAY = (502, 503, 504)


def api_key(config: ProviderConfig, env: dict[str, str]) -> str:
    """The key from the variable the recipe names. Messages name the variable, never the
    value."""
    key = (env.get(config.api_key_env) or "").strip()
    if not key:
        raise AuthError(f"the environment variable {config.api_key_env} is not set; export "
                        f"your {config.kind} API key in it (api_key_env names the variable)")
    if not key.isascii() or not key.isprintable():
        raise AuthError(f"the key in {config.api_key_env} contains characters that cannot "
                        "be sent in an HTTP header; check what was pasted into it")
    return key


def _redactor(key: str) -> Callable[[str], str]:
    """Replaces the key in text we may quote in a message (an answer that echoes it).

    A real key is long and cannot occur by chance; a short one (a test relay's `k`) would
    also match inside ordinary words (`taskId`) and corrupt every answer, so it is
    replaced only where it stands as a token of its own."""
    if len(key) >= 12:
        def redact(text: str) -> str:
            return text.replace(key, "[redacted]") if key in text else text
        return redact
    token = re.compile(rf"(?<![A-Za-z0-9_\-]){re.escape(key)}(?![A-Za-z0-9_\-])")

    def redact_token(text: str) -> str:
        return token.sub("[redacted]", text) if key in text else text

    return redact_token


@functools.cache
def ssl_context() -> ssl.SSLContext:
    """One TLS context for every client of the process: building one (loading the CA
    bundle) costs far more than a request on loopback."""
    return httpx.create_ssl_context()


class PerLoop:
    """An httpx.AsyncClient per event loop, made when first needed.

    run.py drives a provider from several `anyio.run` calls (the balance before, the run,
    the balance after, the close). Pooled connections belong to the loop that opened them
    and fail in the next one, so each loop gets its own client; a finished loop's client
    goes with the loop.
    """

    def __init__(self, make: Callable[[], httpx.AsyncClient]) -> None:
        self.make = make
        self._var: RunVar[httpx.AsyncClient | None] = RunVar("sunoflow-http-client",
                                                             default=None)

    def get(self) -> httpx.AsyncClient:
        client = self._var.get()
        if client is None or client.is_closed:
            client = self.make()
            self._var.set(client)
        return client

    async def aclose(self) -> None:
        client = self._var.get()
        if client is not None:
            self._var.set(None)
            await client.aclose()


def files_client(config: ProviderConfig) -> PerLoop:
    """Clients for result files on CDNs: no key (it is not theirs), no rate limit."""
    return PerLoop(lambda: async_client(timeout=httpx.Timeout(config.request_timeout),
                                        follow_redirects=True, verify=ssl_context()))


def suffix(url: str, default: str) -> str:
    """The file suffix a result URL names, or `default` (for Fetch placeholders)."""
    return paths.file_suffix(urlsplit(url).path) or default


def retry_after(headers: httpx.Headers) -> float | None:
    """Seconds from a Retry-After header (a number or an HTTP date), if any."""
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass
class Answer:
    """One HTTP answer, its body parsed as JSON when it is JSON."""

    method: str
    path: str
    status: int
    headers: httpx.Headers
    body: Any  # parsed JSON, or None
    text: str

    @property
    def where(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def retry_after(self) -> float | None:
        return retry_after(self.headers)


class ApiClient:
    """One httpx client with the bearer key, and one rate limiter shared by every API
    request of a provider (submits, polls and uploads; file downloads never come here)."""

    def __init__(self, config: ProviderConfig, *, env: dict[str, str], clock: Clock) -> None:
        key = api_key(config, env)
        self.kind = config.kind
        self.base_url = (config.base_url or "").rstrip("/")
        timeout = httpx.Timeout(config.request_timeout,
                                connect=min(10.0, config.request_timeout))
        # Tests may put an httpx.MockTransport here (for answers no fake gives).
        self.transport: httpx.AsyncBaseTransport | None = None
        # httpx masks the Authorization header in every repr; the key lives only there
        # and in the closures below.
        # identity: a compressed answer could inflate past the size cap in one read.
        headers = {"Authorization": f"Bearer {key}", "Accept-Encoding": "identity"}
        self.request_timeout = config.request_timeout
        self.clients = PerLoop(lambda: async_client(
            headers=headers, timeout=timeout, follow_redirects=False, verify=ssl_context(),
            transport=self.transport))
        self.redact = _redactor(key)
        self.plain_key = '"' not in key and "\\" not in key
        self.limiter = RateLimiter(*config.rate_limit, clock) if config.rate_limit else None
        self.clock = clock
        self.requests = 0
        self.answered: set[str] = set()  # hosts (scheme://netloc) that answered this run
        self.setting = {"base_url": self.base_url,
                        "upload_base_url": (config.upload_base_url or "").rstrip("/")}

    def __repr__(self) -> str:
        return f"ApiClient({self.kind}, {self.base_url!r})"

    @property
    def client(self) -> httpx.AsyncClient:
        """This event loop's client."""
        return self.clients.get()

    async def send(self, method: str, url: str, *, step: str | None, submit: bool,
                   **kw: Any) -> Answer:
        """Send one request (paced by the rate limiter); translate transport failures.

        `url` is a path on the provider's base URL or an absolute URL (the upload host).
        `submit` says whether the request may create a paid task.
        """
        full = url if "://" in url else self.base_url + url
        path = urlsplit(full).path
        where = f"{method} {path}"
        # Waiting requests go by the priority the engine gave this task (critical path
        # first; runner.engine.priority).
        slot = await self.limiter.acquire(PRIORITY.get()) if self.limiter is not None \
            else None
        SENT_AT.set(self.clock.now())
        got: list[bytes] = []  # what arrived of the body, kept if the deadline strikes
        limit = answers.deadline(self.request_timeout, _upload_size(kw))
        try:
            check = SEND_CHECK.get() if submit else None
            if check is not None:
                check()  # raises Withheld: the request is not sent (runner.engine.early)
            self.requests += 1
            # The per-read timeout bounds each wait; this bounds the whole exchange (an
            # answer dripping a byte a second never trips a per-read timeout).
            with anyio.fail_after(limit):
                async with self.client.stream(method, full, **kw) as resp:
                    raw = await answers.read_capped(resp, got)
        except httpx.ConnectError as exc:
            # Never connected: the service cannot have seen the request.
            host = _origin(full)
            if host not in self.answered:
                raise self._wrong_address(host, exc, step=step) from exc
            raise TransientError(f"{where}: cannot reach {urlsplit(full).netloc} "
                                 f"({type(exc).__name__})", step=step) from exc
        except (httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # Never connected: the service cannot have seen the request.
            raise TransientError(f"{where}: cannot reach {urlsplit(full).netloc} "
                                 f"({type(exc).__name__})", step=step) from exc
        except (httpx.WriteError, httpx.WriteTimeout) as exc:
            # The body was not fully sent, so the service cannot have acted on it.
            raise TransientError(f"{where}: sending the request failed "
                                 f"({type(exc).__name__})", step=step) from exc
        except httpx.UnsupportedProtocol as exc:
            raise StepError(f"{where}: not an http(s) URL: {full}", step=step) from exc
        except httpx.InvalidURL as exc:
            # A malformed URL, or a redirect answer whose Location httpx cannot parse (it
            # parses it even when not following): either way no task was created.
            raise StepError(f"{where}: invalid URL ({exc})", step=step) from exc
        except httpx.TransportError as exc:
            # ReadTimeout, ReadError, RemoteProtocolError and the rest: the request went
            # out and its answer was lost.
            raise self._lost(where, type(exc).__name__, got, step=step,
                             submit=submit) from exc
        except TimeoutError:
            raise self._lost(where, f"no complete answer within {limit:g} s", got, step=step,
                             submit=submit) from None
        except answers.TooLarge as exc:
            raise self._lost(where, str(exc), got, step=step, submit=submit) from None
        finally:
            if self.limiter is not None and slot is not None:
                # The server counted the request on arrival, before this moment: from now
                # on our window cannot reopen ahead of its window.
                self.limiter.release(slot)
        self.answered.add(_origin(full))
        decoded = answers.decode(raw, resp)
        # Redacted after decoding: a key echoed as JSON escapes (\u0073k-...) is the key.
        unescaped = answers.unescape_ascii(decoded)
        text = self.redact(unescaped)
        try:
            body = answers.shape(answers.loads(decoded)) if decoded.strip() else None
        except ValueError:
            body = None
        if text != unescaped or not self.plain_key:
            # Every JSON spelling of a key of printable ASCII without `"` or `\` shows it
            # in `unescaped`; so a clean `unescaped` means clean strings: no walk needed.
            body = answers.redact_tree(body, self.redact)
        answers.answered(resp.status_code, text, paid=submit)
        headers = resp.headers
        if "location" in headers:  # quoted in messages; a service may echo the key there
            headers = headers.copy()
            headers["location"] = self.redact(answers.unescape_ascii(headers["location"]))
        return Answer(method, path, resp.status_code, headers, body, text)

    def _lost(self, where: str, why: str, got: list[bytes], *, step: str | None,
              submit: bool) -> Exception:
        """The error for an answer that broke off or broke a bound after the request went
        out: a submit whose partial answer names one task id keeps it (answers.Garbled)."""
        if submit:
            tid = answers.salvage_task_id(self.redact(answers.decode(b"".join(got))))
            if tid is not None:
                return answers.Garbled(f"{where}: the answer was unreadable ({why}) but "
                                       f"named task {tid}", task_id=tid, step=step)
        return lost(where, why, step=step, submit=submit)

    async def aclose(self) -> None:
        await self.clients.aclose()

    def _wrong_address(self, host: str, exc: Exception, *, step: str | None) -> WrongAddress:
        names = [n for n, url in self.setting.items() if url and _origin(url) == host]
        setting = names[0] if names else "base_url"  # base_url first: it names both
        flag = " (or --base-url)" if "base_url" in names or not names else ""
        why = _os_reason(exc) or str(exc).strip() or type(exc).__name__
        return WrongAddress(f"cannot connect to {host} ({why}); no task was created. Check "
                            f"{setting} in the recipe's provider block{flag}: is the address "
                            "right, and is the service up?", step=step)


def _os_reason(exc: BaseException) -> str | None:
    """The system's words under a connect error ("Connection refused"), where there are
    some: httpx says only "All connection attempts failed"."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, OSError) and (seen.errno or seen.strerror):
            # asyncio words a refusal "Connect call failed (...)"; the errno says it plainly.
            return os.strerror(seen.errno) if seen.errno and seen.errno > 0 else \
                seen.strerror
        nested = getattr(seen, "exceptions", None)  # an ExceptionGroup of attempts
        if nested:
            seen = nested[0]
            continue
        seen = seen.__cause__ or seen.__context__
    return None


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _upload_size(kw: dict[str, Any]) -> int:
    """The bytes of the files a request uploads (its deadline grows with them)."""
    files = kw.get("files") or {}
    size = 0
    for value in files.values() if isinstance(files, dict) else ():
        content = value[1] if isinstance(value, tuple) and len(value) > 1 else value
        size += len(content) if isinstance(content, (bytes, str)) else 0
    return size


def lost(where: str, why: str, *, step: str | None, submit: bool) -> Exception:
    """The error for a request whose answer was lost (or unreadable) after it was sent."""
    if submit:
        return PossiblySubmitted(f"{where}: the answer was lost ({why}); the service may "
                                 "have created the task", step=step)
    return TransientError(f"{where}: {why}", step=step)


def http_failure(answer: Answer, *, step: str | None, submit: bool,
                 key_env: str) -> Exception | None:
    """The error for an answer that carries no readable service envelope, judged by its
    HTTP status alone; None for a 2xx (the caller decides what an unreadable 2xx means)."""
    status = answer.status
    if status in GATEWAY:
        # A gateway in front of the service answered: the service may have acted.
        return lost(answer.where, f"HTTP {status} from a gateway", step=step, submit=submit)
    if status == 401:
        return AuthError(f"{answer.where}: the service refused the key (HTTP 401); check "
                         f"the key in the environment variable {key_env}", step=step)
    if status == 429:
        return TransientError(f"{answer.where}: rate limited (HTTP 429)", step=step,
                              retry_after=answer.retry_after)
    if status >= 500:
        return lost(answer.where, f"HTTP {status}", step=step, submit=submit)
    if 300 <= status < 400:
        # A redirect (http -> https, a moved host) is never followed for an API request:
        # nothing was created, and the base URL needs fixing.
        return StepError(f"{answer.where}: the service redirects (HTTP {status}) to "
                         f"{answer.headers.get('location') or 'elsewhere'}; set base_url to "
                         "the address it names", step=step, code=status)
    if status >= 400:
        snippet = " ".join(answer.text.split())[:200]
        return StepError(f"{answer.where}: HTTP {status}: {snippet or 'no details'}",
                         step=step, code=status)
    return None
