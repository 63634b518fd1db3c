"""The sunoapi provider against the sunoapi fake: real HTTP on loopback, no network.

Each test drives the provider the way the engine does (submit, poll until a result,
download every file placeholder) and asserts on what a user sees and pays for: the
outputs, the exception raised, and the fake's request log and task list.
"""

from __future__ import annotations

import json
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
    WrongAddress,
)
from runner.fake import FakeServer
from runner.pacing import PRIORITY, FakeClock, Urgency
from runner.providers import Fetch, First, Op, Produced, Result, Streams
from runner.providers.http import PLACEHOLDER_CALLBACK
from runner.providers.sunoapi import ENDPOINTS, UPLOAD_MAX_AGE, SunoApiProvider
from runner.recipe.model import Provider as ProviderConfig
from runner.steps.types import TYPES
from runner.store.journal import Store
from runner.store.uploads import UploadsFile

# The async tests run on each backend of anyio (tests/conftest.py: anyio_backend).
pytestmark = pytest.mark.anyio

KEY = "sk-live-7Hq2mZ9xTestKey0042"
V1 = "/api/v1"


@pytest.fixture
def srv() -> Iterator[FakeServer]:
    with FakeServer("sunoapi", api_key=KEY) as server:
        yield server


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "state").open()


def make(srv: FakeServer, store: Store | None = None, *, env: dict[str, str] | None = None,
         clock: FakeClock | None = None, **config: Any) -> SunoApiProvider:
    cfg = ProviderConfig(**{"kind": "sunoapi", "base_url": srv.url, "upload_base_url": srv.url,
                            "request_timeout": 5.0, **config})
    return SunoApiProvider(cfg, env={"SUNO_API_KEY": KEY} if env is None else env,
                           uploads=UploadsFile(store.root) if store is not None else None,
                           clock=clock or FakeClock())


def op_of(tmp: Path, type_: str, **inputs: Any) -> Op:
    work = tmp / "work" / f"{type_}-{time.monotonic_ns()}"
    work.mkdir(parents=True)
    return Op(f"{type_}[0]", type_, inputs, f"key-{type_}", work, tmp)


async def drive(prov: SunoApiProvider, op: Op, polls: int = 5) -> Result:
    sub = await prov.submit(op)
    if sub.task_id is None:
        assert sub.result is not None
        return sub.result
    for _ in range(polls):
        res = await prov.poll(op, sub.task_id)
        if res is not None:
            return res
    raise AssertionError(f"task {sub.task_id} did not finish in {polls} polls")


def placeholders(value: Any) -> list[Fetch | Produced]:
    if isinstance(value, (Fetch, Produced)):
        return [value]
    if isinstance(value, dict):
        return [p for v in value.values() for p in placeholders(v)]
    if isinstance(value, list):
        return [p for v in value for p in placeholders(v)]
    return []


def assert_files_download(outputs: dict[str, Any]) -> None:
    """Every file placeholder downloads from the fake (or exists, for local ones)."""
    files = placeholders(outputs)
    assert files
    with httpx.Client(timeout=10) as client:
        for f in files:
            if isinstance(f, Produced):
                assert f.path.stat().st_size > 0
                continue
            answer = client.get(f.url)
            assert answer.status_code == 200, f.url
            assert len(answer.content) > 0


def submits(srv: FakeServer, path: str) -> list[dict[str, Any]]:
    return [e for e in srv.log if e["method"] == "POST" and e["path"] == f"{V1}{path}"]


async def generated(srv: FakeServer, tmp: Path, **inputs: Any) -> dict[str, Any]:
    """A finished song's first track, as the engine would pass it on (file downloaded)."""
    async def go() -> dict[str, Any]:
        prov = make(srv)
        try:
            res = await drive(prov, op_of(tmp, "generate", **({"prompt": "la la la",
                                                               "style": "folk",
                                                               "title": "Dawn"} | inputs)))
        finally:
            await prov.aclose()
        return dict(res.outputs["tracks"][0])

    track: dict[str, Any] = await go()
    local = tmp / f"{track['id']}.mp3"
    local.write_bytes(httpx.get(track["audio_url"]).content)  # noqa: ASYNC210
    return {**track, "file": str(local), "image_file": None}


# -- every remote step type, end to end ------------------------------------------------


def test_every_step_type_that_sunoapi_runs_remotely_has_an_endpoint():
    remote = {name for name, t in TYPES.items() if t.support.get("sunoapi") == "remote"}
    assert set(ENDPOINTS) == remote


