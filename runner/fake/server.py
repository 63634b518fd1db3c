"""Shared HTTP plumbing: routing, auth, rate limit, fault injection, files, control endpoints.

A request goes through `App.dispatch`, in this order:

1. `/_fake/...` control endpoints (never logged, never faulted, never authenticated);
2. a request-log entry is opened (every protocol request and every file download);
3. the first matching fault rule fires: "before" actions (an envelope code, a gateway
   status, a reset) answer at once and no task is created;
4. API requests count against the rate limit, then the Bearer key is checked;
5. the protocol handler runs (it may create a task, which a `fail_task` fault marks);
6. "after_create" actions replace the answer (the task exists but the client never hears
   of it: the "possibly submitted" case); `delay` holds any answer back.

Files under `/files/` answer a `Range: bytes=...` request with 206 as a CDN does (a
browser's player seeks so); a stream link (`/files/stream/...`, offered from a music
task's text stage on) plays the first half of its take while the task runs, the whole
take after (World.so_far).

The HTTP layer (`_Handler`) only reads requests and writes `Response`s, including the
misbehaving ones (reset, truncated, slow).
"""

from __future__ import annotations

import hmac
import json
import re
import socket
import socketserver
import struct
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from runner.fake.config import ConfigError
from runner.fake.state import World


class ApiError(Exception):
    """Raised by a protocol handler; the protocol turns it into its error envelope."""

    def __init__(
        self, code: int | str, msg: str, *, http_status: int | None = None, data: Any = None
    ) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.http_status = http_status
        self.data = data


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: Message
    body: bytes
    json: Any  # the parsed body, None when absent or not JSON
    base: str  # scheme://host:port the client used: the prefix of every file URL we hand out
    entry: dict[str, Any]
    fault: dict[str, Any] | None = None  # a fired fail_task rule, for the task it creates
    # Run once the handler has answered without error: work that needs the whole task
    # (its clips), such as scheduling its callbacks.
    after: list[Callable[[], None]] = field(default_factory=list)


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    envelope_code: int | str | None = None
    delay: float = 0.0
    reset: bool = False  # close the connection with a TCP RST instead of answering
    truncate: bool = False  # announce the full length, send half, close
    rate: float | None = None  # bytes per second
    endless: bool = False  # after the body, keep sending filler until the client leaves

    @classmethod
    def json_body(
        cls, obj: Any, status: int = 200, envelope_code: int | str | None = None
    ) -> Response:
        body = json.dumps(obj, ensure_ascii=False).encode()
        return cls(status=status, body=body, envelope_code=envelope_code)


def _ranged(req: Request, data: bytes, ctype: str) -> Response:
    """A file, whole or the one byte range asked for, as a CDN serves it: a browser's
    player (a stream preview in `sunoflow review`) seeks with Range requests."""
    size = len(data)
    m = re.fullmatch(r"bytes=(\d*)-(\d*)", (req.headers.get("Range") or "").strip())
    if m is None or not (m.group(1) or m.group(2)):
        return Response(200, data, ctype, {"Accept-Ranges": "bytes"})
    if m.group(1):
        start = int(m.group(1))
        end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
    else:
        start, end = max(0, size - int(m.group(2))), size - 1
    if start >= size or start > end:
        return Response(416, b"", "text/plain", {"Content-Range": f"bytes */{size}"})
    return Response(206, data[start:end + 1], ctype,
                    {"Accept-Ranges": "bytes", "Content-Range": f"bytes {start}-{end}/{size}"})


