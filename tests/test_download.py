"""Downloads of result files, whose URLs come from the service and are as untrusted as a
recipe: a real HTTP server on loopback answers with redirects to other schemes, redirect
loops, oversized and short bodies; runner.providers.download must refuse each cleanly, leaving no
file in the store."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from runner.errors import StepError, TransientError
from runner.fake import FakeServer
from runner.pacing import FakeClock
from runner.providers import download
from runner.providers.download import DownloadRejected, LinkExpired
from runner.providers.http import ApiClient, http_failure
from runner.recipe.model import Provider as ProviderConfig
from runner.store.journal import Store

# The async tests run on each backend of anyio (tests/conftest.py: anyio_backend).
pytestmark = pytest.mark.anyio

BODY = bytes(range(256)) * 40  # 10,240 bytes
BIG = bytes(range(256)) * 10_000  # 2.56 MB: more than one of download's write batches
CAP = 4096
PLAYLIST = b"#EXTM3U\n#EXT-X-VERSION:3\n#EXTINF:10.0,\nsegment0.ts\n#EXT-X-ENDLIST\n"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    release: threading.Event

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def _redirect(self, location: str, status: int = 302) -> None:
        self.send_response(status)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _body(self, data: bytes, *, length: str | None = "auto", **headers: str) -> None:
        self.send_response(200)
        if length == "auto":
            self.send_header("Content-Length", str(len(data)))
        elif length is not None:
            self.send_header("Content-Length", length)
        else:
            self.send_header("Connection", "close")  # the body ends when the socket closes
        for k, v in headers.items():
            self.send_header(k.replace("_", "-"), v)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()
        if length != "auto":
            self.close_connection = True

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.do_GET()

    def do_GET(self) -> None:
        p = self.path
        if p == "/small.mp3":
            self._body(BODY[:1000], Content_Type="audio/mpeg")
        elif p == "/big.wav":
            self._body(BIG, Content_Type="audio/wav")
        elif p.startswith("/chain/"):
            n = int(p.rsplit("/", 1)[1])
            if n == 0:
                self._body(BODY[:100])
            else:
                self._redirect(f"/chain/{n - 1}", 307 if n % 2 else 301)
        elif p == "/echo-auth":
            # A service that quotes what it was sent, here in a redirect.
            self._redirect("https://login.example/?was=" +
                           self.headers.get("Authorization", "").replace(" ", "+"))
        elif p == "/loop":
            self._redirect("/loop")
        elif p == "/to-file":
            self._redirect("file:///etc/passwd")
        elif p == "/to-ftp":
            self._redirect("ftp://127.0.0.1/song.mp3")
        elif p == "/to-data":
            self._redirect("data:audio/mpeg;base64,AAAA")
        elif p == "/to-other-host-then-file":
            self._redirect(f"http://localhost:{self.server.server_address[1]}/to-file")
        elif p == "/no-location":
            self.send_response(302)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif p == "/big-announced":
            self._body(b"", length=str(10**12))
        elif p == "/big-unannounced":
            self._body(BODY, length=None)
        elif p == "/short":
            self._body(BODY[:500], length="1000")
        elif p == "/long":  # announces less than it sends: the file would be cut
            self._body(BODY[:1000], length="500")
        elif p == "/stream.m3u8":
            self._body(PLAYLIST, Content_Type="audio/mpeg")
        elif p == "/hls":
            self._body(PLAYLIST, Content_Type="application/vnd.apple.mpegurl")
        elif p == "/sneaky.mp3":
            self._body(PLAYLIST, Content_Type="audio/mpeg")
        elif p == "/bad-length":
            self._body(BODY[:10], length="ten")
        elif p == "/gzip":
            self._body(b"\x1f\x8b" + BODY[:100], Content_Encoding="gzip")
        elif p == "/gone":
            self.send_response(410)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif p == "/stall":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.flush()
            self.release.wait(30)  # never sends the body until the test ends
        else:
            self.send_error(404)


@pytest.fixture
def server() -> Iterator[str]:
    release = threading.Event()
    handler = type("H", (Handler,), {"release": release})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        release.set()
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "state").open()


async def fetch(store: Store, url: str, **kw: object) -> dict[str, object]:
    async def go() -> dict[str, object]:
        async with httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0)) as client:
            return await download.fetch(client, url, store, max_bytes=CAP, **kw)  # type: ignore[arg-type]

    return await go()


def leftovers(store: Store) -> list[Path]:
    return [p for p in store.root.rglob("*") if p.is_file() and p.name not in
            ("VERSION", "journal.jsonl", "lock")]


async def test_a_file_and_a_chain_of_five_redirects_are_fetched(server: str, store: Store) -> None:
    info = await fetch(store, f"{server}/small.mp3")
    assert Path(str(info["path"])).read_bytes() == BODY[:1000]  # noqa: ASYNC240
    assert str(info["path"]).endswith(".mp3")
    info = await fetch(store, f"{server}/chain/5")
    assert Path(str(info["path"])).read_bytes() == BODY[:100]  # noqa: ASYNC240
    assert info["url"] == f"{server}/chain/5"
    assert not list(store.tmp.iterdir())


async def test_the_disk_work_of_a_download_stays_off_the_event_loop(
        server: str, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Writing, hashing and fsyncing a file ran on the event loop, where every file held
    up every other request, callback and rate-limit grant of the run (100 WAVs of 2 MB
    with an album); they run in a worker thread. The body spans several write batches."""
    seen: dict[str, list[int]] = {"fsync": [], "sha256.update": []}
    real_fsync, real_sha256 = os.fsync, hashlib.sha256

    def fsync(fd: int) -> None:
        seen["fsync"].append(threading.get_ident())
        real_fsync(fd)

    class Sha256:  # a spy around the real hash
        def __init__(self) -> None:
            self.h = real_sha256()

        def update(self, data: bytes) -> None:
            seen["sha256.update"].append(threading.get_ident())
            self.h.update(data)

        def hexdigest(self) -> str:
            return self.h.hexdigest()

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(hashlib, "sha256", Sha256)
    loop: list[int] = []

    async def go() -> dict[str, object]:
        loop.append(threading.get_ident())
        async with httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0)) as client:
            return await download.fetch(client, f"{server}/big.wav", store)

    info = await go()
    assert Path(str(info["path"])).read_bytes() == BIG  # noqa: ASYNC240
    assert info["sha256"] == real_sha256(BIG).hexdigest()
    assert seen["fsync"]
    assert seen["sha256.update"]
    assert {k: loop[0] in v for k, v in seen.items()} == {"fsync": False,
                                                         "sha256.update": False}