async def test_generate_outputs_two_takes_with_fetchable_files(srv, store, tmp_path):
    async def go() -> Result:
        prov = make(srv, store)
        try:
            return await drive(prov, op_of(tmp_path, "generate", prompt="first light",
                                           style="indie folk", title="Sunrise"))
        finally:
            await prov.aclose()

    res = await go()
    tracks = res.outputs["tracks"]
    assert len(tracks) == 2
    assert set(tracks[0]) == set(TYPES["generate"].outputs["tracks"][1])
    t = tracks[0]
    assert (t["title"], t["tags"], t["model"], t["model_name"]) == (
        "Sunrise", "indie folk", "V4_5", "chirp-v4-5")
    assert t["duration"] == 30.0
    assert t["file"] == Fetch(t["audio_url"], ".mp3")
    assert res.outputs["file"] is t["file"]
    assert res.outputs["task_id"] == t["task_id"]
    assert_files_download(res.outputs)
    body = submits(srv, "/generate")[0]["json"]
    assert body == {"customMode": True, "instrumental": False, "model": "V4_5",
                    "callBackUrl": PLACEHOLDER_CALLBACK, "prompt": "first light",
                    "style": "indie folk", "title": "Sunrise"}


async def test_generate_without_style_or_title_is_non_custom(srv, tmp_path):
    async def go() -> None:
        prov = make(srv, callback_url="https://example.test/hook")
        try:
            await drive(prov, op_of(tmp_path, "generate", prompt="a song about rain",
                                    instrumental=True, model="V5", negative_tags="metal",
                                    style_weight=0.5))
        finally:
            await prov.aclose()

    await go()
    body = submits(srv, "/generate")[0]["json"]
    assert body == {"customMode": False, "instrumental": True, "model": "V5",
                    "callBackUrl": "https://example.test/hook", "prompt": "a song about rain",
                    "negativeTags": "metal", "styleWeight": 0.5}


def _expected_keys(type_: str) -> set[str]:
    return set(TYPES[type_].outputs)


@pytest.mark.parametrize(("type_", "inputs", "path"), [
    ("extend", {"continue_at": 12, "prompt": "a final chorus"}, "/generate/extend"),
    ("upload_cover", {"style": "jazz", "title": "Redux", "prompt": "words"},
     "/generate/upload-cover"),
    ("upload_extend", {"continue_at": 10, "prompt": "more", "style": "rock", "title": "Up"},
     "/generate/upload-extend"),
    ("add_vocals", {"prompt": "sing this", "style": "soul", "title": "Voice"},
     "/generate/add-vocals"),
    ("add_instrumental", {"tags": "piano, strings", "title": "Bed"},
     "/generate/add-instrumental"),
    ("cover", {}, "/suno/cover/generate"),
    ("timestamped_lyrics", {}, "/generate/get-timestamped-lyrics"),
    ("separate", {"type": "split_stem"}, "/vocal-removal/generate"),
    ("convert", {"format": "wav"}, "/wav/generate"),
    ("video", {"author": "The Band", "domain_name": "band.test"}, "/mp4/generate"),
])
async def test_audio_step_types_end_to_end(srv, store, tmp_path, type_, inputs, path):
    track = await generated(srv, tmp_path)

    async def go() -> Result:
        prov = make(srv, store)
        try:
            return await drive(prov, op_of(tmp_path, type_, audio=track, **inputs))
        finally:
            await prov.aclose()

    res = await go()
    assert set(res.outputs) == _expected_keys(type_)
    assert_files_download(res.outputs)
    assert len(submits(srv, path)) == 1
    body = submits(srv, path)[0]["json"]
    if type_ == "extend":
        assert body == {"audioId": track["id"], "defaultParamFlag": True, "model": "V4_5",
                        "callBackUrl": PLACEHOLDER_CALLBACK, "continueAt": 12,
                        "style": "folk", "title": "Dawn", "prompt": "a final chorus"}
        assert res.outputs["tracks"][0]["duration"] == 12 + 30  # the whole song
    if type_ == "add_instrumental":
        assert body["tags"] == "piano, strings"
        assert "style" not in body
        assert body["negativeTags"] == ""
        assert res.outputs["tracks"][0]["model"] == "V4_5PLUS"
    if type_ in ("upload_cover", "upload_extend", "add_vocals", "add_instrumental"):
        # The track's stored file went through the upload host, not its old CDN link.
        assert "/files/uploads/sunoflow/" in body["uploadUrl"]
    if type_ == "separate":
        assert set(res.outputs["stems"]) == {"vocals", "backing_vocals", "drums", "bass",
                                             "guitar", "keyboard", "percussion", "strings",
                                             "synth", "fx", "brass", "woodwinds"}
    if type_ == "convert":
        t = res.outputs["tracks"][0]
        assert (t["id"], t["task_id"]) == (track["id"], track["task_id"])
        assert res.outputs["url"].split("?")[0].endswith(".wav")
        assert body == {"taskId": track["task_id"], "audioId": track["id"],
                        "callBackUrl": PLACEHOLDER_CALLBACK}
    if type_ == "video":
        assert (body["author"], body["domainName"]) == ("The Band", "band.test")
    if type_ == "timestamped_lyrics":
        words = res.outputs["words"]
        assert words
        assert all(set(w) == {"word", "start", "end"} and w["end"] > w["start"] for w in words)
        text = res.outputs["lrc"].path.read_text()
        assert text.startswith("[00:")
        assert words[0]["word"] in text


