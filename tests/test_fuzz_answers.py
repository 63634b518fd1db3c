"""Random and adversarial service answers fed to each provider's answer readers.

Every submit, poll and callback reader of both remote providers gets answers built by
hypothesis: the documented shapes with any field swapped for any JSON value (huge and
non-finite numbers, nested containers, control characters), arbitrary JSON, and raw bytes
(truncated JSON, nesting bombs, binary). Whatever the answer, the provider answers with a
result, "still running", or one of its own errors (runner.errors.ProviderError), never
anything else; and an answer without end is read only up to the cap. Deterministic
(derandomize) and quick: the answers go through an httpx.MockTransport, no sockets.
"""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.errors import PossiblySubmitted, ProviderError
from runner.pacing import FakeClock
from runner.providers import Op
from runner.providers.newapi import NewApiProvider
from runner.providers.sunoapi import ENDPOINTS, SunoApiProvider
from runner.recipe.model import Provider as ProviderConfig

# The async tests run on each backend of anyio (tests/conftest.py: anyio_backend).
pytestmark = pytest.mark.anyio

KEY = "sk-fuzz-answers-Key-0001"
FUZZ = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])

KEYS = ["code", "msg", "data", "taskId", "task_id", "status", "response", "sunoData",
        "audioUrl", "imageUrl", "streamAudioUrl", "id", "title", "tags", "prompt",
        "duration", "modelName", "successFlag", "errorCode", "errorMessage", "param",
        "images", "alignedWords", "word", "startS", "endS", "result", "creditsConsumed",
        "audioWavUrl", "videoUrl", "vocalUrl", "text", "callbackType", "audio_url",
        "image_url", "image_large_url", "metadata", "fail_reason", "message", "clips",
        "model_name", "vocal_removal_info", "downloadUrl", "credits"]
LEAF = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10 ** 30,
                                                         max_value=10 ** 4000),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
    st.sampled_from(["SUCCESS", "FIRST_SUCCESS", "TEXT_SUCCESS", "PENDING", "FAILURE",
                     "GENERATE_AUDIO_FAILED", "CALLBACK_EXCEPTION", "IN_PROGRESS", "1",
                     "3", "http://127.0.0.1:9/a.mp3", "https://x.invalid/a.m3u8",
                     "success", "\x1b[2J::error::x\r\n", KEY, "t1"]),
    st.sampled_from([200, 201, 400, 409, 429, 430, 455, 500, 531, 0, -1, 1, 2, 3]),
)
VALUE = st.recursive(LEAF, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), inner, max_size=6)),
    max_leaves=25)

CLIP = {"id": "c1", "audioUrl": "http://127.0.0.1:9/a.mp3", "imageUrl":
        "http://127.0.0.1:9/a.jpeg", "title": "t", "tags": "pop", "duration": 30.0,
        "prompt": "p", "modelName": "chirp-v4-5", "audio_url": "http://127.0.0.1:9/a.mp3",
        "metadata": {"duration": 30, "tags": "pop"}}
TEMPLATES: list[Any] = [
    {"code": 200, "msg": "success", "data": {"taskId": "t1"}},
    {"code": 200, "msg": "success", "data": {"taskId": "t1", "status": "SUCCESS",
                                             "response": {"sunoData": [CLIP, CLIP]}}},
    {"code": 200, "msg": "success", "data": {"taskId": "t1", "successFlag": "SUCCESS",
                                             "response": {"audioWavUrl": "http://h/a.wav",
                                                          "images": ["http://h/a.png"],
                                                          "data": [{"text": "la"}]}}},
    {"code": 200, "data": {"alignedWords": [{"word": "la", "startS": 1, "endS": 2}],
                           "result": "style", "successFlag": "1"}},
    {"code": "success", "message": "", "data": "t1"},
    {"code": "success", "data": [{"task_id": "t1", "status": "SUCCESS",
                                  "data": [CLIP, CLIP]}]},
]


def _replace(doc: Any, path: list[int], value: Any) -> Any:
    """`doc` with the node that `path` picks (child indexes, modulo) replaced by `value`."""
    if not path or not isinstance(doc, (dict, list)) or not doc:
        return value
    if isinstance(doc, dict):
        keys = list(doc)
        k = keys[path[0] % len(keys)]
        return {**doc, k: _replace(doc[k], path[1:], value)}
    i = path[0] % len(doc)
    return [*doc[:i], _replace(doc[i], path[1:], value), *doc[i + 1:]]


SPOILED = st.builds(lambda t, p, v: json.dumps(_replace(t, p, v)).encode(),
                    st.sampled_from(TEMPLATES), st.lists(st.integers(0, 7), max_size=5), VALUE)
RAW = st.one_of(
    st.binary(max_size=200),
    st.builds(lambda t, n: json.dumps(t).encode()[:n], st.sampled_from(TEMPLATES),
              st.integers(0, 200)),
    st.builds(lambda n, o: (b'{"code":200,"data":{"taskId":"t1","x":' + o * n),
              st.integers(1, 200_000), st.sampled_from([b"[", b'{"a":'])),
)
BODY = st.one_of(SPOILED, VALUE.map(lambda v: json.dumps(v).encode()), RAW)
STATUS = st.sampled_from([200, 200, 200, 201, 400, 401, 404, 409, 429, 500, 502, 504])


