"""Every documented answer shape and status word, played by the fake (issue 16, issue 15
§6): api.box's record-info items, the quick start's GENERATING / FAILED, the family of
failure words, the relay's FAIL with its reason, and the default deadline that ends a wait
for a status no page documents. Provider tests drive the provider as the engine does;
the CLI tests run `sunoflow` and count what was paid on the fake."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from fakecli import config_of

from runner.engine import deadlines
from runner.errors import TaskFailed
from runner.fake import FakeServer
from runner.pacing import FakeClock
from runner.providers import Fetch, Op, Result, codes
from runner.providers.newapi import NewApiProvider
from runner.providers.sunoapi import SunoApiProvider
from runner.recipe.model import Provider as ProviderConfig

# The async tests run on each backend of anyio (tests/conftest.py: anyio_backend).
pytestmark = pytest.mark.anyio

KEY = "sk-shapes-Key-5150aa"
README = Path(__file__).resolve().parent.parent / "README.md"


def sunoapi(srv: FakeServer) -> SunoApiProvider:
    cfg = ProviderConfig(kind="sunoapi", base_url=srv.url, upload_base_url=srv.url,
                         request_timeout=5.0)
    return SunoApiProvider(cfg, env={"SUNO_API_KEY": KEY}, clock=FakeClock())


def relay(srv: FakeServer) -> NewApiProvider:
    cfg = ProviderConfig(kind="newapi", base_url=srv.url, request_timeout=5.0)
    prov = NewApiProvider(cfg, env={"SUNO_API_KEY": KEY}, clock=FakeClock())
    prov.batch_window = 0.0
    return prov


def op_of(tmp: Path, type_: str, **inputs: Any) -> Op:
    work = tmp / "work" / f"{type_}-{time.monotonic_ns()}"
    return Op(f"{type_}[0]", type_, inputs, f"key-{type_}", work, tmp)


SONG = {"prompt": "la la la", "style": "folk", "title": "Dawn"}


async def finish(prov: Any, op: Op, srv: FakeServer, *, advance: float = 0.0) -> Any:
    """Submit, let the fake's clock run on by `advance`, then poll until an answer."""
    try:
        sub = await prov.submit(op)
        if advance:
            srv.advance(advance)
        for _ in range(20):
            res = await prov.poll(op, sub.task_id)
            if isinstance(res, Result):
                return res
        raise AssertionError("never finished")
    finally:
        await prov.aclose()


# --- api.box's record-info shape -------------------------------------------------------------

@pytest.mark.parametrize("style", ["sunoapi", "apibox"])
async def test_both_record_shapes_give_the_same_tracks(tmp_path, style):
    with FakeServer("sunoapi", api_key=KEY, record_style=style) as srv:
        res = await finish(sunoapi(srv), op_of(tmp_path, "generate", **SONG), srv)
        raw = srv.log[-1]
    tracks = res.outputs["tracks"]
    assert len(tracks) == 2
    for t in tracks:
        assert isinstance(t["file"], Fetch)
        assert t["file"].suffix == ".mp3"
        assert t["audio_url"] == t["file"].url
        assert ".png" in t["image_url"]
        assert t["duration"] == 30.0
        assert t["model_name"] == "chirp-v4-5"
        # The stream is exposed, as a plain URL: never a file to store.
        assert t["stream_url"].startswith("http")
        assert "/stream/" in t["stream_url"]
    assert raw["path"] == "/api/v1/generate/record-info"


def test_the_apibox_fake_answers_snake_case_under_response_data(tmp_path):
    import httpx

    with FakeServer("sunoapi", record_style="apibox") as srv:
        with httpx.Client() as c:
            tid = c.post(f"{srv.url}/api/v1/generate",
                         json={"customMode": True, "instrumental": False, "model": "V4_5",
                               "callBackUrl": "https://x.invalid/cb", **SONG}).json()
            tid = tid["data"]["taskId"]
            srv.advance(1000)
            data = c.get(f"{srv.url}/api/v1/generate/record-info",
                         params={"taskId": tid}).json()["data"]
    assert "sunoData" not in data["response"]
    item = data["response"]["data"][0]
    assert {"audio_url", "stream_audio_url", "image_url", "duration"} <= set(item)
    assert "audioUrl" not in item