async def test_separate_vocal_returns_the_two_stems(srv, tmp_path):
    track = await generated(srv, tmp_path)

    async def go() -> Result:
        prov = make(srv)
        try:
            return await drive(prov, op_of(tmp_path, "separate", audio=track))
        finally:
            await prov.aclose()

    res = await go()
    assert set(res.outputs["stems"]) == {"vocals", "instrumental"}
    assert submits(srv, "/vocal-removal/generate")[0]["json"]["type"] == "separate_vocal"


@pytest.mark.parametrize(("type_", "inputs", "check"), [
    ("lyrics", {"prompt": "a song about the sea"},
     lambda o: o["text"] == o["texts"][0]["text"] and len(o["texts"]) == 2 and o["title"]),
    ("boost_style", {"content": "Pop, Mysterious"},
     lambda o: o["text"].startswith("Pop, Mysterious")),
])
async def test_text_step_types(srv, tmp_path, type_, inputs, check):
    async def go() -> Result:
        prov = make(srv)
        try:
            return await drive(prov, op_of(tmp_path, type_, **inputs))
        finally:
            await prov.aclose()

    res = await go()
    assert set(res.outputs) == _expected_keys(type_)
    assert check(res.outputs)


async def test_extend_of_a_local_track_is_refused_before_paying(srv, tmp_path):
    async def go() -> None:
        prov = make(srv)
        try:
            await prov.submit(op_of(tmp_path, "extend", continue_at=5, audio={
                "id": "local-x-0", "task_id": "local-x", "file": "a.mp3"}))
        finally:
            await prov.aclose()

    with pytest.raises(StepError, match="made on this machine"):
        await go()
    assert srv.log == []


async def test_the_stages_of_a_song_running_then_its_first_track_then_done(tmp_path):
    """PENDING and TEXT_SUCCESS mean running (TEXT_SUCCESS with the stream links, a
    Streams); FIRST_SUCCESS gives the first track alone (a First), exactly as the complete
    result then lists it first."""
    with FakeServer("sunoapi", api_key=KEY, latency_scale=1.0,
                    latency={"generate": {"dist": "fixed", "value": 100}}) as srv:
        async def go() -> None:
            prov = make(srv)
            op = op_of(tmp_path, "generate", prompt="x", style="pop", title="T")
            try:
                sub = await prov.submit(op)
                assert sub.task_id is not None
                assert await prov.poll(op, sub.task_id) is None  # PENDING
                srv.advance(30)
                # TEXT_SUCCESS: still running, with the takes' stream links (a preview
                # for `sunoflow review`, never a result).
                text = await prov.poll(op, sub.task_id)
                assert isinstance(text, Streams)
                assert [t["n"] for t in text.tracks] == [0, 1]
                srv.advance(50)
                first = await prov.poll(op, sub.task_id)  # FIRST_SUCCESS
                assert isinstance(first, First)
                assert first.streams is not None
                assert first.streams.tracks == text.tracks  # the second take's link too
                srv.advance(30)
                done = await prov.poll(op, sub.task_id)
                assert isinstance(done, Result)
                assert first.result.outputs["tracks"] == done.outputs["tracks"][:1]
                assert first.result.outputs["file"] == done.outputs["file"]
                assert first.result.outputs["task_id"] == sub.task_id
            finally:
                await prov.aclose()

        await go()



@pytest.mark.parametrize("style", ["sunoapi", "apibox"])
async def test_a_running_song_offers_its_stream_links_in_either_record_shape(tmp_path, style):
    """TEXT_SUCCESS lists each take's stream (`sunoData[].streamAudioUrl`, or api.box's
    `data[].stream_audio_url`): a Streams, never a Result; the links are the fake's own
    and play real audio."""
    with FakeServer("sunoapi", api_key=KEY, latency_scale=1.0, record_style=style,
                    latency={"generate": {"dist": "fixed", "value": 100}}) as srv:
        async def go() -> None:
            prov = make(srv)
            op = op_of(tmp_path, "generate", prompt="x", style="pop", title="T")
            try:
                sub = await prov.submit(op)
                assert sub.task_id is not None
                srv.advance(30)
                text = await prov.poll(op, sub.task_id)
                assert isinstance(text, Streams)
                assert [t["id"] for t in text.tracks] == srv.world.tasks[sub.task_id].clips
                assert all(t["stream_url"].startswith(f"{srv.url}/files/stream/")
                           for t in text.tracks)
            finally:
                await prov.aclose()

        await go()


def test_only_http_stream_links_of_a_sane_length_are_offered():
    from runner.providers.sunoapi_answers import running_streams, stream_url

    def item(url: object) -> dict[str, object]:
        return {"id": "a", "title": "T", "streamAudioUrl": url}

    for bad in ("javascript:alert(1)", "file:///etc/passwd", "", None, 7,
                "https://h/" + "x" * 5000):
        assert running_streams([item(bad)]) is None, bad
    good = running_streams([item("ftp://h/a.mp3"), item("https://h/b.mp3")])
    assert good is not None
    assert [(t["n"], t["stream_url"]) for t in good.tracks] == [(1, "https://h/b.mp3")]
    assert stream_url(item("http://h/c.mp3")) == "http://h/c.mp3"


