"""The new-api relay provider against the relay fake: real HTTP on loopback, no network."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from runner.errors import (
    AuthError,
    CreditsError,
    PossiblySubmitted,
    ProviderError,
    StepError,
    TaskFailed,
    TransientError,
    UsageError,
)
from runner.fake import FakeServer
from runner.pacing import FakeClock
from runner.providers import Fetch, Op, Produced, Result
from runner.providers.newapi import NewApiProvider
from runner.recipe.model import Provider as ProviderConfig
from runner.steps.types import TYPES
from runner.studio.probe import probe

# The async tests run on each backend of anyio (tests/conftest.py: anyio_backend).
pytestmark = pytest.mark.anyio

KEY = "sk-relay-Zq81TestKey"


@pytest.fixture
def srv() -> Iterator[FakeServer]:
    with FakeServer("newapi", api_key=KEY) as server:
        yield server


def make(srv: FakeServer, **config: Any) -> NewApiProvider:
    cfg = ProviderConfig(**{"kind": "newapi", "base_url": srv.url, "request_timeout": 5.0,
                            **config})
    return NewApiProvider(cfg, env={"SUNO_API_KEY": KEY}, clock=FakeClock())


def op_of(tmp: Path, type_: str, step: str | None = None, **inputs: Any) -> Op:
    work = tmp / "work" / f"{type_}-{time.monotonic_ns()}"
    work.mkdir(parents=True)
    return Op(step or f"{type_}[0]", type_, inputs, f"key-{type_}", work, tmp)


async def drive(prov: NewApiProvider, op: Op, polls: int = 6) -> Result:
    sub = await prov.submit(op)
    assert sub.task_id is not None
    for _ in range(polls):
        res = await prov.poll(op, sub.task_id)
        if res is not None:
            return res
    raise AssertionError(f"task {sub.task_id} did not finish in {polls} polls")


async def with_provider(srv: FakeServer, body: Any, **config: Any) -> Any:
    async def go() -> Any:
        prov = make(srv, **config)
        try:
            return await body(prov)
        finally:
            await prov.aclose()

    return await go()


def submits(srv: FakeServer, action: str) -> list[dict[str, Any]]:
    return [e for e in srv.log if e["path"] == f"/suno/submit/{action}"]


def fetches(srv: FakeServer) -> list[dict[str, Any]]:
    return [e for e in srv.log if e["path"] == "/suno/fetch"]


async def song(srv: FakeServer, tmp: Path) -> dict[str, Any]:
    res = await with_provider(srv, lambda p: drive(p, op_of(tmp, "generate", prompt="la la",
                                                      style="folk", title="Dawn")))
    return dict(res.outputs["tracks"][0])


# -- generate, lyrics -------------------------------------------------------------------


@pytest.mark.parametrize("type_", sorted(t for t, st in TYPES.items()
                                          if st.support.get("newapi") == "remote"))
async def test_every_step_type_the_relay_runs_is_submitted(srv, tmp_path, type_):
    source = await song(srv, tmp_path)
    inputs: dict[str, Any] = {
        "generate": {"prompt": "x"}, "lyrics": {"prompt": "x"},
        "extend": {"audio": source, "continue_at": 5},
        "upload_extend": {"audio": source["audio_url"], "continue_at": 5},
    }[type_]
    res = await with_provider(srv, lambda p: drive(p, op_of(tmp_path, type_, **inputs)))
    assert set(res.outputs) == set(TYPES[type_].outputs)


async def test_generate_custom_maps_fields_and_model(srv, tmp_path):
    res = await with_provider(srv, lambda p: drive(p, op_of(
        tmp_path, "generate", prompt="[Verse] hello", style="indie", title="Hi", model="V5",
        instrumental=False)))
    body = submits(srv, "music")[0]["json"]
    assert body == {"mv": "chirp-v5", "make_instrumental": False, "prompt": "[Verse] hello",
                    "title": "Hi", "tags": "indie"}
    tracks = res.outputs["tracks"]
    assert len(tracks) == 2
    t = tracks[0]
    assert (t["title"], t["tags"], t["model"], t["model_name"], t["duration"]) == (
        "Hi", "indie", "V5", "chirp-v5", 30.0)
    assert t["task_id"] == res.outputs["task_id"]
    assert t["file"] == Fetch(t["audio_url"], ".mp3")
    assert isinstance(t["image_file"], Fetch)
    assert httpx.get(t["audio_url"]).status_code == 200  # noqa: ASYNC210


async def test_generate_inspiration_mode_and_mv_override(srv, tmp_path):
    await with_provider(srv, lambda p: drive(p, op_of(tmp_path, "generate", prompt="rain at night",
                                                 instrumental=True)))
    await with_provider(srv, lambda p: drive(p, op_of(tmp_path, "generate", prompt="x", style="s",
                                                 model="V4", mv="chirp-auk")))
    first, second = (e["json"] for e in submits(srv, "music"))
    assert first == {"mv": "chirp-v4-5", "make_instrumental": True,
                     "gpt_description_prompt": "rain at night"}
    assert second["mv"] == "chirp-auk"


async def test_lyrics(srv, tmp_path):
    res = await with_provider(srv, lambda p: drive(p, op_of(tmp_path, "lyrics",
                                                       prompt="a song about the sea")))
    assert submits(srv, "lyrics")[0]["json"] == {"prompt": "a song about the sea"}
    assert res.outputs["text"] == res.outputs["texts"][0]["text"]
    assert res.outputs["title"] == res.outputs["texts"][0]["title"]
    assert res.outputs["text"]


# -- extend: the whole song ----------------------------------------------------------------


async def test_extend_by_remote_concat_is_the_whole_song(srv, tmp_path):
    source = await song(srv, tmp_path)
    res = await with_provider(srv, lambda p: drive(p, op_of(tmp_path, "extend", audio=source,
                                                       continue_at=12, prompt="more")))
    body = submits(srv, "music")[-1]["json"]
    assert (body["task_id"], body["continue_clip_id"], body["continue_at"]) == (
        source["task_id"], source["id"], 12)
    assert (body["mv"], body["title"], body["tags"]) == ("chirp-v4-5", "Dawn", "folk")
    assert len(submits(srv, "concat")) == 2  # one per take
    tracks = res.outputs["tracks"]
    assert [t["duration"] for t in tracks] == [12 + 30, 12 + 30]
    assert res.outputs["task_id"] in res.task_ids
    assert len(res.task_ids) == 3
    assert httpx.get(tracks[0]["audio_url"]).status_code == 200  # noqa: ASYNC210


# Short clips keep the local ffmpeg work of these tests small.
SHORT = {"clip_duration": 8.0, "continuation_duration": 4.0}


async def test_extend_with_local_concat_joins_source_and_continuation(tmp_path):
    with FakeServer("newapi", api_key=KEY, **SHORT) as srv:
        source = await song(srv, tmp_path)
        res = await with_provider(srv, lambda p: drive(p, op_of(tmp_path, "extend", audio=source,
                                                           continue_at=5)), concat="local")
        assert submits(srv, "concat") == []
    tracks = res.outputs["tracks"]
    assert len(tracks) == 2
    for t in tracks:
        assert isinstance(t["file"], Produced)
        whole = probe(t["file"].path).duration
        assert whole == pytest.approx(5 + 4, abs=0.1)
        assert t["duration"] == pytest.approx(whole, abs=0.01)
    assert res.outputs["file"] == tracks[0]["file"]


async def test_invalid_action_falls_back_to_local_concat_and_says_so_once(tmp_path, caplog):
    with FakeServer("newapi", api_key=KEY, relay_extras=False, clips_per_task=1,
                    **SHORT) as srv:
        source = await song(srv, tmp_path)

        async def two(prov: NewApiProvider) -> list[Result]:
            return [await drive(prov, op_of(tmp_path, "extend", audio=source, continue_at=at))
                    for at in (2, 6)]

        with caplog.at_level(logging.WARNING, logger="sunoflow"):
            first, second = await with_provider(srv, two)
        concat = submits(srv, "concat")
    assert [e["status"] for e in concat] == [400]  # asked once, then never again
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert len(caplog.records) == 1
    assert "does not offer concat" in caplog.records[0].message
    assert probe(first.outputs["file"].path).duration == pytest.approx(2 + 4, abs=0.1)
    assert probe(second.outputs["file"].path).duration == pytest.approx(6 + 4, abs=0.1)


async def test_upload_extend_imports_the_audio_then_extends_it(srv, tmp_path):
    source = await song(srv, tmp_path)
    res = await with_provider(srv, lambda p: drive(p, op_of(
        tmp_path, "upload_extend", audio=source["audio_url"], continue_at=8, style="rock",
        title="Up")))
    upload = [e for e in srv.log if e["path"] == "/suno/uploads/audio-url"]
    assert [e["json"] for e in upload] == [{"url": source["audio_url"]}]
    body = submits(srv, "music")[-1]["json"]
    assert body["task_id"] == upload[0]["task_id"]
    assert res.outputs["tracks"][0]["duration"] == 8 + 30


async def test_upload_extend_on_a_relay_without_uploads_is_a_step_error(tmp_path):
    with FakeServer("newapi", api_key=KEY, relay_extras=False) as srv:
        source = await song(srv, tmp_path)
        with pytest.raises(StepError, match="does not import audio"):
            await with_provider(srv, lambda p: p.submit(op_of(
                tmp_path, "upload_extend", audio=source["audio_url"], continue_at=5)))
        assert len(submits(srv, "music")) == 1  # only the source song: nothing paid


# -- batched polling --------------------------------------------------------------------


async def test_concurrent_polls_share_one_fetch(srv, tmp_path):
    n = 6

    async def body(prov: NewApiProvider) -> list[Result | None]:
        ops = [op_of(tmp_path, "generate", f"song[{i}]", prompt=f"p{i}", style="s",
                     title=f"T{i}") for i in range(n)]
        ids = [(await prov.submit(op)).task_id for op in ops]
        results: list[Result | None] = [None] * n

        async def one(i: int) -> None:
            results[i] = await prov.poll(ops[i], str(ids[i]))

        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(one, i)
        assert [r.outputs["task_id"] for r in results if r] == ids
        return results

    results = await with_provider(srv, body)
    assert all(r is not None for r in results)
    [fetch] = fetches(srv)
    assert len(fetch["json"]["ids"]) == n


async def test_a_failed_shared_fetch_fails_every_poll_with_its_own_step(srv, tmp_path):
    async def body(prov: NewApiProvider) -> list[BaseException]:
        ops = [op_of(tmp_path, "lyrics", f"words[{i}]", prompt="x") for i in range(3)]
        ids = [(await prov.submit(op)).task_id for op in ops]
        srv.configure(faults=[{"match": {"path": "/suno/fetch"}, "times": 1,
                               "action": {"http_status": 502}}])
        errors: list[BaseException] = []

        async def one(i: int) -> None:
            try:
                await prov.poll(ops[i], str(ids[i]))
            except ProviderError as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            for i in range(3):
                tg.start_soon(one, i)
        return errors

    errors = await with_provider(srv, body)
    assert all(isinstance(e, TransientError) for e in errors)
    assert sorted(e.step for e in errors) == ["words[0]", "words[1]", "words[2]"]
    assert len(fetches(srv)) == 1


# -- errors ----------------------------------------------------------------------------


async def submit_error(srv: FakeServer, tmp: Path, type_: str = "generate", **config: Any
                       ) -> ProviderError:
    inputs = {"prompt": "x", "style": "pop", "title": "T"} if type_ == "generate" else \
        {"prompt": "x"}

    async def body(prov: NewApiProvider) -> ProviderError:
        with pytest.raises(ProviderError) as info:
            await drive(prov, op_of(tmp, type_, **inputs))
        return info.value

    exc: ProviderError = await with_provider(srv, body, **config)
    assert exc.step == f"{type_}[0]"
    return exc


async def test_no_quota_is_a_credits_error(srv, tmp_path):
    srv.configure(credits=0)
    exc = await submit_error(srv, tmp_path)
    assert isinstance(exc, CreditsError)
    assert "top up" in str(exc)


async def test_a_wrong_key_is_an_auth_error(srv, tmp_path):
    async def body(prov: NewApiProvider) -> None:
        await prov.submit(op_of(tmp_path, "lyrics", prompt="x"))

    cfg = ProviderConfig(kind="newapi", base_url=srv.url, api_key_env="RELAY_KEY")

    async def go() -> None:
        prov = NewApiProvider(cfg, env={"RELAY_KEY": "sk-not-it"})
        try:
            await body(prov)
        finally:
            await prov.aclose()

    with pytest.raises(AuthError, match="RELAY_KEY") as info:
        await go()
    assert "sk-not-it" not in str(info.value)


@pytest.mark.parametrize(("action", "expected"), [
    ({"http_status": 502}, PossiblySubmitted),
    ({"http_status": 504, "after_create": True}, PossiblySubmitted),
    ({"envelope_code": "rate_limit_exceeded", "http_status": 429}, TransientError),
    ({"envelope_code": "internal_error", "http_status": 500}, TransientError),
    ({"envelope_code": "do_request_failed", "http_status": 500}, PossiblySubmitted),
    ({"envelope_code": "invalid_request", "message": "prompt_empty"}, StepError),
    ({"envelope_code": "quota_not_enough", "http_status": 403}, CreditsError),
])
async def test_submit_errors(srv, tmp_path, action, expected):
    srv.configure(faults=[{"match": {"path": "/suno/submit/music"}, "action": action}])
    exc = await submit_error(srv, tmp_path)
    assert type(exc) is expected
    assert KEY not in str(exc)


async def test_a_failed_task_is_refunded_on_the_relay(srv, tmp_path):
    srv.configure(faults=[{"match": {"op": "generate"}, "times": 1,
                           "action": {"fail_task": "FAILURE", "message": "upstream error"}}])
    exc = await submit_error(srv, tmp_path)
    assert isinstance(exc, TaskFailed)
    assert exc.refunded is True
    assert "upstream error" in str(exc)


def test_base_url_is_required():
    with pytest.raises(UsageError, match="base_url"):
        NewApiProvider(ProviderConfig(kind="newapi"), env={"SUNO_API_KEY": KEY})


async def test_rate_limited_polls_and_submits_share_the_limiter(srv, tmp_path):
    clock = FakeClock()
    sent: list[float] = []

    async def go() -> None:
        cfg = ProviderConfig(kind="newapi", base_url=srv.url, rate_limit=(2, 5.0))
        prov = NewApiProvider(cfg, env={"SUNO_API_KEY": KEY}, clock=clock)

        async def stamp(request: httpx.Request) -> None:
            sent.append(clock.now())

        prov.api.client.event_hooks["request"].append(stamp)
        try:
            for i in range(3):
                await drive(prov, op_of(tmp_path, "lyrics", f"w[{i}]", prompt=f"p{i}"))
        finally:
            await prov.aclose()

    await go()
    assert len(sent) == len(srv.log) == 6
    for t in sent:
        assert sum(1 for u in sent if t <= u < t + 5.0) <= 2