def gateway_error(status: int) -> Response:
    """What an nginx in front of the service answers when its upstream misbehaves."""
    reason = {
        502: "Bad Gateway",
        503: "Service Temporarily Unavailable",
        504: "Gateway Time-out",
    }.get(status, "Error")
    html = (
        f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
        f"<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    )
    return Response(status=status, body=html.encode(), content_type="text/html")


@dataclass(frozen=True)
class Route:
    op: str  # the operation name used by the log, prices, latency and fault matching
    handler: Callable[[Request], Response]
    family: str = "classic"  # protocol-defined: which error-code table applies


class Protocol:
    """What `App` needs from a protocol module."""

    name = ""

    def __init__(self, world: World) -> None:
        self.world = world

    def route(self, method: str, path: str, body: Any) -> Route | None:
        """The route for a request; `body` (parsed JSON or None) may refine the op."""
        raise NotImplementedError

    def error(
        self,
        route: Route | None,
        code: int | str,
        msg: str,
        *,
        http_status: int | None = None,
        data: Any = None,
    ) -> Response:
        raise NotImplementedError

    def not_found(self, method: str, path: str) -> Response:
        raise NotImplementedError

    def unauthorized(self, route: Route) -> Response:
        raise NotImplementedError

    def rate_limited(self, route: Route) -> Response:
        raise NotImplementedError

    def server_error(self, route: Route | None) -> Response:
        raise NotImplementedError


def _authorized(headers: Message, key: str) -> bool:
    scheme, _, token = (headers.get("Authorization") or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode())


class App:
    def __init__(self, world: World, protocol: Protocol) -> None:
        self.world = world
        self.protocol = protocol

    def dispatch(self, method: str, target: str, headers: Message, body: bytes) -> Response:
        url = urlsplit(target)
        path = unquote(url.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        if path == "/_fake" or path.startswith("/_fake/"):
            return self._control(method, path, body)
        try:
            parsed = json.loads(body) if body.strip() else None
        except (ValueError, UnicodeDecodeError):
            parsed = None
        host = headers.get("Host")
        base = f"http://{host}" if host else self.world.base_url
        is_file = path.startswith("/files/")
        route = None if is_file else self.protocol.route(method, path, parsed)
        op = "download" if is_file else route.op if route else "unknown"
        entry = self.world.begin(method, path, query, parsed, op)
        req = Request(method, path, query, headers, body, parsed, base, entry)
        try:
            resp = self._process(req, route, is_file)
        except Exception:  # a bug in the fake: answer 500 and say where
            traceback.print_exc(file=sys.stderr)
            self.world.annotate(entry, error=traceback.format_exc(limit=3))
            resp = self.protocol.server_error(route)
        status = None if resp.reset else resp.status
        self.world.annotate(entry, status=status, envelope_code=resp.envelope_code)
        return resp

    def _process(self, req: Request, route: Route | None, is_file: bool) -> Response:
        action = self.world.pick_fault(req.method, req.path, req.entry["op"], req.json)
        if action is not None:
            self.world.annotate(req.entry, fault=action)
        after = bool(action and action.get("after_create"))
        if action and "envelope_code" in action and not is_file:
            code = action["envelope_code"]
            resp = self.protocol.error(
                route,
                code,
                action.get("message") or f"fault {code}",
                http_status=action.get("http_status"),
            )
        elif action and "http_status" in action and not after:
            resp = gateway_error(action["http_status"])
        elif action and action.get("reset") and not after:
            resp = Response(reset=True)
        else:
            if action and "fail_task" in action:
                req.fault = action
            resp = self._serve_file(req, action) if is_file else self._api(req, route)
            if action and after and "http_status" in action:
                resp = gateway_error(action["http_status"])
            elif action and after and action.get("reset"):
                resp = Response(reset=True)
        if action and not is_file and not resp.reset:
            _hostile(resp, action)
        if action and "drip" in action:
            resp.rate = float(action["drip"])
        if action and "delay" in action:
            resp.delay = float(action["delay"])
        return resp

    def _api(self, req: Request, route: Route | None) -> Response:
        if route is None:
            return self.protocol.not_found(req.method, req.path)
        if not self.world.rate_ok():
            return self.protocol.rate_limited(route)
        key = self.world.config["api_key"]
        if key is not None and not _authorized(req.headers, key):
            return self.protocol.unauthorized(route)
        try:
            resp = route.handler(req)
            for fn in req.after:
                fn()
            return resp
        except ApiError as exc:
            return self.protocol.error(
                route, exc.code, exc.msg, http_status=exc.http_status, data=exc.data
            )

    def _serve_file(self, req: Request, action: dict[str, Any] | None) -> Response:
        key = req.path[len("/files/") :]
        resource, gen, expired = self.world.lookup(key, req.query.get("v"))
        if resource is None:
            return Response(404, b"Not Found", "text/plain")
        if action and action.get("expired"):
            expired = int(action.get("status", 403))
            self.world.expire(key, gen, expired)
        if expired is not None:
            xml = (
                b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied'
                b"</Code><Message>Request has expired</Message></Error>"
            )
            return Response(expired, xml, "application/xml")
        resource = self.world.so_far(key, resource)
        resp = _ranged(req, resource.content(), resource.content_type())
        if action and action.get("truncate_download"):
            resp.truncate = True
        if action and "slow_download" in action:
            resp.rate = float(action["slow_download"])
        return resp

    def _control(self, method: str, path: str, body: bytes) -> Response:
        world = self.world
        try:
            payload = json.loads(body) if body.strip() else {}
        except ValueError:
            return Response.json_body({"error": "the body is not JSON"}, 400)
        if (method, path) == ("GET", "/_fake/log"):
            return Response.json_body(world.snapshot_log())
        if (method, path) == ("GET", "/_fake/tasks"):
            return Response.json_body(world.snapshot_tasks())
        if (method, path) == ("GET", "/_fake/callbacks"):
            return Response.json_body(world.snapshot_deliveries())
        if (method, path) == ("GET", "/_fake/config"):
            return Response.json_body(world.public_config())
        if (method, path) == ("GET", "/_fake/state"):
            return Response.json_body(
                {
                    "protocol": world.protocol,
                    "credits": world.balance(),
                    "now": world.now(),
                    "tasks": len(world.tasks),
                    "requests": len(world.log),
                }
            )
        if (method, path) == ("POST", "/_fake/config"):
            if not isinstance(payload, dict):
                return Response.json_body({"error": "expected a JSON object"}, 400)
            try:
                return Response.json_body(world.configure(payload))
            except ConfigError as exc:
                return Response.json_body({"error": str(exc)}, 400)
        if (method, path) == ("POST", "/_fake/reset"):
            world.reset()
            return Response.json_body({"ok": True})
        if (method, path) == ("POST", "/_fake/expire"):
            return Response.json_body({"expired": world.expire_all()})
        if (method, path) == ("POST", "/_fake/advance"):
            seconds = payload.get("seconds") if isinstance(payload, dict) else None
            if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
                return Response.json_body({"error": 'expected {"seconds": N >= 0}'}, 400)
            return Response.json_body({"now": world.advance(float(seconds))})
        return Response.json_body({"error": f"no control endpoint {method} {path}"}, 404)


def _patched(doc: Any, patch: Any) -> Any:
    """`patch` merged into `doc`: objects key by key, lists item by item (so one field of
    every song can be spoiled), anything else replaced."""
    if isinstance(doc, dict) and isinstance(patch, dict):
        return {**doc, **{k: _patched(doc.get(k), v) for k, v in patch.items()}}
    if isinstance(doc, list) and isinstance(patch, list):
        return [_patched(d, p) for d, p in zip(doc, patch, strict=False)] + \
            doc[len(patch):] + patch[len(doc):]
    return patch


def _hostile(resp: Response, action: dict[str, Any]) -> None:
    """The answer a hostile or broken service gives once the task exists (so a client that
    cannot read it has really been charged): wrong types merged in, a nesting bomb, a body
    without end."""
    if "patch" in action:
        try:
            doc = json.loads(resp.body)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            resp.body = json.dumps(_patched(doc, action["patch"]), ensure_ascii=False).encode()
    if "nest" in action and resp.body.startswith(b"{"):
        depth = int(action["nest"])
        resp.body = b'{"deep":' + b"[" * depth + b"]" * depth + b"," + resp.body[1:]
    if action.get("escape_json"):
        resp.body = _STRING.sub(_escaped, resp.body)
    if action.get("endless"):
        resp.endless = True


# A JSON string literal (escapes included).
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')


def _escaped(m: re.Match[bytes]) -> bytes:
    """A JSON string with every ASCII letter and digit written as a \\u00XX escape."""
    text = json.loads(m[0])
    return ('"' + "".join(f"\\u{ord(c):04x}" if c.isascii() and c.isalnum()
                          else json.dumps(c, ensure_ascii=False)[1:-1] for c in text)
            + '"').encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sunoflow-fake/1"
    sys_version = ""
    timeout = 60  # an idle keep-alive connection frees its thread after this
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without NODELAY, Nagle's algorithm
        # and the client's delayed ACK add ~40 ms to every keep-alive answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        pass  # the request log is the record; stderr stays quiet

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _handle(self) -> None:
        body = self._read_body()
        resp = self.server.app.dispatch(self.command, self.path, self.headers, body)
        stopping = self.server.app.world.stopping
        if resp.delay > 0 and stopping.wait(resp.delay):
            resp = Response(reset=True)
        try:
            self._write(resp, stopping)
        except OSError:  # the client went away first (a read timeout, usually)
            self.close_connection = True

    def _write(self, resp: Response, stopping: threading.Event) -> None:
        if resp.reset:
            self.close_connection = True
            # SO_LINGER 0: close() sends RST, so the client sees "connection reset".
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            return
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        if resp.endless:
            self._write_endless(resp, stopping)
            return
        self.send_header("Content-Length", str(len(resp.body)))
        for name, value in resp.headers.items():
            self.send_header(name, value)
        if resp.truncate:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            return
        body = resp.body[: len(resp.body) // 2] if resp.truncate else resp.body
        if resp.rate:
            step = max(1, int(resp.rate / 20))
            for start in range(0, len(body), step):
                self.wfile.write(body[start : start + step])
                if stopping.wait(step / resp.rate):
                    break
        else:
            self.wfile.write(body)
        if resp.truncate:
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)


    def _write_endless(self, resp: Response, stopping: threading.Event) -> None:
        """The start of the real answer, then a JSON string that never closes: the body
        is delimited by the connection's end, which never comes while the client reads."""
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        head = resp.body[: max(1, len(resp.body) - 1)] + b',"pad":"'
        self.wfile.write(head)
        filler = b"x" * (1 << 16)
        while not stopping.is_set():
            if resp.rate:
                if stopping.wait(1.0):
                    break
                self.wfile.write(filler[: max(1, int(resp.rate))])
            else:
                self.wfile.write(filler)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver listens with a backlog of 5: a client opening dozens of connections
    # at once (a benchmark) would see resets that no real service sends.
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], app: App) -> None:
        self.app = app
        self.connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would call socket.getfqdn(), a DNS lookup that can take
        # seconds; the fake never needs the server name.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conn_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conn_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # the client hung up (or timed out); nothing the fake did wrong
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        """Wake every handler blocked on a keep-alive read so that it closes its socket."""
        with self._conn_lock:
            open_now = list(self.connections)
        for conn in open_now:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6


def make_server(app: App, host: str, port: int) -> _HTTPServer:
    cls = _HTTPServer6 if ":" in host else _HTTPServer
    httpd = cls((host, port), app)
    bound_host = f"[{host}]" if ":" in host else host
    app.world.base_url = f"http://{bound_host}:{httpd.server_address[1]}"
    return httpd