# -- uploads --------------------------------------------------------------------------


async def test_a_local_file_is_uploaded_once_for_two_uses_and_again_when_old(srv, store, tmp_path):
    track = await generated(srv, tmp_path)
    demo = tmp_path / "demo.mp3"
    demo.write_bytes(Path(track["file"]).read_bytes())  # noqa: ASYNC240

    async def use(type_: str, prov: SunoApiProvider | None = None, **inputs: Any) -> None:
        mine = prov or make(srv, store)
        try:
            await drive(mine, op_of(tmp_path, type_, audio="demo.mp3", **inputs))
        finally:
            if prov is None:
                await mine.aclose()

    # Two steps at once with the same file share one upload; a second run (a new
    # provider on the same state directory) finds it in the cache.
    async def both() -> None:
        prov = make(srv, store)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: use("upload_cover", prov, style="jazz", title="A",
                                          prompt="p"))
                tg.start_soon(lambda: use("add_instrumental", prov, tags="piano", title="B"))
        finally:
            await prov.aclose()

    await both()
    await use("add_vocals", prompt="sing", style="soul", title="C")
    uploads = [e for e in srv.log if e["path"] == "/api/file-stream-upload"]
    assert len(uploads) == 1
    cache = json.loads((store.root / "uploads.json").read_text())
    assert cache["version"] == 1
    [(sha, entry)] = cache["uploads"].items()
    assert entry["url"] in submits(srv, "/generate/add-vocals")[0]["json"]["uploadUrl"]
    # Uploads live three days: an entry older than the margin is uploaded again.
    entry["uploaded_at"] -= UPLOAD_MAX_AGE + 60
    (store.root / "uploads.json").write_text(json.dumps(cache))
    await use("add_vocals", prompt="again", style="soul", title="D")
    assert len([e for e in srv.log if e["path"] == "/api/file-stream-upload"]) == 2


async def test_a_missing_local_file_is_a_step_error(srv, tmp_path):
    async def go() -> None:
        prov = make(srv)
        try:
            await prov.submit(op_of(tmp_path, "upload_cover", audio="nope.mp3", style="x",
                                    title="y"))
        finally:
            await prov.aclose()

    with pytest.raises(StepError, match="audio file not found: nope.mp3"):
        await go()


# -- errors ----------------------------------------------------------------------------


async def mock(prov: SunoApiProvider, handler: Any) -> None:
    """Answer the provider's API requests with `handler` (for answers the fake never
    gives: headers, echoes, garbage)."""
    await prov.api.aclose()
    prov.api.transport = httpx.MockTransport(handler)


async def submit_error(srv: FakeServer, tmp: Path, type_: str, inputs: dict[str, Any],
                       **config: Any) -> ProviderError:
    async def go() -> ProviderError:
        prov = make(srv, **config)
        try:
            with pytest.raises(ProviderError) as info:
                await drive(prov, op_of(tmp, type_, **inputs))
            return info.value
        finally:
            await prov.aclose()

    exc: ProviderError = await go()
    assert exc.step == f"{type_}[0]"
    return exc


SONG = {"prompt": "words", "style": "pop", "title": "T"}


@pytest.mark.parametrize(("path", "type_", "code", "expected", "words"), [
    ("/generate", "generate", 401, AuthError, "SUNO_API_KEY"),
    ("/generate", "generate", 429, CreditsError, "top up"),
    ("/lyrics", "lyrics", 429, CreditsError, "top up"),
    ("/generate", "generate", 402, CreditsError, "top up"),
    ("/generate", "generate", 405, TransientError, "rate limited"),
    ("/generate", "generate", 430, TransientError, "rate limited"),
    ("/generate", "generate", 455, TransientError, "maintenance"),
    ("/generate", "generate", 500, TransientError, "service error"),
    ("/generate", "generate", 400, StepError, "fault 400"),
    ("/generate", "generate", 413, StepError, "fault 413"),
    ("/generate", "generate", 422, StepError, "fault 422"),
])
async def test_envelope_codes_on_the_generate_family(srv, tmp_path, path, type_, code, expected,
                                              words):
    srv.configure(faults=[{"match": {"path": f"{V1}{path}", "method": "POST"},
                           "action": {"envelope_code": code}}])
    inputs = SONG if type_ == "generate" else {"prompt": "sea"}
    exc = await submit_error(srv, tmp_path, type_, inputs)
    assert type(exc) is expected
    assert words in str(exc)
    assert exc.code == code
    assert srv.tasks == []


@pytest.mark.parametrize(("type_", "path"), [("convert", "/wav/generate"),
                                             ("video", "/mp4/generate"),
                                             ("cover", "/suno/cover/generate"),
                                             ("separate", "/vocal-removal/generate")])