@pytest.mark.parametrize(("path", "message"), [
    ("/chain/6", "/chain/6: more than 5 redirects"),
    ("/loop", "/loop: more than 5 redirects"),
    ("/to-file", "redirect from {server}/to-file to 'file:///etc/passwd' refused: only "
                 "http(s) URLs are fetched"),
    ("/to-ftp", "redirect from {server}/to-ftp to 'ftp://127.0.0.1/song.mp3' refused"),
    ("/to-data", "/to-data: a redirect to an invalid URL"),
    ("/to-other-host-then-file", "/to-file to 'file:///etc/passwd' refused"),
    ("/no-location", "/no-location: HTTP 302 without a Location"),
    ("/big-announced", "/big-announced is 1,000,000,000,000 bytes; the cap is 4,096"),
    ("/big-unannounced", "/big-unannounced exceeds the cap of 4,096 bytes"),
    ("/gzip", "/gzip: sent with Content-Encoding 'gzip' after we asked for none"),
])
async def test_refused(server: str, store: Store, path: str, message: str) -> None:
    with pytest.raises(DownloadRejected) as exc:
        await fetch(store, f"{server}{path}")
    assert message.format(server=server) in str(exc.value)
    assert leftovers(store) == []


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.org/x.mp3",
                                 "FILE:///etc/passwd", "/etc/passwd", "data:,x",
                                 "gopher://127.0.0.1/"])
async def test_only_http_urls_are_fetched(store: Store, url: str) -> None:
    with pytest.raises(DownloadRejected, match="only http"):
        await fetch(store, url)
    assert leftovers(store) == []