# --- status words ----------------------------------------------------------------------------

async def test_the_quick_starts_generating_keeps_polling_then_success(tmp_path):
    with FakeServer("sunoapi", api_key=KEY, running_status="GENERATING",
                    latency_scale=1.0, latency={"*": {"dist": "fixed", "value": 50}}) as srv:
        async def go() -> Any:
            prov = sunoapi(srv)
            try:
                op = op_of(tmp_path, "generate", **SONG)
                sub = await prov.submit(op)
                running = await prov.poll(op, sub.task_id)
                srv.advance(100)
                return running, await prov.poll(op, sub.task_id)
            finally:
                await prov.aclose()

        running, done = await go()
    assert running is None
    assert isinstance(done, Result)


@pytest.mark.parametrize("word", ["FAILED", "SENSITIVE_WORD_ERROR", "CREATE_TASK_FAILED",
                                  "GENERATE_AUDIO_FAILED", "MODERATION_FAILURE",
                                  "UPSTREAM_ERROR"])
async def test_every_failure_word_ends_the_task_with_its_message(tmp_path, word):
    fault = {"match": {"path": "/api/v1/generate"},
             "action": {"fail_task": word, "code": 501, "message": "no song today"}}
    with FakeServer("sunoapi", api_key=KEY, faults=[fault]) as srv:
        with pytest.raises(TaskFailed) as info:
            await finish(sunoapi(srv), op_of(tmp_path, "generate", **SONG), srv)
    assert word in str(info.value)
    assert "no song today" in str(info.value)
    assert not info.value.refunded


async def test_a_531_failure_is_refunded(tmp_path):
    fault = {"match": {"path": "/api/v1/generate"},
             "action": {"fail_task": "GENERATE_AUDIO_FAILED", "code": 531}}
    with FakeServer("sunoapi", api_key=KEY, faults=[fault]) as srv:
        with pytest.raises(TaskFailed) as info:
            await finish(sunoapi(srv), op_of(tmp_path, "generate", **SONG), srv)
    assert info.value.refunded


@pytest.mark.parametrize("word", ["FAIL", "FAILURE"])
async def test_the_relays_fail_word_ends_the_task_with_its_reason(tmp_path, word):
    fault = {"match": {"path": "/suno/submit/music"},
             "action": {"fail_task": "GENERATE_AUDIO_FAILED", "message": "lyrics flagged"}}
    with FakeServer("newapi", api_key=KEY, faults=[fault], relay_fail_status=word) as srv:
        with pytest.raises(TaskFailed) as info:
            await finish(relay(srv), op_of(tmp_path, "generate", **SONG), srv)
    assert f"{word}: lyrics flagged" in str(info.value)


def test_status_words_by_family():
    for word in ("PENDING", "TEXT_SUCCESS", "FIRST_SUCCESS", "GENERATING", "IN_PROGRESS",
                 "QUEUED", "NOT_START", "SUBMITTED"):
        assert not codes.failed(word)
        assert codes.known(word)
    for word in ("FAIL", "FAILURE", "FAILED", "SENSITIVE_WORD_ERROR", "GENERATE_WAV_FAILED",
                 "SOMETHING_ERROR", "failed"):
        assert codes.failed(word)
    assert not codes.known("THINKING_HARD")


def test_every_documented_code_has_one_meaning():
    for code in (400, 408, 413, 451, 500, 501, 531):
        assert codes.TASK[code].outcome in (codes.REFUNDED, codes.FAILED)
    assert codes.task(531).outcome == codes.REFUNDED
    assert codes.task(501).outcome == codes.FAILED
    assert codes.task(None, "credits refunded").outcome == codes.REFUNDED
    for code in (400, 401, 402, 404, 405, 409, 413, 422, 429, 430, 451, 455, 500):
        assert code in codes.ENVELOPE
    assert codes.envelope(429, newer=False).outcome == codes.STOP
    assert codes.envelope(429, newer=True).outcome == codes.NOT_CREATED
    assert codes.envelope(430, newer=False).outcome == codes.NOT_CREATED