@pytest.mark.parametrize(("code", "expected"), [(402, CreditsError), (429, TransientError)])
async def test_newer_endpoints_say_402_for_credits_and_429_for_rate(srv, tmp_path, type_, path,
                                                                    code, expected):
    track = await generated(srv, tmp_path)
    srv.configure(faults=[{"match": {"path": f"{V1}{path}"}, "action": {"envelope_code": code}}])
    exc = await submit_error(srv, tmp_path, type_, {"audio": track})
    assert type(exc) is expected


async def test_real_credit_exhaustion(srv, tmp_path):
    track = await generated(srv, tmp_path)
    srv.configure(credits=0)
    assert isinstance(await submit_error(srv, tmp_path, "generate", SONG), CreditsError)
    assert isinstance(await submit_error(srv, tmp_path, "convert", {"audio": track}), CreditsError)


async def test_a_wrong_key_is_an_auth_error_naming_the_variable(srv, tmp_path):
    exc = await submit_error(srv, tmp_path, "generate", SONG,
                       env={"MY_SUNO": "sk-wrong-key-123"}, api_key_env="MY_SUNO")
    assert isinstance(exc, AuthError)
    assert "MY_SUNO" in str(exc)
    assert "sk-wrong-key-123" not in str(exc) + repr(exc)


def test_a_missing_key_names_the_variable():
    cfg = ProviderConfig(kind="sunoapi", base_url="http://127.0.0.1:9",
                         api_key_env="SUNO_KEY_FOR_TEST")
    with pytest.raises(AuthError, match="SUNO_KEY_FOR_TEST is not set"):
        SunoApiProvider(cfg, env={"SUNO_API_KEY": KEY})


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_gateway_errors_may_hide_a_task_on_submit_and_are_transient_on_poll(srv, tmp_path,
                                                                           status):
    srv.configure(faults=[{"match": {"path": f"{V1}/generate"}, "times": 1,
                           "action": {"http_status": status, "after_create": True}}])
    exc = await submit_error(srv, tmp_path, "generate", SONG)
    assert isinstance(exc, PossiblySubmitted)
    assert len(srv.tasks) == 1  # it did exist: that is why this is not a free retry

    srv.configure(faults=[{"match": {"path": f"{V1}/generate/record-info"}, "times": 1,
                           "action": {"http_status": status}}])

    async def go() -> None:
        prov = make(srv)
        op = op_of(tmp_path, "generate", **SONG)
        try:
            with pytest.raises(TransientError):
                await prov.poll(op, srv.tasks[0]["task_id"])
            assert await prov.poll(op, srv.tasks[0]["task_id"]) is not None
        finally:
            await prov.aclose()

    await go()


@pytest.mark.parametrize("after_create", [False, True])
async def test_a_reset_connection_on_submit_is_possibly_submitted(srv, tmp_path, after_create):
    srv.configure(faults=[{"match": {"path": f"{V1}/generate"}, "times": 1,
                           "action": {"reset": True, "after_create": after_create}}])
    assert isinstance(await submit_error(srv, tmp_path, "generate", SONG), PossiblySubmitted)


async def test_a_read_timeout_is_possibly_submitted_on_submit_and_transient_on_poll(srv, tmp_path):
    srv.configure(faults=[{"match": {"path": f"{V1}/generate"}, "times": 1,
                           "action": {"delay": 5}}])
    exc = await submit_error(srv, tmp_path, "generate", SONG, request_timeout=0.3)
    assert isinstance(exc, PossiblySubmitted)
    assert "ReadTimeout" in str(exc)
    srv.configure(faults=[{"match": {"path": f"{V1}/generate/record-info"}, "times": 1,
                           "action": {"delay": 5}}])

    async def go() -> None:
        prov = make(srv, request_timeout=0.3)
        try:
            with pytest.raises(TransientError, match="ReadTimeout"):
                await prov.poll(op_of(tmp_path, "generate"), srv.tasks[0]["task_id"])
        finally:
            await prov.aclose()

    await go()


async def test_a_connect_error_is_transient_even_on_submit_once_the_host_answered(tmp_path):
    with FakeServer("sunoapi") as dead:
        url = dead.url
    cfg = ProviderConfig(kind="sunoapi", base_url=url, request_timeout=2.0)

    async def go() -> None:
        prov = SunoApiProvider(cfg, env={"SUNO_API_KEY": KEY}, clock=FakeClock())
        prov.api.answered.add(url)  # it answered earlier in this run: now it is down
        try:
            with pytest.raises(TransientError, match="cannot reach"):
                await prov.submit(op_of(tmp_path, "generate", **SONG))
        finally:
            await prov.aclose()

    await go()


async def test_a_refused_first_connection_is_a_wrong_address(tmp_path):
    with FakeServer("sunoapi") as dead:
        url = dead.url
    cfg = ProviderConfig(kind="sunoapi", base_url=url, request_timeout=2.0)

    async def go() -> None:
        prov = SunoApiProvider(cfg, env={"SUNO_API_KEY": KEY}, clock=FakeClock())
        try:
            with pytest.raises(WrongAddress, match="Check base_url") as info:
                await prov.submit(op_of(tmp_path, "generate", **SONG))
            assert url in str(info.value)
        finally:
            await prov.aclose()

    await go()


