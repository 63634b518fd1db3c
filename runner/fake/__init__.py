"""Fake Suno-style services for tests, benchmarks and users: real HTTP on loopback.

    from runner.fake import FakeServer

    with FakeServer(protocol="sunoapi", api_key="k", latency_scale=0) as srv:
        srv.url                      # http://127.0.0.1:PORT
        srv.configure(faults=[...])  # same keys as POST /_fake/config
        srv.log                      # the request log (list of dicts)
        srv.callbacks                # callbacks delivered (config key `callbacks`)

Keyword options are configuration keys (see `runner.fake.config.DEFAULTS`); `config`
takes a whole configuration dict (a parsed `--config` file) that the keywords override.
From a shell: `python -m runner.fake --protocol sunoapi --port 0`.

Never imports the client's parts (recipe, plan, engine, store, providers, CLI): the fake is
our reading of the services, written apart from the client it tests, so that one mistake
shared by both cannot make them agree (tests/test_layout.py checks it).
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

from runner.fake.config import ConfigError
from runner.fake.newapi import NewApi
from runner.fake.server import App, Protocol, make_server
from runner.fake.state import World
from runner.fake.sunoapi import SunoApi

PROTOCOLS: dict[str, type[Protocol]] = {"sunoapi": SunoApi, "newapi": NewApi}

__all__ = ["PROTOCOLS", "ConfigError", "FakeServer"]


class FakeServer:
    """A fake service in a background thread; a context manager that starts and stops it."""

    def __init__(
        self,
        protocol: str = "sunoapi",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        config: dict[str, Any] | None = None,
        **options: Any,
    ) -> None:
        if protocol not in PROTOCOLS:
            raise ConfigError(
                f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}"
            )
        self.protocol = protocol
        self.world = World(protocol, {**(config or {}), **options})
        self.app = App(self.world, PROTOCOLS[protocol](self.world))
        self._address = (host, port)
        self._httpd: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> FakeServer:
        if self._httpd is None:
            self.world.stopping.clear()
            self._httpd = make_server(self.app, *self._address)
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.01},
                name=f"fake-{self.protocol}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake sleeping handlers and close every connection."""
        if self._httpd is None:
            return
        self.world.stopping.set()
        self.world.wake()  # the callback courier, if any
        self._httpd.shutdown()
        self._httpd.close_connections()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the fake server is not running; call start() first")
        return self.world.base_url

    @property
    def log(self) -> list[dict[str, Any]]:
        return self.world.snapshot_log()

    @property
    def callbacks(self) -> list[dict[str, Any]]:
        """The callbacks sent (or not) so far: task_id, stage, url, status, error."""
        return self.world.snapshot_deliveries()

    @property
    def tasks(self) -> list[dict[str, Any]]:
        return self.world.snapshot_tasks()

    @property
    def credits(self) -> int:
        return self.world.balance()

    def configure(self, patch: dict[str, Any] | None = None, **options: Any) -> dict[str, Any]:
        """Merge into the running configuration (as `POST /_fake/config`); returns it."""
        return self.world.configure({**(patch or {}), **options})

    def reset(self) -> None:
        self.world.reset()

    def advance(self, seconds: float) -> float:
        """Move the fake's clock forward, as if `seconds` of wall time had passed."""
        return self.world.advance(seconds)

    def expire_links(self) -> int:
        """Kill every result link handed out so far (as `POST /_fake/expire`): the recorded
        URLs then answer 403 and only the service's fresh links work."""
        return self.world.expire_all()