def test_the_readme_prints_the_code_table():
    text = README.read_text(encoding="utf-8")
    for row in codes.table():
        assert row in text, f"README lacks the row: {row}"


# --- models ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("model", "mv"), [("V3_5", "chirp-v3-5"), ("V4_5", "chirp-v4-5")])
async def test_a_relay_extend_keeps_its_sources_model(tmp_path, model, mv):
    async def go(srv: FakeServer) -> tuple[Any, Any]:
        prov = relay(srv)
        try:
            op = op_of(tmp_path, "generate", model=model, **SONG)
            sub = await prov.submit(op)
            srv.advance(1000)
            song = await prov.poll(op, sub.task_id)
            src = song.outputs["tracks"][0]
            ext = op_of(tmp_path, "extend", audio=src, continue_at=10.0, prompt="more")
            await prov.submit(ext)
            return src, srv.log
        finally:
            await prov.aclose()

    with FakeServer("newapi", api_key=KEY) as srv:
        src, log = await go(srv)
    sent = [e["json"] for e in log if e["path"] == "/suno/submit/music"]
    assert [b["mv"] for b in sent] == [mv, mv]
    assert src["model"] == model
    assert src["model_name"] == mv


async def test_relay_mv_values_map_back_to_models(tmp_path):
    async def go(srv: FakeServer) -> Any:
        prov = relay(srv)
        try:
            op = op_of(tmp_path, "generate", mv="chirp-v3-0", **SONG)
            sub = await prov.submit(op)
            srv.advance(1000)
            song = await prov.poll(op, sub.task_id)
            src = song.outputs["tracks"][0]
            await prov.submit(op_of(tmp_path, "extend", audio=src, continue_at=5.0))
            return src
        finally:
            await prov.aclose()

    with FakeServer("newapi", api_key=KEY) as srv:
        src = await go(srv)
        sent = [e["json"]["mv"] for e in srv.log if e["path"] == "/suno/submit/music"]
    assert src["model"] == "V3"
    assert src["model_name"] == "chirp-v3-0"
    assert sent == ["chirp-v3-0", "chirp-v3-0"]


async def test_v3_5_is_accepted_with_its_limits(tmp_path):
    from runner.steps import models

    assert "V3_5" in models.MODELS
    problems = models.check("generate", {"model": "V3_5", "style": "s" * 201, "title": "t",
                                         "prompt": "p"})
    assert any(f == "style" and "200" in m for f, m, _ in problems)
    with FakeServer("sunoapi", api_key=KEY) as srv:
        res = await finish(sunoapi(srv), op_of(tmp_path, "generate", model="V3_5", **SONG), srv)
    assert res.outputs["tracks"][0]["model"] == "V3_5"
    assert res.outputs["tracks"][0]["model_name"] == "chirp-v3-5"


# --- no endless waits (issue 15 §6) ------------------------------------------------------------

def test_every_remote_operation_has_a_default_deadline():
    from runner.steps.types import TYPES

    remote = [n for n, t in TYPES.items() if "remote" in t.support.values()]
    assert remote
    for name in remote:
        assert 0 < deadlines.timeout_for(name, None, {}) <= 3600
    assert deadlines.timeout_for("generate", None, {"generate": 5.0}) == 5.0
    assert deadlines.timeout_for("generate", None, {"*": 7.0}) == 7.0
    assert deadlines.timeout_for("generate", 2.0, {"generate": 5.0}) == 2.0


WAIT = """\
version: 1
name: wait
provider:
  kind: sunoapi
  poll_interval: 0.05
  max_poll_interval: 0.1
  timeouts: {generate: %(t)s}
steps:
  song:
    uses: generate
    with: {title: Rain, style: pop, prompt: "la la"}
outputs:
  - path: rain.mp3
    from: "{{ steps.song.file }}"
"""