async def test_retry_after_is_honoured(srv, tmp_path):
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/generate"):
            return httpx.Response(200, json={"code": 430, "msg": "slow down", "data": None},
                                  headers={"Retry-After": "7"})
        return httpx.Response(429, text="Too Many Requests", headers={"Retry-After": "3"})

    async def go() -> None:
        prov = make(srv)
        await mock(prov, answer)
        try:
            with pytest.raises(TransientError) as first:
                await prov.submit(op_of(tmp_path, "generate", **SONG))
            assert first.value.retry_after == 7
            with pytest.raises(TransientError) as second:
                await prov.poll(op_of(tmp_path, "generate"), "t1")
            assert second.value.retry_after == 3
        finally:
            await prov.aclose()

    await go()


async def test_an_answer_echoing_the_key_is_redacted_and_a_redirect_is_not_followed(srv, tmp_path):
    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(200, json={"code": 400, "msg": "bad header "
                                             + request.headers["authorization"]})
        return httpx.Response(301, headers={"Location": "https://api.example/v1"})

    async def go() -> None:
        prov = make(srv)
        await mock(prov, answer)
        try:
            with pytest.raises(StepError) as info:
                await prov.submit(op_of(tmp_path, "generate", **SONG))
            assert "bad header Bearer [redacted]" in str(info.value)
            assert KEY not in str(info.value)
            with pytest.raises(StepError, match="redirects .* https://api.example/v1"):
                await prov.poll(op_of(tmp_path, "generate"), "t1")
        finally:
            await prov.aclose()

    await go()


def test_a_key_that_cannot_be_a_header_is_refused_without_quoting_it():
    cfg = ProviderConfig(kind="sunoapi", base_url="http://127.0.0.1:9")
    with pytest.raises(AuthError, match="SUNO_API_KEY contains characters") as info:
        SunoApiProvider(cfg, env={"SUNO_API_KEY": "sk-caf\u00e9-key"})
    assert "caf" not in str(info.value)


@pytest.mark.parametrize(("status", "text"), [(200, "<html>oops</html>"),
                                              (200, '{"code": 200, "msg": "ok"}'),
                                              (500, "Internal Server Error")])
async def test_an_unreadable_answer_to_a_submit_may_hide_a_task(srv, tmp_path, status, text):
    """A 200 we cannot read (or a bare 500) may stand for a created task: not a free retry."""
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, text=text)

    async def go() -> None:
        prov = make(srv)
        await mock(prov, answer)
        try:
            with pytest.raises(PossiblySubmitted):
                await prov.submit(op_of(tmp_path, "generate", **SONG))
            with pytest.raises(TransientError):
                await prov.poll(op_of(tmp_path, "generate"), "t1")
        finally:
            await prov.aclose()

    await go()


@pytest.mark.parametrize(("type_", "path"), [("convert", "/wav/generate"),
                                             ("video", "/mp4/generate"),
                                             ("cover", "/suno/cover/generate")])
async def test_409_reuses_the_existing_record(srv, tmp_path, type_, path):
    track = await generated(srv, tmp_path)

    async def go() -> list[Any]:
        prov = make(srv)
        try:
            return [await drive(prov, op_of(tmp_path, type_, audio=track)) for _ in range(2)]
        finally:
            await prov.aclose()

    first, second = await go()
    assert [e["envelope_code"] for e in submits(srv, path)] == [200, 409]
    assert first.outputs == second.outputs
    assert len([t for t in srv.tasks if t["op"] != "generate"]) == 1


@pytest.mark.parametrize(("type_", "fault", "code", "refunded"), [
    ("generate", "GENERATE_AUDIO_FAILED", 531, True),
    ("generate", "SENSITIVE_WORD_ERROR", None, False),
    ("generate", "CREATE_TASK_FAILED", 500, False),
    ("lyrics", "GENERATE_LYRICS_FAILED", None, False),
    ("convert", "GENERATE_WAV_FAILED", 500, False),
    ("video", "GENERATE_MP4_FAILED", 500, False),
    ("separate", "GENERATE_AUDIO_FAILED", 500, False),
    ("cover", "GENERATE_COVER_FAILED", 500, False),
])
async def test_failure_statuses_raise_task_failed(srv, tmp_path, type_, fault, code, refunded):
    inputs: dict[str, Any] = SONG if type_ == "generate" else {"prompt": "sea"}
    if type_ not in ("generate", "lyrics"):
        inputs = {"audio": await generated(srv, tmp_path)}
    action: dict[str, Any] = {"fail_task": fault}
    if code is not None:
        action["code"] = code
    op_name = {"convert": "wav", "video": "mp4", "separate": "separate_vocal"}.get(type_, type_)
    srv.configure(faults=[{"match": {"op": op_name}, "times": 1, "action": action}])
    exc = await submit_error(srv, tmp_path, type_, inputs)
    assert isinstance(exc, TaskFailed)
    assert exc.refunded is refunded
    assert (fault in str(exc)) or type_ == "cover"