@pytest.mark.parametrize(("path", "message"), [
    # h11 notices both before our own checks do (those are for other transports).
    ("/short", "/short: RemoteProtocolError: peer closed connection without sending "
               "complete message body (received 500 bytes, expected 1000)"),
    ("/bad-length", "/bad-length: RemoteProtocolError: bad Content-Length"),
])
async def test_a_body_that_disagrees_with_its_length_is_retryable(server: str, store: Store,
                                                           path: str, message: str) -> None:
    with pytest.raises(TransientError) as exc:
        await fetch(store, f"{server}{path}")
    assert message in str(exc.value)
    assert leftovers(store) == []


async def test_a_body_longer_than_its_announced_length_is_not_taken_as_the_file(
        server: str, store: Store) -> None:
    with pytest.raises(TransientError, match="more than the 500 bytes its Content-Length"):
        await fetch(store, f"{server}/long")
    assert leftovers(store) == []


@pytest.mark.parametrize("path", ["/stream.m3u8", "/hls", "/sneaky.mp3"])
async def test_a_playlist_is_never_stored_as_audio(server: str, store: Store, path: str) -> None:
    with pytest.raises(DownloadRejected, match="playlist"):
        await fetch(store, f"{server}{path}")
    assert leftovers(store) == []


async def test_a_gone_link_asks_for_a_fresh_one(server: str, store: Store) -> None:
    with pytest.raises(LinkExpired):
        await fetch(store, f"{server}/gone")


async def test_a_download_that_never_finishes_stops_at_its_deadline(server: str,
                                                                    store: Store) -> None:
    # The server sends headers and then nothing, ever: the deadline is the only way out.
    with pytest.raises(DownloadRejected, match="not complete after 0.3 s"):
        await fetch(store, f"{server}/stall", deadline=0.3)
    assert leftovers(store) == []


async def test_a_connection_refused_is_retryable(store: Store) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(TransientError, match="ConnectError"):
        await fetch(store, f"http://127.0.0.1:{port}/x.mp3")


RECIPE = """\
version: 1
name: capped
provider: {kind: sunoapi, poll_interval: 0.05, max_poll_interval: 0.2,
           max_download_bytes: 2048}
steps:
  song:
    uses: generate
    with: {prompt: "la la", style: pop, title: One}
"""


def test_the_cap_is_set_in_the_provider_block(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(RECIPE)
    env = {**os.environ, "SUNO_API_KEY": "sk-cap"}
    with FakeServer("sunoapi", api_key="sk-cap") as srv:
        r = subprocess.run([sys.executable, "-m", "runner", "run", "r.yaml", "--base-url",
                            srv.url, "--quiet", "--report", "report.json"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    [song] = json.loads((tmp_path / "report.json").read_text())["steps"]
    assert song["status"] == "failed"
    assert song["error"].startswith("song: http://127.0.0.1:")
    assert "; the cap is 2,048 (max_download_bytes)" in song["error"]
    blobs = tmp_path / ".sunoflow" / "blobs"
    assert not blobs.exists() or not [p for p in blobs.rglob("*") if p.is_file()]


async def test_an_api_answer_redirecting_to_a_malformed_url_is_a_step_error(server: str) -> None:
    """httpx parses a Location even when it does not follow it; an API answer whose
    Location it cannot parse is a clean step failure, not a crash."""
    config = ProviderConfig(kind="sunoapi", base_url=server, request_timeout=5.0)
    api = ApiClient(config, env={"SUNO_API_KEY": "sk-x"}, clock=FakeClock())

    async def go() -> None:
        try:
            await api.send("POST", "/to-data", step="song", submit=True)
        finally:
            await api.aclose()

    with pytest.raises(StepError, match=r"^song: POST /to-data: invalid URL"):
        await go()


async def test_a_key_echoed_in_a_redirect_is_not_quoted(server: str) -> None:
    config = ProviderConfig(kind="sunoapi", base_url=server, request_timeout=5.0)
    api = ApiClient(config, env={"SUNO_API_KEY": "sk-Echoed-42"}, clock=FakeClock())

    async def go() -> Exception | None:
        try:
            answer = await api.send("POST", "/echo-auth", step="song", submit=True)
            return http_failure(answer, step="song", submit=True, key_env="SUNO_API_KEY")
        finally:
            await api.aclose()

    failure = await go()
    assert str(failure) == ("song: POST /echo-auth: the service redirects (HTTP 302) to "
                            "https://login.example/?was=Bearer+[redacted]; set base_url to "
                            "the address it names")
