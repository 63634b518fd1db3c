"""A callback and a poll of the same task give the same Result, through the same readers;
and no body, however odd, makes the provider raise anything but TaskFailed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.errors import ProviderError, TaskFailed
from runner.fake import FakeServer
from runner.fake import sunoapi_callbacks as fake_bodies
from runner.pacing import FakeClock
from runner.providers import First, Op, Result, Streams
from runner.providers.sunoapi import ENDPOINTS, SunoApiProvider
from runner.providers.sunoapi_answers import read_music
from runner.recipe.model import Provider as ProviderConfig

# The async tests run on each backend of anyio (tests/conftest.py: anyio_backend).
pytestmark = pytest.mark.anyio

KEY = "sk-callback-results-5521"


@pytest.fixture
def srv() -> Iterator[FakeServer]:
    with FakeServer("sunoapi", api_key=KEY) as server:
        yield server


def make(url: str = "http://127.0.0.1:9") -> SunoApiProvider:
    cfg = ProviderConfig(kind="sunoapi", base_url=url, upload_base_url=url, request_timeout=5)
    return SunoApiProvider(cfg, env={"SUNO_API_KEY": KEY}, clock=FakeClock())


def op_of(tmp: Path, type_: str, **inputs: Any) -> Op:
    work = tmp / f"{type_}-{time.monotonic_ns()}"
    return Op(f"{type_}[0]", type_, inputs, f"key-{type_}", work, tmp)


def callback(srv: FakeServer, task_id: str, stage: str = "complete") -> dict[str, Any]:
    """The body the fake would POST for this task and stage."""
    task = srv.world.tasks[task_id]
    return fake_bodies.body(srv.app.protocol, task, stage, srv.url)  # type: ignore[arg-type]


async def submit_and_poll(prov: SunoApiProvider, op: Op) -> tuple[str, Result]:
    sub = await prov.submit(op)
    assert sub.task_id is not None
    res = await prov.poll(op, sub.task_id)
    assert res is not None
    return sub.task_id, res


async def test_callbacks_and_polls_read_the_same_for_every_family(srv, tmp_path):
    prov = make(srv.url)

    async def main() -> None:
        words = op_of(tmp_path, "lyrics", prompt="rain on the window")
        song = op_of(tmp_path, "generate", title="Rain", style="pop", prompt="la la")
        pairs = [(words, *await submit_and_poll(prov, words)),
                 (song, *await submit_and_poll(prov, song))]
        track = pairs[1][2].outputs["tracks"][0]
        track = {k: v for k, v in track.items() if k not in ("file", "image_file")}
        for type_, extra in (("extend", {"continue_at": 20, "prompt": "more"}),
                             ("convert", {"format": "wav"}), ("video", {}),
                             ("separate", {}), ("cover", {})):
            op = op_of(tmp_path, type_, audio=track, **extra)
            pairs.append((op, *await submit_and_poll(prov, op)))
        assert {op.type for op, _, _ in pairs} == {
            t for t, ep in ENDPOINTS.items() if ep.details is not None} - {
            "upload_cover", "upload_extend", "add_vocals", "add_instrumental"}
        for op, tid, polled in pairs:
            called = prov.from_callback(op, tid, callback(srv, tid))
            assert called is not None, op.type
            assert called.outputs == polled.outputs, op.type
        await prov.aclose()

    await main()


async def test_the_text_stage_means_running_and_the_first_stage_brings_the_first_track(srv,
                                                                                       tmp_path):
    prov = make(srv.url)

    async def main() -> None:
        song = op_of(tmp_path, "generate", title="Rain", style="pop", prompt="la la")
        tid, polled = await submit_and_poll(prov, song)
        # The text stage: still running (never a Result); it brings only stream links.
        text = prov.from_callback(song, tid, callback(srv, tid, "text"))
        assert isinstance(text, Streams)
        assert [t["id"] for t in text.tracks] == [t["id"] for t in polled.outputs["tracks"]]
        assert all(t["stream_url"].startswith(f"{srv.url}/files/stream/") for t in text.tracks)
        first = prov.from_callback(song, tid, callback(srv, tid, "first"))
        assert isinstance(first, First)
        assert first.result.outputs["tracks"] == polled.outputs["tracks"][:1]
        await prov.aclose()

    await main()


def test_a_first_stage_without_the_first_clips_url_means_still_running(tmp_path):
    """Nothing to download yet: no First, from a poll's answer or a callback alike (one
    reader reads both)."""
    prov = make()
    song = op_of(tmp_path, "generate", prompt="x")
    heads: list[Any] = [{"id": "a", "audioUrl": ""}, {"id": "a"},
                        {"audioUrl": "http://h/a.mp3"}, "not an item"]
    for head in heads:
        data = {"taskId": "t", "status": "FIRST_SUCCESS",
                "response": {"sunoData": [head, {"id": "b", "audioUrl": "http://h/b.mp3"}]}}
        assert read_music(song, "t", data) is None, head
    assert read_music(song, "t", {"status": "FIRST_SUCCESS", "response": {}}) is None
    body = {"code": 200, "data": {"callbackType": "first", "task_id": "t", "data": [
        {"id": "a", "audio_url": ""}, {"id": "b", "audio_url": "http://h/b.mp3"}]}}
    assert prov.from_callback(song, "t", body) is None
    body["data"]["data"][0]["audio_url"] = "http://h/a.mp3"  # type: ignore[index]
    first = prov.from_callback(song, "t", body)
    assert isinstance(first, First)
    assert [t["id"] for t in first.result.outputs["tracks"]] == ["a"]


@pytest.mark.parametrize(("code", "refunded"), [(531, True), (501, False)])
async def test_an_error_callback_fails_the_task_as_the_poll_does(srv, tmp_path, code, refunded):
    srv.configure(faults=[{"match": {"op": "generate"}, "action": {
        "fail_task": "GENERATE_AUDIO_FAILED", "code": code}}])
    prov = make(srv.url)

    async def main() -> None:
        song = op_of(tmp_path, "generate", title="Rain", style="pop", prompt="la la")
        sub = await prov.submit(song)
        assert sub.task_id is not None
        with pytest.raises(TaskFailed) as polled:
            await prov.poll(song, sub.task_id)
        with pytest.raises(TaskFailed) as called:
            prov.from_callback(song, sub.task_id, callback(srv, sub.task_id, "error"))
        assert called.value.refunded is polled.value.refunded is refunded
        await prov.aclose()

    await main()


def test_a_callback_names_its_task_in_either_casing():
    prov = make()
    assert prov.callback_task_id({"data": {"task_id": "a1"}}) == "a1"
    assert prov.callback_task_id({"data": {"taskId": "b2"}}) == "b2"
    assert prov.callback_task_id({"data": {"taskId": 42}}) == "42"
    for body in ({}, {"data": None}, {"data": {"task_id": ["x"]}}, {"data": {"taskId": ""}},
                 {"data": {"task_id": True}}, [], "x"):
        assert prov.callback_task_id(body) is None


def test_urls_that_are_not_http_are_dropped(tmp_path):
    prov = make()
    song = op_of(tmp_path, "generate", prompt="x")
    body = {"code": 200, "data": {"callbackType": "complete", "task_id": "t", "data": [
        {"id": "a", "audio_url": "file:///etc/passwd"}, {"id": "b", "audio_url": "http://x/b"}]}}
    assert prov.from_callback(song, "t", body) is None  # one take has no usable URL


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=20)
FIELDS = st.sampled_from(["code", "msg", "data", "callbackType", "task_id", "taskId",
                          "audio_url", "image_url", "duration", "id", "images", "video_url",
                          "audioWavUrl", "vocal_removal_info", "text", "status", "title"])
SHAPED = st.fixed_dictionaries({
    "code": st.sampled_from([200, "200", 531, None, "x"]),
    "data": st.fixed_dictionaries({
        "callbackType": st.sampled_from(["text", "first", "complete", "error", 3]),
        "task_id": st.just("t"),
        "data": st.lists(st.dictionaries(FIELDS, JSON | st.just("http://h/f.mp3")),
                         max_size=3) | JSON,
        "images": st.lists(JSON | st.just("http://h/i.png"), max_size=2) | JSON,
        "vocal_removal_info": st.dictionaries(FIELDS, JSON | st.just("http://h/v.mp3")) | JSON,
        "video_url": JSON | st.just("http://h/v.mp4"),
        "audioWavUrl": JSON | st.just("http://h/w.wav"),
    }),
})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(type_=st.sampled_from(sorted(t for t, ep in ENDPOINTS.items() if ep.details)),
       body=SHAPED | JSON)
def test_no_body_makes_the_provider_raise_anything_but_task_failed(tmp_path_factory, type_,
                                                                   body):
    prov = make()
    track = {"id": "a", "task_id": "t0", "title": "x", "model": "V4_5"}
    op = op_of(tmp_path_factory.getbasetemp(), type_, audio=track, prompt="p")
    try:
        res = prov.from_callback(op, "t", body)
    except TaskFailed:
        return
    if isinstance(res, First):
        assert [t["id"] for t in res.result.outputs["tracks"]] != [""]
        res = res.result
    assert res is None or isinstance(res.outputs, dict)


async def test_an_answer_that_quotes_the_callback_url_does_not_leak_the_token(tmp_path):
    prov = make()
    token = "tok-" + "Z" * 40
    prov.use_callback_url(f"https://hooks.example.net/cb/{token}")

    def echo(request: httpx.Request) -> httpx.Response:
        sent = request.read().decode()
        return httpx.Response(200, json={"code": 400, "msg": f"bad request: {sent}"})

    async def main() -> ProviderError:
        await prov.api.aclose()
        prov.api.transport = httpx.MockTransport(echo)
        with pytest.raises(ProviderError) as info:
            await prov.submit(op_of(tmp_path, "lyrics", prompt="rain"))
        await prov.aclose()
        return info.value

    exc = await main()
    assert "hooks.example.net/cb/[redacted]" in str(exc)
    assert token not in str(exc)