async def test_callback_exception_with_songs_is_a_success(srv, tmp_path):
    srv.configure(faults=[{"match": {"op": "generate"}, "times": 1,
                           "action": {"fail_task": "CALLBACK_EXCEPTION"}}])

    async def go() -> Result:
        prov = make(srv)
        try:
            return await drive(prov, op_of(tmp_path, "generate", **SONG))
        finally:
            await prov.aclose()

    assert len((await go()).outputs["tracks"]) == 2


async def test_the_key_never_leaks(srv, tmp_path, caplog):
    """Not in any exception message or repr, nor in a request body the fake logged."""
    track = await generated(srv, tmp_path)
    seen: list[str] = []
    cases = [
        ([{"match": {"path": f"{V1}/generate"}, "action": {"envelope_code": 401}}], "generate",
         SONG),
        ([{"match": {"path": f"{V1}/generate"}, "action": {"http_status": 502}}], "generate",
         SONG),
        ([{"match": {"path": f"{V1}/wav/generate"}, "action": {"envelope_code": 402}}],
         "convert", {"audio": track}),
        ([{"match": {"op": "lyrics"}, "action": {"fail_task": "SENSITIVE_WORD_ERROR"}}],
         "lyrics", {"prompt": "x"}),
        ([{"match": {"path": f"{V1}/generate"}, "action": {"envelope_code": 413}}], "generate",
         SONG),
    ]
    for faults, type_, inputs in cases:
        srv.configure(faults=faults)
        exc = await submit_error(srv, tmp_path, type_, inputs)
        seen += [str(exc), repr(exc), repr(exc.__cause__)]
    srv.configure(faults=[])
    demo = tmp_path / "demo.mp3"
    demo.write_bytes(Path(track["file"]).read_bytes())  # noqa: ASYNC240

    async def go() -> None:
        prov = make(srv)
        seen.extend([repr(prov), repr(prov.api), repr(prov.api.client.headers)])
        try:
            await drive(prov, op_of(tmp_path, "add_instrumental", audio="demo.mp3",
                                    tags="x", title="y"))
        finally:
            await prov.aclose()

    await go()
    seen.append(caplog.text)
    assert all(KEY not in s for s in seen)
    assert KEY not in json.dumps(srv.log)


# -- refresh ------------------------------------------------------------------------------


async def test_refresh_reads_fresh_links_from_record_info(srv, tmp_path):
    async def go() -> Result:
        prov = make(srv)
        op = op_of(tmp_path, "generate", **SONG)
        try:
            first = await drive(prov, op)
            old = first.outputs["tracks"][0]["audio_url"]
            srv.configure(faults=[{"match": {"path": "/files/audio/*"}, "times": 1,
                                   "action": {"expired": True}}])
            async with httpx.AsyncClient() as client:
                assert (await client.get(old)).status_code == 403
            fresh = await prov.refresh(op, first.outputs["task_id"])
            assert fresh is not None
            assert fresh.outputs["tracks"][0]["audio_url"] != old
            return fresh
        finally:
            await prov.aclose()

    assert_files_download((await go()).outputs)
    assert [e for e in srv.log if "recovery" in e["path"]] == []
    assert len(submits(srv, "/generate")) == 1


async def test_refresh_falls_back_to_recovery_when_fresh_links_are_dead_too(srv, tmp_path):
    async def go() -> Result:
        prov = make(srv)
        op = op_of(tmp_path, "generate", **SONG)
        try:
            first = await drive(prov, op)
            # Every audio and image link is dead from now on, fresh or not.
            srv.configure(faults=[{"match": {"path": "/files/audio/*"},
                                   "action": {"expired": True}},
                                  {"match": {"path": "/files/image/*"},
                                   "action": {"expired": True}}])
            fresh = await prov.refresh(op, first.outputs["task_id"])
            assert fresh is not None
            tracks = fresh.outputs["tracks"]
            assert [t["id"] for t in tracks] == [t["id"] for t in first.outputs["tracks"]]
            assert all(t["audio_url"].split("?")[0].endswith(".m4a") for t in tracks)
            assert all(t["file"] == Fetch(t["audio_url"], ".m4a") for t in tracks)
            assert all(t["image_file"] is None for t in tracks)  # artwork is not recovered
            assert fresh.outputs["file"] == tracks[0]["file"]
            return fresh
        finally:
            await prov.aclose()

    assert_files_download((await go()).outputs)
    recovery = submits(srv, "/suno/recovery")
    assert len(recovery) == 1
    assert recovery[0]["json"]["sunoTaskId"] == srv.tasks[0]["task_id"]
    polls = [e for e in srv.log if e["path"] == f"{V1}/suno/recovery/record-info"]
    assert polls
    assert all("task_id" in e["query"] for e in polls)
    assert len(submits(srv, "/generate")) == 1  # never a new paid generation


