"""The review server: the standard library's threading HTTP server, on loopback by default.

Why not an ASGI stack (Starlette + uvicorn): the page is a handful of server-rendered
routes, the only streaming is files with HTTP Range, and the only live part is a poll
every two seconds; the standard library does all of it with no new dependency to ship,
audit and keep in step with anyio.

Safe by default (docs/SECURITY.md, "sunoflow review"):
- it listens on 127.0.0.1 unless `--host` says otherwise;
- every request carries the token printed at start (`?t=`, or the form field `t` of a
  POST), compared in constant time; without it: 403;
- a request whose Host header is not the address it listens on is refused (421), so a
  web page on another site cannot reach it through DNS rebinding;
- it serves only stored files (`/blob/<sha256><ext>`, by content hash), their waveforms,
  the album folder (`--out`, paths confined to it, links resolved) and its own assets;
- it writes only two things: a kept take (`NAME.takes.yaml`) and, after a confirmation
  page, one reroll (a `sunoflow reroll` process of its own). Each form carries the token
  and the card's freshness: a form made before the song changed is refused (409), and
  a second reroll while one runs is refused (409) -- see `Actions.reroll` for why a click
  can never pay twice;
- any failure answers with a short page and a 4xx/5xx status, never a traceback.
"""

from __future__ import annotations

import hmac
import json
import mimetypes
import re
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from runner.errors import SunoflowError
from runner.review import model, pages, waveform
from runner.review.actions import Actions, Refused
from runner.review.model import BLOB

MAX_BODY = 16 * 1024  # bytes of a form: a few hidden fields
CHUNK = 1 << 16
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "media-src 'self' https: http:; connect-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")


class Review:
    """What the handler needs: where things are, the token, the allowed hosts."""

    def __init__(self, recipe: Path, state_dir: Path, out_dir: Path,
                 overrides: dict[str, Any], cli_args: list[str], token: str) -> None:
        self.recipe, self.state_dir, self.out_dir = recipe, state_dir, out_dir
        self.overrides = overrides
        self.token = token
        self.hosts: set[str] = set()
        self.actions = Actions(recipe, state_dir, out_dir, overrides, cli_args)
        self._cache: tuple[str, model.Album] | None = None
        self._lock = threading.Lock()

    def album(self) -> model.Album:
        """The page's data, loaded again whenever a file it reads changed."""
        sig = model.signature(self.recipe, self.state_dir, self.out_dir)
        with self._lock:
            if self._cache is None or self._cache[0] != sig:
                self._cache = (sig, model.load(self.recipe, self.state_dir, self.out_dir,
                                               self.overrides))
            return self._cache[1]

    def links(self) -> pages.Links:
        return pages.Links(self.token, self.has_wave)

    def has_wave(self, name: str) -> bool:
        return self.blob(name) is not None

    def blob(self, name: str) -> Path | None:
        """A stored file by its content name, or None: nothing else can be named."""
        if not BLOB.match(name):
            return None
        p = self.state_dir / "blobs" / "sha256" / name[:2] / name
        return p if p.is_file() else None

    def out_file(self, rel: str) -> Path | None:
        """A file of the album folder; None for anything that leads outside it."""
        root = self.out_dir.resolve()
        try:
            p = (root / rel).resolve()
        except (OSError, RuntimeError, ValueError):
            return None
        if not p.is_relative_to(root) or p == root or not p.is_file():
            return None
        if any(part.startswith(".") for part in p.relative_to(root).parts):
            return None
        return p


