"""The callback listener over real loopback HTTP, and the registry behind it: what a
stranger can send changes nothing; a good callback is filed at once."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import httpx
import pytest

from runner.callbacks.listener import LOG_MAX, MAX_BODY, Listener, parse_address
from runner.callbacks.registry import Callbacks
from runner.errors import UsageError
from runner.pacing import Clock
from runner.providers.sunoapi_callback import task_id

Test = Callable[["Rig"], Awaitable[None]]


class Rig:
    def __init__(self, listener: Listener, callbacks: Callbacks, base: str,
                 notes: list[str]) -> None:
        self.listener, self.callbacks, self.base, self.notes = listener, callbacks, base, notes
        self.http = httpx.AsyncClient(trust_env=False, timeout=10)

    @property
    def url(self) -> str:
        return self.callbacks.url(self.base)

    def inbox(self, tid: str) -> list[Any]:
        return list(self.callbacks.tasks[tid].inbox)


def serve(test: Test, **kw: Any) -> Rig:
    rig: Rig | None = None

    async def main() -> None:
        nonlocal rig
        callbacks = Callbacks(task_id, max_interval=60.0)
        notes: list[str] = []
        listener = Listener(callbacks, notes.append, **kw)
        base = await listener.bind("127.0.0.1", 0)
        rig = Rig(listener, callbacks, base, notes)
        callbacks.expect("t1")
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve)
            try:
                await test(rig)
            finally:
                await rig.http.aclose()
                tg.cancel_scope.cancel()

    anyio.run(main)
    assert rig is not None
    return rig


async def read_all(stream: Any) -> bytes:
    data = b""
    with anyio.fail_after(10):
        while True:
            try:
                data += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return data


def complete(tid: str = "t1") -> dict[str, Any]:
    return {"code": 200, "msg": "All generated successfully.",
            "data": {"callbackType": "complete", "task_id": tid, "data": []}}


def test_a_callback_for_a_task_of_this_run_is_filed_and_answered_200():
    async def test(rig: Rig) -> None:
        resp = await rig.http.post(rig.url, json=complete())
        assert resp.status_code == 200
        assert resp.headers["connection"] == "close"
        assert rig.inbox("t1") == [complete()]

    rig = serve(test)
    assert rig.callbacks.stats.received == 1
    assert rig.notes == []


def test_a_reverse_proxy_may_keep_a_path_prefix():
    async def test(rig: Rig) -> None:
        url = f"{rig.base}/hooks/sunoflow/cb/{rig.callbacks.token}?from=proxy"
        assert (await rig.http.post(url, json=complete())).status_code == 200
        assert rig.inbox("t1") == [complete()]

    serve(test)


def test_a_wrong_token_or_path_is_404_logged_without_the_token_and_changes_nothing():
    async def test(rig: Rig) -> None:
        token = rig.callbacks.token
        forged = [f"{rig.base}/cb/{token[:-1]}x", f"{rig.base}/cb/", f"{rig.base}/cb/{token}/x",
                  f"{rig.base}/{token}", f"{rig.base}/"]
        for url in forged:
            resp = await rig.http.post(url, json=complete())
            assert resp.status_code == 404, url
            assert token not in resp.text
        assert rig.inbox("t1") == []

    rig = serve(test)
    assert rig.callbacks.stats.rejected == {"wrong path or token": 5}
    assert rig.callbacks.stats.received == 0
    assert len(rig.notes) == 5
    assert all("wrong path or token" in n and "127.0.0.1" in n for n in rig.notes)
    assert not any(rig.callbacks.token in n or rig.callbacks.token[:8] in n for n in rig.notes)


def test_an_unknown_task_is_404_and_a_body_without_a_task_is_400():
    async def test(rig: Rig) -> None:
        assert (await rig.http.post(rig.url, json=complete("t2"))).status_code == 404
        assert (await rig.http.post(rig.url, json={"code": 200, "data": {}})).status_code == 400
        assert (await rig.http.post(rig.url, json={"data": {"task_id": "x" * 500}})
                ).status_code == 400
        assert rig.inbox("t1") == []
        assert not rig.callbacks.expects("t2")

    rig = serve(test)
    assert rig.callbacks.stats.rejected == {"unknown task": 1, "no task id": 2}
    assert [n.split(")")[0] for n in rig.notes] == [
        "callback rejected (unknown task", "callback rejected (no task id",
        "callback rejected (no task id"]


@pytest.mark.parametrize("raw", [
    b"{not json", b"", b"[1, 2]", b'"text"', b"\xff\xfe\x00", b"[" * 100_000 + b"]" * 100_000,
    b'{"data": ' * 50_000 + b"1" + b"}" * 50_000,
])
def test_malformed_json_is_400_and_changes_nothing(raw: bytes):
    async def test(rig: Rig) -> None:
        resp = await rig.http.post(rig.url, content=raw,
                                   headers={"content-type": "application/json"})
        assert resp.status_code == 400
        assert rig.inbox("t1") == []

    rig = serve(test)
    assert rig.callbacks.stats.rejected == {"malformed JSON": 1}


def test_an_oversized_body_is_413_whether_announced_or_chunked():
    big = json.dumps({**complete(), "pad": "x" * MAX_BODY}).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(big), 65536):
            yield big[i:i + 65536]

    async def test(rig: Rig) -> None:
        resp = await rig.http.post(rig.url, content=big)
        assert resp.status_code == 413
        resp = await rig.http.post(rig.url, content=chunks())
        assert resp.status_code == 413
        # Just under the cap is fine.
        fits = json.dumps({**complete(), "pad": "x" * (MAX_BODY - 200)}).encode()
        assert (await rig.http.post(rig.url, content=fits)).status_code == 200
        assert len(rig.inbox("t1")) == 1

    rig = serve(test)
    assert rig.callbacks.stats.rejected == {"body too large": 2}


def test_only_post_is_accepted():
    async def test(rig: Rig) -> None:
        assert (await rig.http.get(rig.url)).status_code == 405
        assert (await rig.http.put(rig.url, json=complete())).status_code == 405
        assert rig.inbox("t1") == []

    serve(test)


def test_not_http_is_closed_unanswered():
    async def test(rig: Rig) -> None:
        host, port = rig.base.removeprefix("http://").split(":")
        async with await anyio.connect_tcp(host, int(port)) as raw:
            await raw.send(b"\x16\x03\x01 this is not HTTP\r\n\r\n")
            assert await read_all(raw) == b""
        assert rig.inbox("t1") == []

    rig = serve(test)
    assert rig.callbacks.stats.rejected == {"not HTTP/1.1": 1}


def test_a_slow_client_is_cut_off_and_does_not_hold_up_others():
    async def test(rig: Rig) -> None:
        host, port = rig.base.removeprefix("http://").split(":")
        async with await anyio.connect_tcp(host, int(port)) as slow:
            await slow.send(f"POST /cb/{rig.callbacks.token} HTTP/1.1\r\nHost: x\r\n"
                            "Content-Length: 100\r\n\r\n{\"da".encode())
            # Another sender is served while the slow one dawdles.
            assert (await rig.http.post(rig.url, json=complete())).status_code == 200
            # After read_timeout: a 408 (its headers were read) and the connection closed.
            assert (await read_all(slow)).startswith(b"HTTP/1.1 408 ")
        assert rig.inbox("t1") == [complete()]

    rig = serve(test, read_timeout=0.3)
    assert rig.callbacks.stats.rejected == {"too slow": 1}


def test_connections_beyond_the_cap_are_closed_unanswered():
    async def test(rig: Rig) -> None:
        host, port = rig.base.removeprefix("http://").split(":")
        async with await anyio.connect_tcp(host, int(port)) as hog:
            await hog.send(b"POST /cb/")  # holds the only slot
            with anyio.fail_after(10):
                while rig.listener.active < 1:  # noqa: ASYNC110 (a counter, no event)
                    await anyio.sleep(0.01)
            with pytest.raises(httpx.TransportError):
                await rig.http.post(rig.url, json=complete())
        with anyio.fail_after(10):
            while rig.listener.active:  # noqa: ASYNC110 (a counter, no event)
                await anyio.sleep(0.01)
        assert (await rig.http.post(rig.url, json=complete())).status_code == 200
        assert rig.inbox("t1") == [complete()]

    rig = serve(test, max_connections=1)
    assert rig.callbacks.stats.rejected["too many connections"] == 1


def test_a_callback_that_overtakes_its_submit_waits_for_the_task_id():
    async def test(rig: Rig) -> None:
        cb = rig.callbacks
        with cb.submitting():
            assert (await rig.http.post(rig.url, json=complete("t9"))).status_code == 200
            cb.expect("t9")
        assert rig.inbox("t9") == [complete("t9")]
        # Once no submit is on the wire, what was held for no task is dropped.
        with cb.submitting():
            assert (await rig.http.post(rig.url, json=complete("ghost"))).status_code == 200
        assert not cb.early
        assert not cb.expects("ghost")
        assert (await rig.http.post(rig.url, json=complete("ghost"))).status_code == 404

    rig = serve(test)
    assert rig.callbacks.stats.rejected == {"unknown task": 2}
    assert rig.callbacks.stats.received == 1


def test_callbacks_after_a_task_finished_are_answered_200_and_ignored():
    async def test(rig: Rig) -> None:
        rig.callbacks.finish("t1")
        for _ in range(2):
            assert (await rig.http.post(rig.url, json=complete())).status_code == 200
        assert rig.inbox("t1") == []

    rig = serve(test)
    assert rig.callbacks.stats.ignored == 2


def test_a_one_mebibyte_callback_is_answered_at_once():
    fits = json.dumps({**complete(), "pad": "x" * (MAX_BODY - 200)}).encode()

    async def test(rig: Rig) -> None:
        with anyio.fail_after(5):  # the services give up after 15 s
            assert (await rig.http.post(rig.url, content=fits)).status_code == 200

    serve(test)


def test_the_fallback_schedule_learns_from_callbacks_only():
    cb = Callbacks(task_id, max_interval=60.0)
    assert [cb.fallback_after("generate", n) for n in range(3)] == [180.0, 240.0, 300.0]
    for d in range(150, 200):  # durations 150..199: the 90th percentile is 194
        cb.learn("generate", float(d))
    assert [cb.fallback_after("generate", n) for n in range(2)] == \
        pytest.approx([1.1 * 194, 1.1 * 194 + 60.0])
    cb.learn("lyrics", 10.0)
    assert cb.fallback_after("lyrics", 0) == 60.0  # at least max_interval


def test_each_run_gets_its_own_unguessable_token():
    a, b = Callbacks(task_id, 1.0), Callbacks(task_id, 1.0)
    assert a.token != b.token
    assert len(a.token) >= 43
    assert a.url("https://cb.example.org/") == f"https://cb.example.org/cb/{a.token}"


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:8787", ("127.0.0.1", 8787)), ("localhost:0", ("localhost", 0)),
    ("[::1]:9000", ("::1", 9000)), ("0.0.0.0:80", ("0.0.0.0", 80)),
])
def test_listen_addresses(text: str, expected: tuple[str, int]):
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["8787", "host:", ":80", "::1:80", "h:70000", "h:x"])
def test_bad_listen_addresses(text: str):
    with pytest.raises(UsageError, match="--listen"):
        parse_address(text)


def test_what_is_held_is_bounded_and_the_excess_is_503(monkeypatch):
    monkeypatch.setattr("runner.callbacks.registry.HELD_MAX", 5)

    async def test(rig: Rig) -> None:
        rig.callbacks.expect("t2")
        codes = [(await rig.http.post(rig.url, json=complete("t1" if i % 2 else "t2"))
                  ).status_code for i in range(7)]
        assert codes == [200] * 5 + [503] * 2
        assert len(rig.inbox("t1")) + len(rig.inbox("t2")) == 5
        # Taking a task's bodies makes room again.
        assert len(await rig.callbacks.wait("t1", 0, Clock())) == 2
        assert (await rig.http.post(rig.url, json=complete())).status_code == 200

    rig = serve(test)
    assert rig.callbacks.stats.rejected == {"too many held": 2}
    assert rig.callbacks.held == 4


def test_rejections_are_logged_up_to_a_limit_then_counted():
    async def test(rig: Rig) -> None:
        for _ in range(LOG_MAX + 5):
            assert (await rig.http.post(f"{rig.base}/cb/nope", json={})).status_code == 404

    rig = serve(test)
    assert len(rig.notes) == LOG_MAX
    assert rig.notes[-1].endswith("further rejections are only counted")
    assert rig.callbacks.stats.rejected == {"wrong path or token": LOG_MAX + 5}