def sunoflow(tmp: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SUNO_API_KEY": KEY}
    return subprocess.run(
        [sys.executable, "-m", "runner", "run", str(tmp / "w.yaml"), "--base-url", url,
         "--out", str(tmp / "out"), "--state-dir", str(tmp / "state"),
         "--report", str(tmp / "report.json"), *extra],
        env=env, capture_output=True, text=True, timeout=90, check=False)


def test_a_status_nobody_documents_times_out_and_the_next_run_pays_nothing(tmp_path):
    # The host says THINKING for as long as the task runs (an hour of its clock): the
    # provider's timeout ends the wait; the task id stays recorded.
    (tmp_path / "w.yaml").write_text(WAIT % {"t": "0.3s"})
    with FakeServer("sunoapi", api_key=KEY, running_status="THINKING", latency_scale=1.0,
                    latency={"*": {"dist": "fixed", "value": 3600}}) as srv:
        first = sunoflow(tmp_path, srv.url)
        assert first.returncode == 1, first.stderr
        out = first.stdout + first.stderr
        assert "the task status 'THINKING', which its documentation does not name" in out
        assert "timed out after 0.3 s waiting for task" in out
        assert "provider.timeouts.generate" in out
        assert "the next run polls it again" in out
        srv.advance(7200)  # the task ends meanwhile
        (tmp_path / "w.yaml").write_text(WAIT % {"t": "10m"})
        second = sunoflow(tmp_path, srv.url)
        assert second.returncode == 0, second.stdout + second.stderr
        paid = Counter(e["path"] for e in srv.log if e["method"] == "POST")
    assert paid == Counter({"/api/v1/generate": 1})
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["counts"]["submissions"] == 0
    assert (tmp_path / "out" / "rain.mp3").read_bytes()[:3] in (b"ID3", b"\xff\xfb")


# --- a wrong address fails fast (issue 15 §7) ---------------------------------------------

ONE = """\
version: 1
name: addr
provider: {kind: %(kind)s, poll_interval: 0.05, max_poll_interval: 0.1}
steps:
  words:
    uses: lyrics
    with: {prompt: "A song about rain"}
  song:
    uses: generate
    with: {title: Rain, style: pop, prompt: "la la"}
"""


@pytest.mark.parametrize("kind", ["sunoapi", "newapi"])
def test_a_refused_first_connection_stops_the_run_at_once(tmp_path, kind):
    import socket

    with socket.socket() as s:  # a port nobody listens on: connections are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    (tmp_path / "w.yaml").write_text(ONE % {"kind": kind})
    run = sunoflow(tmp_path, url)
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    assert f"cannot connect to {url} (Connection refused)" in out
    assert "Check base_url in the recipe's provider block (or --base-url)" in out
    assert "no task was created" in out
    assert "retrying" not in out  # no minutes of retries
    assert "Traceback" not in out
    for step in ("words", "song"):
        assert f"{step}: {step}:" not in out
    # Said once, whichever way the run met it (the balance probe or the first submits).
    assert out.count("cannot connect to") <= 2  # the live line and the summary's
    report = json.loads((tmp_path / "report.json").read_text()) \
        if (tmp_path / "report.json").exists() else None
    if report is not None:
        assert [st["status"] for st in report["steps"]].count("failed") == 1


# --- credits: either endpoint, the balance check, the summary -------------------------------

SONG_RECIPE = """\
version: 1
name: bal
provider: {kind: sunoapi, poll_interval: 0.05, max_poll_interval: 0.1}
steps:
  song:
    uses: generate
    with: {title: Rain, style: pop, prompt: "la la"}
outputs:
  - path: rain.mp3
    from: "{{ steps.song.file }}"
"""


def credit_requests(log: list[dict[str, Any]]) -> list[str]:
    return [e["path"] for e in log if "credit" in e["path"]]


@pytest.mark.parametrize(("endpoint", "asked"), [
    ("credit", ["/api/v1/generate/credit"]),
    ("get-credits", ["/api/v1/generate/credit", "/api/v1/get-credits"]),
    ("both", ["/api/v1/generate/credit"]),
])
def test_the_balance_is_read_from_either_endpoint_and_shown(tmp_path, endpoint, asked):
    (tmp_path / "w.yaml").write_text(SONG_RECIPE)
    with FakeServer("sunoapi", api_key=KEY, credits=500, credits_endpoint=endpoint) as srv:
        run = sunoflow(tmp_path, srv.url)
        log = srv.log
    assert run.returncode == 0, run.stdout + run.stderr
    # Probed once; the path that answered is used again for the balance after.
    assert credit_requests(log)[:len(asked)] == asked
    assert credit_requests(log)[len(asked):] == asked[-1:]
    assert "credits: 500 before, 488 after: 12 spent (estimated 12)" in run.stdout + run.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["credits"]["before"] == 500
    assert report["credits"]["after"] == 488
    assert report["credits"]["spent"] == 12


def test_a_host_without_a_credits_endpoint_still_runs(tmp_path):
    (tmp_path / "w.yaml").write_text(SONG_RECIPE)
    with FakeServer("sunoapi", api_key=KEY, credits=5, credits_endpoint="none") as srv:
        run = sunoflow(tmp_path, srv.url, "--max-credits", "100")
        paid = [e for e in srv.log if e["method"] == "POST"]
    # The balance is unknown, so nothing is refused on it: the service itself says no.
    assert len(paid) == 1
    assert "insufficient credits" in run.stdout + run.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["credits"]["before"] is None


def test_a_balance_below_the_estimate_refuses_to_start(tmp_path):
    (tmp_path / "w.yaml").write_text(SONG_RECIPE)
    with FakeServer("sunoapi", api_key=KEY, credits=10) as srv:
        run = sunoflow(tmp_path, srv.url)
        paid = [e for e in srv.log if e["method"] == "POST"]
        assert srv.credits == 10
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    assert "the balance is 10 credits and this run is estimated at 12" in out
    assert "nothing was submitted" in out
    assert "--ignore-balance" in out
    assert "Traceback" not in out
    assert paid == []


def test_ignore_balance_starts_anyway(tmp_path):
    (tmp_path / "w.yaml").write_text(SONG_RECIPE)
    with FakeServer("sunoapi", api_key=KEY, credits=10, prices={"generate": 8}) as srv:
        run = sunoflow(tmp_path, srv.url, "--ignore-balance")
        paid = [e for e in srv.log if e["method"] == "POST"]
    assert run.returncode == 0, run.stdout + run.stderr
    assert len(paid) == 1
    assert "credits: 10 before, 2 after: 8 spent (estimated 12)" in run.stdout + run.stderr


# --- the fake's switches ---------------------------------------------------------------------

def test_the_fake_takes_each_documented_reading_as_a_flag_and_a_config_field(tmp_path):

    from runner.fake.config import ConfigError, validate

    config = config_of("--record-style", "apibox", "--running-status", "GENERATING",
                       "--relay-fail-status", "FAIL", "--credits-endpoint", "get-credits")
    assert config["record_style"] == "apibox"
    assert config["running_status"] == "GENERATING"
    assert config["relay_fail_status"] == "FAIL"
    assert config["credits_endpoint"] == "get-credits"
    for key, bad in (("record_style", "xml"), ("relay_fail_status", "OOPS"),
                     ("credits_endpoint", "balance"), ("running_status", "")):
        with pytest.raises(ConfigError, match=key):
            validate({key: bad})


def test_the_balance_check_counts_only_what_only_selects(tmp_path):
    (tmp_path / "w.yaml").write_text(ONE % {"kind": "sunoapi"})  # lyrics (1) + generate (12)
    with FakeServer("sunoapi", api_key=KEY, credits=5) as srv:
        run = sunoflow(tmp_path, srv.url, "--only", "words")
        paid = [e["path"] for e in srv.log if e["method"] == "POST"]
    assert run.returncode == 0, run.stdout + run.stderr
    assert paid == ["/api/v1/lyrics"]