async def test_refresh_gives_up_when_recovery_fails(srv, tmp_path):
    async def go() -> None:
        prov = make(srv)
        op = op_of(tmp_path, "generate", **SONG)
        try:
            first = await drive(prov, op)
            srv.configure(faults=[{"match": {"path": "/files/audio/*"},
                                   "action": {"expired": True}},
                                  {"match": {"op": "recovery"},
                                   "action": {"fail_task": "feed_failed"}}])
            assert await prov.refresh(op, first.outputs["task_id"]) is None
        finally:
            await prov.aclose()

    await go()


# -- pacing and credits ------------------------------------------------------------------


async def test_every_api_request_goes_through_one_rate_limiter(srv, store, tmp_path):
    clock = FakeClock()
    sent: list[float] = []

    async def go() -> None:
        prov = make(srv, store, clock=clock, rate_limit=(3, 10.0))

        async def stamp(request: httpx.Request) -> None:
            sent.append(clock.now())

        prov.api.client.event_hooks["request"].append(stamp)
        try:
            song = await drive(prov, op_of(tmp_path, "generate", **SONG))
            track = {**song.outputs["tracks"][0], "file": None}
            async with anyio.create_task_group() as tg:
                for _ in range(3):
                    tg.start_soon(drive, prov, op_of(tmp_path, "lyrics", prompt="x"))
                tg.start_soon(drive, prov, op_of(tmp_path, "convert", audio=track))
            assert await prov.credits() is not None
        finally:
            await prov.aclose()

    await go()
    api = [e for e in srv.log if e["op"] != "download"]
    assert len(sent) == len(api) >= 11
    for t in sent:
        assert sum(1 for u in sent if t <= u < t + 10.0) <= 3
    assert clock.slept  # it really had to wait


class GatedClock(FakeClock):
    """A fake clock whose sleeps wait until the test opens the gate: requests can queue
    for the rate limit before time moves on."""

    def __init__(self) -> None:
        super().__init__()
        self.gate: anyio.Event | None = None

    async def sleep(self, seconds: float) -> None:
        if self.gate is None:
            self.gate = anyio.Event()
        await self.gate.wait()
        await super().sleep(seconds)


async def test_requests_waiting_for_the_rate_limit_go_by_the_priority_of_their_task(
        srv, store, tmp_path):
    """The engine sets PRIORITY for each task (runner.engine.priority); the provider's requests
    wait for the shared limiter in that order, not in the order they came."""
    clock = GatedClock()

    async def go() -> None:
        prov = make(srv, store, clock=clock, rate_limit=(1, 10.0))
        limiter = prov.api.limiter
        assert limiter is not None

        async def submit(prompt: str, priority: float) -> None:
            PRIORITY.set(Urgency(priority))
            await prov.submit(op_of(tmp_path, "lyrics", prompt=prompt))

        try:
            await prov.credits()  # the window is full for 10 s
            async with anyio.create_task_group() as tg:
                for prompt, priority in (("low", 0.0), ("mid", 50.0), ("high", 100.0)):
                    tg.start_soon(submit, prompt, priority)
                while len(limiter.line) < 3:
                    await anyio.lowlevel.checkpoint()
                assert clock.gate is not None
                clock.gate.set()
        finally:
            await prov.aclose()

    await go()
    assert [e["json"]["prompt"] for e in srv.log if e["method"] == "POST"] == \
        ["high", "mid", "low"]


async def test_credits_reads_the_balance(srv):
    srv.configure(credits=4321)

    async def go() -> float | None:
        prov = make(srv)
        try:
            return await prov.credits()
        finally:
            await prov.aclose()

    assert await go() == 4321.0


# asyncio only: PerLoop leaves a finished loop's pooled connections to the loop, and asyncio
# closes its transports with it; trio leaves their sockets to the garbage collector (a
# ResourceWarning). run.py now drives a provider from one anyio.run (balance, run, balance,
# close), so the CLI never meets this; a caller that does would close each loop's client.
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
def test_one_provider_serves_several_event_loops(srv, tmp_path, anyio_backend):
    """A provider driven from separate `anyio.run` calls (as run.py did: the balance, the
    run, the balance, the close): pooled connections must not leak from one loop into the
    next. A test of loops: it makes its own, not the plugin's one."""
    prov = make(srv)

    def run(fn: Any, *args: Any) -> Any:
        return anyio.run(fn, *args, backend=anyio_backend)

    assert run(prov.credits) is not None
    res = run(drive, prov, op_of(tmp_path, "generate", **SONG))
    assert run(prov.credits) is not None
    run(prov.aclose)
    assert len(res.outputs["tracks"]) == 2


def test_a_short_key_is_redacted_as_a_token_without_corrupting_answers():
    from runner.providers.http import _redactor

    short = _redactor("k")
    got = short('{"taskId": "k1", "msg": "bad key k"}')
    assert got == '{"taskId": "k1", "msg": "bad key [redacted]"}'
    long_key = "sk-0123456789abcdef"
    assert _redactor(long_key)(f"x{long_key}y") == "x[redacted]y"