class _Fail(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def make_handler(review: Review) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "sunoflow-review"
        sys_version = ""
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # the token is in every URL: keep it out of logs

        # --- dispatch -----------------------------------------------------------

        def do_GET(self) -> None:  # noqa: N802
            self._handle("GET")

        def do_HEAD(self) -> None:  # noqa: N802
            self._handle("HEAD")

        def do_POST(self) -> None:  # noqa: N802
            self._handle("POST")

        def _handle(self, method: str) -> None:
            try:
                self._check_host()
                url = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                form: dict[str, str] = {}
                if method == "POST":
                    form = self._form()
                    given = form.get("t", "")
                else:
                    given = query.get("t", "")
                if not hmac.compare_digest(given.encode(), review.token.encode()):
                    raise _Fail(403, "missing or wrong token: open the address that "
                                "`sunoflow review` printed (it carries ?t=...)")
                self._route(method, unquote(url.path), query, form)
            except _Fail as exc:
                self._page(exc.status, pages.error(exc.status, _reason(exc.status),
                                                   exc.message))
            except SunoflowError as exc:
                self._page(503, pages.error(503, _reason(503), f"the recipe or the state "
                                            f"directory cannot be read right now: {exc}"))
            except (BrokenPipeError, ConnectionResetError):
                pass
            except Exception as exc:  # noqa: BLE001 - one line, never a traceback out
                print(f"sunoflow review: internal error on {self.command} "
                      f"{urlsplit(self.path).path}: {type(exc).__name__}: {exc}",
                      file=sys.stderr)
                try:
                    self._page(500, pages.error(500, _reason(500), "internal error (a bug); "
                                                "see the terminal running sunoflow review"))
                except OSError:
                    pass

        def _check_host(self) -> None:
            host = (self.headers.get("Host") or "").lower()
            if host not in review.hosts:
                raise _Fail(421, "this server answers only to its own address (a foreign "
                            "Host header is refused, against DNS rebinding)")

        def _form(self) -> dict[str, str]:
            ctype = self.headers.get("Content-Type", "")
            if not ctype.startswith("application/x-www-form-urlencoded"):
                raise _Fail(415, "send the page's own form")
            try:
                n = int(self.headers.get("Content-Length", ""))
            except ValueError:
                raise _Fail(411, "a form needs its Content-Length") from None
            if n < 0 or n > MAX_BODY:
                raise _Fail(413, "form too large")
            body = self.rfile.read(n).decode("utf-8", "replace")
            return {k: v[-1] for k, v in parse_qs(body).items()}

        def _route(self, method: str, path: str, q: dict[str, str],
                   form: dict[str, str]) -> None:
            if method == "POST":
                if path == "/keep":
                    return self._keep(form)
                if path == "/reroll":
                    return self._reroll(form)
                raise _Fail(404 if path not in ("/", "/live") else 405, "no such form")
            if path == "/":
                return self._home(q.get("msg"))
            if path == "/live":
                return self._live()
            if path == "/reroll":
                return self._confirm(q.get("card", ""))
            if m := re.fullmatch(r"/assets/([a-z.]+)", path):
                if m.group(1) not in pages.ASSET_NAMES:
                    raise _Fail(404, "no such asset")
                return self._file(pages.ASSETS / m.group(1), pages.ASSET_NAMES[m.group(1)])
            if m := re.fullmatch(r"/blob/([^/]+)", path):
                p = review.blob(m.group(1))
                if p is None:
                    raise _Fail(404, "no such stored file")
                return self._file(p)
            if m := re.fullmatch(r"/wave/([0-9a-f]{64})\.png", path):
                return self._wave(m.group(1))
            if path.startswith("/out/"):
                p = review.out_file(path[len("/out/"):])
                if p is None:
                    raise _Fail(404, "no such file in the album folder")
                return self._file(p)
            raise _Fail(404, "no such page")

        # --- pages --------------------------------------------------------------

        def _home(self, msg: str | None) -> None:
            album = review.album()
            message = _MESSAGES.get(msg or "", None)
            last = review.actions.reroll_status()
            if last:
                message = f"{message} {last}" if message else last
            self._page(200, pages.page(album, review.links(), message=message,
                                       live=f"/live?t={review.token}"))

        def _live(self) -> None:
            album = review.album()
            data = pages.live(album, review.links(), f"/live?t={review.token}")
            self._send(200, json.dumps(data).encode(), "application/json")

        def _confirm(self, card_id: str) -> None:
            album = review.album()
            c = _card(album, card_id)
            self._page(200, pages.reroll(album, c, review.links()))

        def _keep(self, form: dict[str, str]) -> None:
            album = review.album()
            c = _card(album, form.get("card", ""))
            take = form.get("take")
            if take not in ("0", "1"):
                raise _Fail(400, "a take is 0 or 1")
            try:
                review.actions.keep(album, c, int(take), form.get("form", ""))
            except Refused as exc:
                raise _Fail(exc.status, str(exc)) from None
            self._redirect(f"/?t={review.token}&msg=kept#card-{c.n}")

        def _reroll(self, form: dict[str, str]) -> None:
            if form.get("confirm") != "yes":
                raise _Fail(400, "a reroll needs its confirmation")
            album = review.album()
            c = _card(album, form.get("card", ""))
            try:
                review.actions.reroll(album, c, form.get("form", ""))
            except Refused as exc:
                raise _Fail(exc.status, str(exc)) from None
            self._redirect(f"/?t={review.token}&msg=reroll#card-{c.n}")

        def _wave(self, sha: str) -> None:
            audio = next((p for p in (review.state_dir / "blobs" / "sha256" / sha[:2]).glob(
                f"{sha}.*") if p.is_file()), None) if (
                review.state_dir / "blobs" / "sha256" / sha[:2]).is_dir() else None
            if audio is None:
                raise _Fail(404, "no such stored file")
            png = waveform.make(review.state_dir, audio)
            if png is None:
                raise _Fail(404, "no waveform for this file")
            self._file(png, "image/png")

        # --- sending ------------------------------------------------------------

        def _headers(self, status: int, ctype: str, length: int,
                     extra: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(length))
            self.send_header("Cache-Control", "no-store")
            self.send_header("Referrer-Policy", "no-referrer")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Content-Security-Policy", CSP)
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()

        def _send(self, status: int, body: bytes, ctype: str,
                  extra: dict[str, str] | None = None) -> None:
            self._headers(status, ctype, len(body), extra)
            if self.command != "HEAD":
                self.wfile.write(body)

        def _page(self, status: int, html: str) -> None:
            self._send(status, html.encode(), "text/html; charset=utf-8")

        def _redirect(self, to: str) -> None:
            self._send(303, b"", "text/plain", {"Location": to})

        def _file(self, p: Path, ctype: str | None = None) -> None:
            """A file, whole or the byte range asked for (so a player can seek)."""
            ctype = ctype or mimetypes.guess_type(p.name)[0] or "application/octet-stream"
            size = p.stat().st_size
            start, end = 0, size - 1
            status = 200
            rng = self.headers.get("Range")
            if rng:
                m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip())
                if m is None or (not m.group(1) and not m.group(2)):
                    raise _Fail(416, "unsupported Range")
                if m.group(1):
                    start = int(m.group(1))
                    end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
                else:
                    start = max(0, size - int(m.group(2)))
                if start >= size or start > end:
                    self._send(416, b"", "text/plain", {"Content-Range": f"bytes */{size}"})
                    return
                status = 206
            extra = {"Accept-Ranges": "bytes"}
            if status == 206:
                extra["Content-Range"] = f"bytes {start}-{end}/{size}"
            self._headers(status, ctype, end - start + 1, extra)
            if self.command == "HEAD":
                return
            with p.open("rb") as f:
                f.seek(start)
                left = end - start + 1
                while left > 0:
                    chunk = f.read(min(CHUNK, left))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    left -= len(chunk)

    return Handler


