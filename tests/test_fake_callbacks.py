"""The sunoapi fake's callbacks: stages on the fake's clock, the reference's shapes,
duplicates, losses, failed deliveries reported as CALLBACK_EXCEPTION, the error shape."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from waiting import until

from runner.fake import ConfigError, FakeServer

KEY = "test-key-callbacks-41"
V1 = "/api/v1"


class Receiver:
    """A client's callback endpoint on loopback: records every body, answers `status`."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.status = 200
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (stdlib name)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.bodies.append(json.loads(raw))
                self.send_response(outer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def rx() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def srv() -> Iterator[FakeServer]:
    config = {"latency_scale": 1.0, "latency": {"*": {"dist": "fixed", "value": 100}},
              "callbacks": {}}
    with FakeServer("sunoapi", api_key=KEY, **config) as server:
        yield server


@pytest.fixture
def client(srv: FakeServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {KEY}"},
                      timeout=10, trust_env=False) as c:
        yield c


def generate(client: httpx.Client, url: str) -> str:
    body = {"customMode": True, "instrumental": False, "model": "V4_5", "callBackUrl": url,
            "style": "pop", "title": "Rain", "prompt": "rain on the window"}
    answer = client.post(f"{V1}/generate", json=body).json()
    return str(answer["data"]["taskId"])


def stages(srv: FakeServer) -> list[str]:
    return [d["stage"] for d in srv.callbacks]


def test_music_calls_back_text_then_first_then_complete_on_the_fakes_clock(srv, client, rx):
    tid = generate(client, rx.url)
    srv.advance(30)  # a quarter of the task's 100 s
    until(lambda: len(srv.callbacks) == 1, "the text stage")
    srv.advance(50)
    until(lambda: len(srv.callbacks) == 2, "the first stage")
    assert stages(srv) == ["text", "first"]
    srv.advance(30)
    until(lambda: len(srv.callbacks) == 3, "the complete stage")
    text, first, done = rx.bodies
    for body, stage in ((text, "text"), (first, "first"), (done, "complete")):
        assert body["code"] == 200
        assert body["data"]["callbackType"] == stage
        assert body["data"]["task_id"] == tid
        assert set(body["data"]["data"][0]) >= {
            "id", "audio_url", "source_audio_url", "stream_audio_url",
            "source_stream_audio_url", "image_url", "source_image_url", "prompt",
            "model_name", "title", "tags", "createTime", "duration"}
    assert [i["audio_url"] for i in text["data"]["data"]] == ["", ""]
    assert first["data"]["data"][0]["audio_url"]
    assert not first["data"]["data"][1]["audio_url"]
    assert all(i["audio_url"] and i["duration"] for i in done["data"]["data"])
    record = client.get(f"{V1}/generate/record-info", params={"taskId": tid}).json()["data"]
    assert record["status"] == "SUCCESS"
    assert [d["status"] for d in srv.callbacks] == [200, 200, 200]


def test_other_families_call_back_once_in_their_documented_shapes(srv, client, rx):
    srv.configure(latency_scale=0)
    tid = generate(client, rx.url)
    until(lambda: len(srv.callbacks) == 3, "the song's stages")
    audio = next(b for b in rx.bodies if b["data"]["callbackType"] == "complete")[
        "data"]["data"][0]["id"]
    pair = {"taskId": tid, "audioId": audio, "callBackUrl": rx.url}
    posts = {"lyrics": ("/lyrics", {"prompt": "rain", "callBackUrl": rx.url}),
             "wav": ("/wav/generate", pair), "mp4": ("/mp4/generate", pair),
             "stems": ("/vocal-removal/generate", pair),
             "cover": ("/suno/cover/generate", {"taskId": tid, "callBackUrl": rx.url})}
    ids = {name: client.post(V1 + path, json=body).json()["data"]["taskId"]
           for name, (path, body) in posts.items()}
    until(lambda: len(srv.callbacks) == 8, "one callback per task")
    by = {str(b["data"].get("task_id") or b["data"].get("taskId")): b for b in rx.bodies}
    lyrics = by[ids["lyrics"]]["data"]
    assert lyrics["callbackType"] == "complete"
    assert lyrics["taskId"] == ids["lyrics"]
    assert {"text", "title", "status", "errorMessage"} <= set(lyrics["data"][0])
    assert by[ids["wav"]]["data"]["audioWavUrl"].endswith(".wav?v=1")
    assert by[ids["mp4"]]["data"]["video_url"].endswith(".mp4?v=1")
    assert set(by[ids["stems"]]["data"]["vocal_removal_info"]) == {
        "origin_url", "instrumental_url", "vocal_url"}
    assert len(by[ids["cover"]]["data"]["images"]) == 2


def test_a_failed_task_sends_the_error_shape_with_its_code(srv, client, rx):
    srv.configure(latency_scale=0, faults=[{"match": {"path": f"{V1}/generate"}, "action": {
        "fail_task": "GENERATE_AUDIO_FAILED", "code": 531, "message": "refunded"}}])
    tid = generate(client, rx.url)
    until(lambda: len(srv.callbacks) == 2, "text and error")
    error = next(b for b in rx.bodies if b["data"]["callbackType"] == "error")
    assert error == {"code": 531, "msg": "refunded",
                     "data": {"callbackType": "error", "task_id": tid, "data": None}}


def test_duplicates_and_jitter_deliver_every_stage_twice(srv, client, rx):
    srv.configure(latency_scale=0, callbacks={"duplicate": 1.0, "jitter": 0.05})
    generate(client, rx.url)
    until(lambda: len(srv.callbacks) == 6, "two copies of three stages")
    assert sorted(stages(srv)) == ["complete"] * 2 + ["first"] * 2 + ["text"] * 2
    assert sorted(d["copy"] for d in srv.callbacks) == [0, 0, 0, 1, 1, 1]


@pytest.mark.parametrize("how", ["lost", "refused", "answered 500", "not loopback"])
def test_a_failed_last_delivery_makes_record_info_say_callback_exception(srv, client, rx,
                                                                         how):
    srv.configure(latency_scale=0)
    url = rx.url
    if how == "lost":
        srv.configure(callbacks={"loss": 1.0})
    elif how == "refused":
        rx.close()
    elif how == "answered 500":
        rx.status = 500
    else:
        url = "https://client.example/hook"
    tid = generate(client, url)
    until(lambda: len(srv.callbacks) == 3, "three attempts")
    assert all(d["error"] for d in srv.callbacks)
    if how == "lost":
        assert rx.bodies == []
    record = client.get(f"{V1}/generate/record-info", params={"taskId": tid}).json()["data"]
    # The songs exist: only the callback failed (REFERENCE 2.22).
    assert record["status"] == "CALLBACK_EXCEPTION"
    assert all(i["audioUrl"] for i in record["response"]["sunoData"])
    assert srv.tasks[0]["callback_failed"] is True


def test_no_callbacks_unless_configured(client, rx):
    with FakeServer("sunoapi", api_key=KEY) as plain, httpx.Client(
            base_url=plain.url, headers={"Authorization": f"Bearer {KEY}"},
            trust_env=False) as c:
        tid = generate(c, rx.url)
        record = c.get(f"{V1}/generate/record-info", params={"taskId": tid}).json()["data"]
        assert record["status"] == "SUCCESS"
        assert plain.callbacks == []
    assert rx.bodies == []


@pytest.mark.parametrize(("value", "message"), [
    ({"loss": 2}, "callbacks.loss: must be between 0 and 1"),
    ({"delay": -1}, "callbacks.delay: must be >= 0"),
    ({"retries": 3}, "callbacks: unknown key(s) ['retries']"),
    ({"timeout": 0}, "callbacks.timeout: must be > 0"),
    ([1], "callbacks: expected null or an object"),
])
def test_callback_configuration_is_checked(value: Any, message: str):
    with pytest.raises(ConfigError) as err:
        FakeServer("sunoapi", callbacks=value)
    assert message in str(err.value)


def test_the_control_endpoint_lists_deliveries(srv, client, rx):
    srv.configure(latency_scale=0)
    generate(client, rx.url)
    until(lambda: len(srv.callbacks) == 3, "three deliveries")
    listed = client.get("/_fake/callbacks").json()
    assert [d["stage"] for d in listed] == stages(srv)