def config(kind: str) -> ProviderConfig:
    return ProviderConfig(kind=kind, base_url="http://svc.invalid",
                          upload_base_url="http://svc.invalid", request_timeout=5.0)


def make(kind: str, status: int, body: bytes) -> Any:
    cls = SunoApiProvider if kind == "sunoapi" else NewApiProvider
    prov = cls(config(kind), env={"SUNO_API_KEY": KEY}, clock=FakeClock())
    if kind == "newapi":
        prov.batch_window = 0.0
    prov.api.transport = httpx.MockTransport(
        lambda request: httpx.Response(status, content=body))
    return prov


TRACK = {"id": "c1", "task_id": "t0", "title": "t", "tags": "pop", "duration": 30.0,
         "model": "V4_5", "audio_url": "http://127.0.0.1:9/a.mp3", "file": None}
SUNO_OPS = [(t, {"prompt": "la", "style": "pop", "title": "x", "audio": TRACK,
                 "continue_at": 10, "content": "pop"}) for t in sorted(ENDPOINTS)
            if t not in ("upload_cover", "upload_extend", "add_vocals", "add_instrumental")]
RELAY_OPS = [("generate", {"prompt": "la", "style": "pop", "title": "x"}),
             ("lyrics", {"prompt": "la"}),
             ("extend", {"audio": TRACK, "continue_at": 10, "prompt": "la"})]


def op(tmp: Path, type_: str, inputs: dict[str, Any]) -> Op:
    return Op(f"{type_}[0]", type_, dict(inputs), f"key-{type_}", tmp / type_, tmp)


async def read_all(prov: Any, ops: list[Op]) -> list[Any]:
    """Each operation's submit and poll against the one answer; what each gave back."""
    got: list[Any] = []
    for o in ops:
        for call in ("submit", "poll"):
            try:
                got.append(await (prov.submit(o) if call == "submit" else prov.poll(o, "t1")))
            except ProviderError as exc:
                got.append(exc)
            except NotImplementedError:
                pass
    await prov.aclose()
    return got


@pytest.mark.parametrize("kind", ["sunoapi", "newapi"])
@FUZZ
@given(status=STATUS, body=BODY)
async def test_any_answer_gives_a_result_or_the_providers_own_error(tmp_path_factory, kind, status,
                                                                    body):
    tmp = tmp_path_factory.mktemp("fuzz")
    ops = [op(tmp, t, i) for t, i in (SUNO_OPS if kind == "sunoapi" else RELAY_OPS)]
    await read_all(make(kind, status, body), ops)  # raises anything else


@pytest.mark.parametrize("kind", ["sunoapi", "newapi"])
@FUZZ
@given(body=VALUE, stage=st.sampled_from(["text", "first", "complete", "error", "SUCCESS",
                                          "FAILURE", "IN_PROGRESS"]), code=LEAF)
def test_any_callback_gives_a_result_none_or_task_failed(tmp_path_factory, kind, body, stage,
                                                         code):
    from runner.errors import TaskFailed

    tmp = tmp_path_factory.mktemp("cb")
    prov = make(kind, 200, b"")
    if kind == "sunoapi":
        shaped = {"code": code, "msg": "x", "data": {"callbackType": stage, "task_id": "t1",
                                                     "data": body}}
    else:
        shaped = {"task_id": "t1", "status": stage, "fail_reason": code, "data": body}
    for t, inputs in SUNO_OPS if kind == "sunoapi" else RELAY_OPS:
        for b in (body, shaped, {"data": shaped}):
            try:
                prov.from_callback(op(tmp, t, inputs), "t1", b)
            except TaskFailed:
                pass


async def _endless() -> AsyncIterator[bytes]:
    yield b'{"code":200,"msg":"success","data":{"taskId":"t-endless"},"pad":"'
    while True:
        yield b"x" * (1 << 16)


# The answer is read with aiter_bytes (it decodes a Content-Encoding), which httpx runs over
# its own aiter_raw: closing ours leaves that one for trio to collect (tests/conftest.py).
@pytest.mark.filterwarnings(
    "ignore:Async generator 'httpx._models.Response.aiter_raw' was garbage collected"
    ":ResourceWarning")
@pytest.mark.parametrize("kind", ["sunoapi", "newapi"])
async def test_an_endless_answer_is_read_up_to_the_cap_only(tmp_path, kind):
    prov = make(kind, 200, b"")
    prov.api.transport = httpx.MockTransport(
        lambda request: httpx.Response(200, content=_endless()))
    o = op(tmp_path, "generate", {"prompt": "la", "style": "pop", "title": "x"})

    async def submit() -> Any:
        try:
            return await prov.submit(o)
        except (PossiblySubmitted, MemoryError) as exc:
            return exc

    tracemalloc.start()
    try:
        got = await submit()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20  # the cap is 8 MiB
    assert got.task_id == "t-endless"  # named before the flood: kept, not paid again
