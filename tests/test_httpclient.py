"""runner.providers.httpclient: the connection pools' cheaper check of idle connections. It must be
in place for the installed httpx (or the saving silently goes), and must still find a
connection the server closed: reusing one would lose a request's answer, which for a
submit means "possibly submitted"."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import anyio
import httpx
import pytest

from runner.pacing import FakeClock
from runner.providers.http import ApiClient, files_client
from runner.providers.httpclient import CachedStream, async_client, cheap_pool_checks, is_readable
from runner.recipe.model import Provider as ProviderConfig

# The async tests run on each backend of anyio (tests/conftest.py: anyio_backend).
pytestmark = pytest.mark.anyio


class ClosingServer:
    """Answers each connection's one request with a keep-alive 200, then closes it."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/x"
        self.connections = 0
        self.closed = threading.Semaphore(0)  # released once per closed connection
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            self.closed.release()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def server() -> Iterator[ClosingServer]:
    srv = ClosingServer()
    yield srv
    srv.close()


def test_installed_httpx_pools_are_recognised(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    assert cheap_pool_checks(httpx.AsyncClient()) == 1
    # A proxy from the environment gets a pool of its own: checked the same way.
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    assert cheap_pool_checks(httpx.AsyncClient()) == 2
    # A transport it does not know (tests' MockTransport) is left as it is.
    mock = httpx.MockTransport(lambda request: httpx.Response(200))
    assert cheap_pool_checks(httpx.AsyncClient(transport=mock)) == 0


async def test_sunoflow_clients_are_made_cheap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUNO_API_KEY", "sk-test-0123456789")
    config = ProviderConfig(kind="sunoapi", base_url="http://127.0.0.1:9")

    async def main() -> list[int]:
        api = ApiClient(config, env={"SUNO_API_KEY": "sk-test-0123456789"}, clock=FakeClock())
        files = files_client(config)
        # Already wrapped when made: a second pass finds nothing left to wrap.
        return [cheap_pool_checks(api.client), cheap_pool_checks(files.get()),
                cheap_pool_checks(async_client())]

    assert await main() == [0, 0, 0]


async def test_a_connection_the_server_closed_is_not_reused(server: ClosingServer) -> None:
    async def main() -> tuple[int, int, list[str]]:
        async with async_client() as client:
            first = await client.get(server.url)
            await anyio.to_thread.run_sync(server.closed.acquire)  # it closed the connection
            # The pooled connection is idle and its socket readable (the server's close):
            # the pool must drop it and connect again, not send on it.
            second = await client.get(server.url)
            await anyio.to_thread.run_sync(server.closed.acquire)
            return first.status_code, second.status_code, [first.text, second.text]

    assert await main() == (200, 200, ["ok", "ok"])
    assert server.connections == 2


def test_is_readable_sees_data_and_close() -> None:
    a, b = socket.socketpair()
    with a, b:
        assert not is_readable(a)
        b.sendall(b"x")
        assert is_readable(a)
        a.recv(1)
        assert not is_readable(a)
        b.close()
        assert is_readable(a)  # the peer's close: the next read gives b""
    assert is_readable(a)  # closed here: no descriptor counts as readable
    assert is_readable(None)


def test_cached_stream_reads_its_socket_once() -> None:
    class Inner:
        """The part of a network stream CachedStream reads."""

        def __init__(self, sock: socket.socket) -> None:
            self.sock, self.asked = sock, 0

        def get_extra_info(self, info: str) -> object:
            self.asked += 1
            return self.sock if info == "socket" else f"inner {info}"

    a, b = socket.socketpair()
    with a, b:
        inner = Inner(a)
        stream = CachedStream(inner)  # type: ignore[arg-type]
        answers = [stream.get_extra_info("is_readable") for _ in range(5)]
        b.sendall(b"x")
        answers.append(stream.get_extra_info("is_readable"))
        assert answers == [False] * 5 + [True]
        assert inner.asked == 1
        assert stream.get_extra_info("server_addr") == "inner server_addr"