_MESSAGES = {"kept": "Take kept. Run `sunoflow run` to rebuild the album from it: nothing is "
                     "paid for.",
             "reroll": "Reroll started: the new takes appear on this page when they arrive."}


def _card(album: model.Album, card_id: str) -> model.Card:
    for c in album.cards:
        if c.id == card_id:
            return c
    raise _Fail(404, f"no song '{card_id[:80]}' on this album")


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A browser hangs up at will (a tab closed, a seek that drops a Range read): not an
        error. Anything else the handler let through is said on one line, never as a
        traceback (the handler answers its own errors with a 4xx/5xx page)."""
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            return
        print(f"sunoflow review: a request failed: {type(exc).__name__}: {exc}",
              file=sys.stderr, flush=True)


def serve(review: Review, host: str, port: int, *, open_browser: bool = False,
          ready: Any = None) -> int:
    server = _Server((host, port), make_handler(review))
    port = server.server_address[1]
    names = {"127.0.0.1", "localhost", "[::1]"} | ({host} if host not in ("", "0.0.0.0", "::")
                                                  else set())
    review.hosts = {f"{h}:{port}" for h in names}
    shown = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
    url = f"http://{shown}:{port}/?t={review.token}"
    print(f"sunoflow review: serving {review.recipe.name} at {url}", flush=True)
    print("  (the address carries a secret token: share it only with whom may change your "
          "takes; Ctrl-C stops)", flush=True)
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        print("sunoflow review: stopped", file=sys.stderr)
    finally:
        server.server_close()
        review.actions.wait()
    return 0
