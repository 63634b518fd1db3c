"""httpx clients whose connection pool costs O(1) system calls per pooled connection.

httpcore's pool looks at every pooled connection each time a request starts or a response
closes (`_assign_requests_to_connections`), and asks each idle one whether the server has
closed it (`has_expired`: the socket is readable). The anyio stream answers that by
building its whole table of socket attributes first, a `getpeername` system call and some
dozen objects, only to read the raw socket out of it: with a few dozen idle connections
that was the largest single cost of a run's CPU (measured: docs/BENCHMARKS-album.md,
session 4). `CachedSocket` remembers the raw socket of each stream, so the check is the
one `poll` it needs, and answers exactly what it answered before.

Nothing here changes what is sent, on which connection, or when: the pool keeps its own
logic, only the question it asks is cheaper.
"""

# The `timeout` parameters are httpcore's interface, which these classes implement.
# ruff: noqa: ASYNC109

from __future__ import annotations

import select
import socket
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx


def is_readable(sock: socket.socket | None) -> bool:
    """httpcore's `is_socket_readable`: data (or the server's close) waits on `sock`; a
    socket that is gone counts as readable (its next read gives the terminating b"")."""
    fd = None if sock is None else sock.fileno()
    if fd is None or fd < 0:
        return True
    if not hasattr(select, "poll"):  # Windows
        ready, _, _ = select.select([fd], [], [], 0)
        return bool(ready)
    p = select.poll()
    p.register(fd, select.POLLIN)
    return bool(p.poll(0))


_NO_SOCKET = object()


class CachedStream(httpcore.AsyncNetworkStream):
    """A network stream that looks up its raw socket once (it never changes)."""

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self.inner = inner
        self._sock: Any = _NO_SOCKET

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self.inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self.inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        return CachedStream(await self.inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            return is_readable(self.get_extra_info("socket"))
        if info == "socket":
            if self._sock is _NO_SOCKET:
                self._sock = self.inner.get_extra_info("socket")
            return self._sock
        return self.inner.get_extra_info(info)


class CachedBackend(httpcore.AsyncNetworkBackend):
    """Wraps a network backend: its streams are `CachedStream`s."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend) -> None:
        self.inner = inner

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None
                          ) -> httpcore.AsyncNetworkStream:
        return CachedStream(await self.inner.connect_tcp(
            host, port, timeout=timeout, local_address=local_address,
            socket_options=socket_options))

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None
                                  ) -> httpcore.AsyncNetworkStream:
        return CachedStream(await self.inner.connect_unix_socket(
            path, timeout=timeout, socket_options=socket_options))

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def cheap_pool_checks(client: httpx.AsyncClient) -> int:
    """Put `CachedBackend` under every connection pool of `client` (its transport and any
    proxy mounts from the environment); return how many pools it wraps.

    httpx builds the pools itself and offers no way to pass a network backend, so this
    reaches one private attribute (`_pool._network_backend`) of each transport and
    leaves any transport it does not recognise (a MockTransport in tests, or a future
    httpx) as it is: the client then works exactly as before, only without the saving.
    tests/test_httpclient.py checks that the installed httpx is recognised."""
    transports = [getattr(client, "_transport", None),
                  *getattr(client, "_mounts", {}).values()]
    wrapped = 0
    for transport in transports:
        pool = getattr(transport, "_pool", None)
        backend = getattr(pool, "_network_backend", None)
        if isinstance(backend, CachedBackend):
            continue
        if isinstance(pool, httpcore.AsyncConnectionPool) and \
                isinstance(backend, httpcore.AsyncNetworkBackend):
            pool._network_backend = CachedBackend(backend)  # noqa: SLF001 - see above
            wrapped += 1
    return wrapped


def async_client(**kw: Any) -> httpx.AsyncClient:
    """An httpx.AsyncClient made with `kw`, its pools' checks made cheap."""
    client = httpx.AsyncClient(**kw)
    cheap_pool_checks(client)
    return client
