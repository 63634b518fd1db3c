"""The callback listener of `sunoflow run --listen HOST:PORT`: a small HTTP/1.1 server
(h11 on anyio) that takes the services' callbacks and files them with the run's registry
(runner.callbacks.registry).

One request per connection, answered at once: the body is filed and the answer sent
before any download or journal write, so the service's 15 s limit is never at risk.
Whatever a stranger sends changes nothing but counters:

- the path must end in `/cb/<token>` (compared in constant time; a reverse proxy may keep
  a prefix of its own), else 404; the token is never echoed or logged;
- only POST; a body over MAX_BODY is refused with 413 as soon as that is known (from
  Content-Length, or while reading), and reading stops;
- the body must be a JSON object naming a task of this run (else 400, or 404 for an
  unknown task);
- a whole request must arrive within `read_timeout` seconds (a slow client is cut off),
  and at most `max_connections` are served at once (more are closed unanswered).

Rejections are noted through `note`, the first LOG_MAX of them; the registry counts all.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import anyio.abc
import h11

from runner.callbacks.registry import Callbacks
from runner.errors import UsageError

MAX_BODY = 1024 * 1024
MAX_HEADERS = 16 * 1024
READ_TIMEOUT = 10.0
WRITE_TIMEOUT = 5.0
MAX_CONNECTIONS = 64
LOG_MAX = 20
SEGMENT = b"/cb/"
# The registry's refusals (it counts them itself), by the status it answered.
FILED = {400: "no task id", 404: "unknown task", 503: "too many held"}
T = TypeVar("T")


@dataclass
class Answer:
    status: int
    reason: str | None = None  # why it was rejected, for the log and the counters


class Listener:
    def __init__(self, callbacks: Callbacks, note: Callable[[str], None], *,
                 read_timeout: float = READ_TIMEOUT,
                 max_connections: int = MAX_CONNECTIONS) -> None:
        self.callbacks = callbacks
        self.note = note
        self.read_timeout = read_timeout
        self.max_connections = max_connections
        self.active = 0
        self.logged = 0
        self._listener: anyio.abc.Listener[anyio.abc.SocketStream] | None = None
        self.url = ""

    async def bind(self, host: str, port: int) -> str:
        """Listen on host:port (port 0: any free one); the base URL actually bound."""
        try:
            listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
        except OSError as exc:
            raise UsageError(f"--listen {host}:{port}: cannot listen there "
                             f"({exc.strerror or exc})") from None
        first = listener.listeners[0]
        bound_port = first.extra(anyio.abc.SocketAttribute.local_port)
        self._listener = listener
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{bound_port}"
        return self.url

    async def serve(self) -> None:
        """Serve until cancelled."""
        assert self._listener is not None, "bind() first"
        async with self._listener:
            await self._listener.serve(self.handle)

    async def serving(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run `work` while serving; stop serving when it ends."""
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.serve)
                try:
                    return await work()
                finally:
                    tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # Only `work` can fail here (handle() answers or swallows every error of a
            # connection): let its exception leave as it would without a listener, so a
            # user-facing error still reaches the CLI's handler.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        raise AssertionError("unreachable: the task group returns or raises")

    async def handle(self, stream: anyio.abc.SocketStream) -> None:
        async with stream:
            if self.active >= self.max_connections:
                self._rejected("too many connections", stream)
                return
            self.active += 1
            try:
                conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADERS)
                answer = Answer(408, "too slow")
                with anyio.move_on_after(self.read_timeout):
                    answer = await self._read(stream, conn)
                if answer.reason is not None:
                    self._rejected(answer.reason, stream)
                # Answer only a request h11 understood; anything else is just closed.
                if conn.our_state is h11.SEND_RESPONSE:
                    with anyio.move_on_after(WRITE_TIMEOUT):
                        await stream.send(_response(conn, answer.status))
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                pass  # the client went away; nothing was filed unless it was complete
            except Exception as exc:  # noqa: BLE001 - a defect here must not end a paid run
                self._rejected("listener error", stream, f"{type(exc).__name__}: {exc}")
            finally:
                self.active -= 1

    async def _read(self, stream: anyio.abc.SocketStream, conn: h11.Connection) -> Answer:
        body = bytearray()
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                return Answer(400, "not HTTP/1.1")
            if event is h11.NEED_DATA:
                if conn.they_are_waiting_for_100_continue:
                    await stream.send(conn.send(h11.InformationalResponse(
                        status_code=100, headers=[])) or b"")
                try:
                    data = await stream.receive(65536)
                except anyio.EndOfStream:
                    data = b""
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                # A reverse proxy may keep a prefix of its own: /any/prefix/cb/<token>.
                _, sep, token = event.target.split(b"?", 1)[0].rpartition(SEGMENT)
                if not (sep and hmac.compare_digest(token, self.callbacks.token.encode())):
                    return Answer(404, "wrong path or token")
                if event.method != b"POST":
                    return Answer(405, "not a POST")
                length = _content_length(event.headers)
                if length is not None and length > MAX_BODY:
                    return Answer(413, "body too large")
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY:
                    return Answer(413, "body too large")
            elif isinstance(event, h11.EndOfMessage):
                return self._file(bytes(body))
            else:  # ConnectionClosed before the whole request came
                return Answer(408, "closed mid-request")

    def _file(self, raw: bytes) -> Answer:
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested too deep
            return Answer(400, "malformed JSON")
        if not isinstance(body, dict):
            return Answer(400, "malformed JSON")
        status = self.callbacks.deliver(body)
        return Answer(status, FILED.get(status))

    def _rejected(self, reason: str, stream: anyio.abc.SocketStream, detail: str = "") -> None:
        if reason not in FILED.values():
            self.callbacks.reject(reason)  # the registry counted those itself
        if self.logged < LOG_MAX:
            self.logged += 1
            more = "; further rejections are only counted" if self.logged == LOG_MAX else ""
            why = f"{reason}: {detail}" if detail else reason
            self.note(f"callback rejected ({why}) from {_peer(stream)}{more}")

def _response(conn: h11.Connection, status: int) -> bytes:
    data = json.dumps({"code": status, "msg": "ok" if status == 200 else "rejected"}).encode()
    head = conn.send(h11.Response(status_code=status, headers=[
        ("Content-Type", "application/json"), ("Content-Length", str(len(data))),
        ("Connection", "close")]))
    return (head or b"") + (conn.send(h11.Data(data=data)) or b"") + \
        (conn.send(h11.EndOfMessage()) or b"")


def _content_length(headers: Any) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _peer(stream: anyio.abc.SocketStream) -> str:
    try:
        addr = stream.extra(anyio.abc.SocketAttribute.remote_address)
    except anyio.TypedAttributeLookupError:
        return "?"
    return str(addr[0]) if isinstance(addr, tuple) else str(addr)


def parse_address(text: str) -> tuple[str, int]:
    """`HOST:PORT` or `[IPv6]:PORT` as given to --listen."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise UsageError(f"--listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8787")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise UsageError(f"--listen {text!r}: write an IPv6 address in brackets, "
                         "e.g. [::1]:8787")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"--listen {text!r}: the port must be a number from 0 to 65535 "
                         "(0 picks a free one)")
    return host, int(port)
