"""The new-api relay fake, driven over real HTTP on loopback with httpx."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from runner.fake import FakeServer

KEY = "sk-relay-test-51c2"
ROOT = Path(__file__).resolve().parents[1]
# httpx loads the CA bundle for every Client (~0.1 s); loopback HTTP needs none of it.
TLS = ssl.create_default_context()


def http(url: str, **options: Any) -> httpx.Client:
    return httpx.Client(base_url=url, verify=TLS, **options)


@pytest.fixture
def srv():
    with FakeServer("newapi", api_key=KEY) as server:
        yield server


@pytest.fixture
def client(srv):
    with http(srv.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=10) as c:
        yield c


def custom(**overrides: Any) -> dict[str, Any]:
    body = {
        "prompt": "[Verse]\nneon rain on the boulevard",
        "title": "Neon",
        "tags": "synthwave",
        "mv": "chirp-v4",
        "make_instrumental": False,
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def submit(client: httpx.Client, body: dict[str, Any], action: str = "music") -> str:
    answer = client.post(f"/suno/submit/{action}", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["code"] == "success"
    assert answer.json()["message"] == ""
    return str(answer.json()["data"])


def fetch(client: httpx.Client, task_id: str) -> dict[str, Any]:
    answer = client.get(f"/suno/fetch/{task_id}")
    assert answer.status_code == 200, answer.text
    assert answer.json()["code"] == "success"
    data: dict[str, Any] = answer.json()["data"]
    return data


def error(answer: httpx.Response) -> tuple[int, str, str]:
    body = answer.json()
    assert body["data"] is None
    return answer.status_code, body["code"], body["message"]


def test_custom_music_task_has_the_documented_shape(client, srv):
    task_id = submit(client, custom())
    assert task_id.startswith("task_")
    task = fetch(client, task_id)
    assert set(task) == {
        "task_id",
        "action",
        "status",
        "fail_reason",
        "submit_time",
        "start_time",
        "finish_time",
        "progress",
        "data",
    }
    assert (task["task_id"], task["action"], task["status"], task["progress"]) == (
        task_id,
        "MUSIC",
        "SUCCESS",
        "100%",
    )
    assert task["fail_reason"] == ""
    assert task["submit_time"] <= task["finish_time"]
    clips = task["data"]
    assert len(clips) == 2
    for clip in clips:
        assert {
            "id",
            "audio_url",
            "image_url",
            "video_url",
            "model_name",
            "status",
            "title",
            "metadata",
        } <= set(clip)
        assert (clip["status"], clip["model_name"], clip["title"]) == (
            "complete",
            "chirp-v4",
            "Neon",
        )
        assert clip["metadata"]["tags"] == "synthwave"
        assert clip["metadata"]["prompt"] == custom()["prompt"]
        assert clip["metadata"]["duration"] == 30.0
    audio = client.get(clips[0]["audio_url"])
    assert (audio.status_code, audio.headers["content-type"]) == (200, "audio/mpeg")
    assert client.get(clips[0]["video_url"]).content[4:8] == b"ftyp"
    assert client.get(clips[0]["image_url"]).content.startswith(b"\x89PNG")
    assert srv.log[0]["op"] == "generate"


def test_inspiration_mode_invents_title_and_lyrics(client):
    task = fetch(
        client,
        submit(
            client, {"gpt_description_prompt": "a lullaby for robots", "make_instrumental": False}
        ),
    )
    clip = task["data"][0]
    assert clip["title"] == "A Lullaby For Robots"
    assert clip["metadata"]["gpt_description_prompt"] == "a lullaby for robots"
    assert clip["metadata"]["prompt"]
    assert clip["model_name"] == "chirp-v3-0"  # new-api's default mv


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "prompt_empty"),
        ({"prompt": "x", "mv": "V4_5"}, "mv"),
        ({"prompt": "x", "make_instrumental": "yes"}, "make_instrumental"),
        ({"prompt": 5}, "prompt"),
    ],
)
def test_invalid_music_requests_are_400_invalid_request(client, srv, body, message):
    status, code, text = error(client.post("/suno/submit/music", json=body))
    assert (status, code) == (400, "invalid_request")
    assert message in text
    assert srv.tasks == []


def test_status_progresses_with_progress_percentages(srv, client):
    srv.configure(latency_scale=1, latency={"generate": {"dist": "fixed", "value": 100}})
    task_id = submit(client, custom())
    seen = []
    for step in (0, 10, 40, 60):
        srv.advance(step)
        task = fetch(client, task_id)
        seen.append((task["status"], task["progress"], task["data"][0]["status"]))
    assert seen == [
        ("SUBMITTED", "0%", "submitted"),
        ("QUEUED", "10%", "queued"),
        ("IN_PROGRESS", "50%", "streaming"),
        ("SUCCESS", "100%", "complete"),
    ]


def finished_clip(client: httpx.Client) -> tuple[str, dict[str, Any]]:
    task_id = submit(client, custom())
    return task_id, fetch(client, task_id)["data"][0]


def test_continuation_returns_only_the_new_part(client):
    task_id, clip = finished_clip(client)
    ext = fetch(
        client,
        submit(
            client,
            custom(
                task_id=task_id, continue_clip_id=clip["id"], continue_at=20, prompt="[Outro]\nfade"
            ),
        ),
    )
    new = ext["data"][0]
    assert new["metadata"]["duration"] == 30.0  # the continuation alone
    assert new["metadata"]["history"][0] == {
        "id": clip["id"],
        "continue_at": 20,
        "type": "gen",
        "source": "web",
        "infill": False,
    }


def test_continuation_can_be_configured_to_return_the_whole_song(srv, client):
    srv.configure(extend_returns="whole")
    task_id, clip = finished_clip(client)
    ext = fetch(
        client, submit(client, custom(task_id=task_id, continue_clip_id=clip["id"], continue_at=20))
    )
    assert ext["data"][0]["metadata"]["duration"] == 50.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"task_id": None}, "task_id"),
        ({"continue_clip_id": None}, "continue_clip_id"),
        ({"task_id": "task_missing"}, "task_origin_not_exist"),
        ({"continue_clip_id": "other"}, "not a clip"),
        ({"continue_at": 30}, "continue_at"),
        ({"continue_at": None}, "continue_at"),
    ],
)
def test_continuation_is_validated(client, change, message):
    task_id, clip = finished_clip(client)
    body = custom(
        **{"task_id": task_id, "continue_clip_id": clip["id"], "continue_at": 10, **change}
    )
    status, code, text = error(client.post("/suno/submit/music", json=body))
    assert (status, code) == (400, "invalid_request")
    assert message in text


def test_concat_joins_the_extension_chain(client):
    task_id, clip = finished_clip(client)
    ext_task = submit(client, custom(task_id=task_id, continue_clip_id=clip["id"], continue_at=20))
    ext = fetch(client, ext_task)["data"][0]
    again_task = submit(
        client, custom(task_id=ext_task, continue_clip_id=ext["id"], continue_at=25)
    )
    again = fetch(client, again_task)["data"][0]
    whole = fetch(client, submit(client, {"clip_id": again["id"]}, "concat"))
    assert whole["action"] == "CONCAT"
    song = whole["data"][0]
    assert song["metadata"]["type"] == "concat"
    assert song["metadata"]["duration"] == 20 + 25 + 30
    assert [h["id"] for h in song["metadata"]["concat_history"]] == [
        clip["id"],
        ext["id"],
        again["id"],
    ]


def test_concat_of_an_unknown_clip_is_400(client):
    status, code, _ = error(client.post("/suno/submit/concat", json={"clip_id": "nope"}))
    assert (status, code) == (400, "invalid_request")


def test_without_relay_extras_the_fake_answers_as_new_api(srv, client):
    srv.configure(relay_extras=False)
    status, code, message = error(client.post("/suno/submit/concat", json={"clip_id": "x"}))
    assert (status, code, message) == (400, "invalid_request", "invalid_action")
    upload = client.post("/suno/uploads/audio-url", json={"url": "https://x/a.mp3"})
    assert upload.status_code == 404


def test_upload_audio_url_makes_a_clip_that_can_be_extended(client):
    _, clip = finished_clip(client)
    answer = client.post("/suno/uploads/audio-url", json={"url": clip["audio_url"]}).json()
    assert answer["code"] == "success"
    upload = fetch(client, answer["data"])
    assert upload["action"] == "UPLOAD"
    uploaded = upload["data"][0]
    assert abs(uploaded["metadata"]["duration"] - 30.0) < 0.2
    assert uploaded["metadata"]["type"] == "upload"
    ext = fetch(
        client,
        submit(
            client,
            custom(task_id=upload["task_id"], continue_clip_id=uploaded["id"], continue_at=10),
        ),
    )
    assert ext["status"] == "SUCCESS"


def test_lyrics(client):
    task = fetch(client, submit(client, {"prompt": "a song about trains"}, "lyrics"))
    assert task["action"] == "LYRICS"
    assert set(task["data"]) == {"id", "status", "title", "text"}
    assert task["data"]["status"] == "complete"
    assert task["data"]["text"]
    status, code, message = error(client.post("/suno/submit/lyrics", json={"prompt": ""}))
    assert (status, code, message) == (400, "invalid_request", "prompt_empty")


def test_unknown_actions_are_invalid(client):
    status, code, message = error(client.post("/suno/submit/dance", json={}))
    assert (status, message) == (400, "invalid_action")


def test_batched_fetch_skips_unknown_ids(client, srv):
    first = submit(client, custom())
    second = submit(client, {"prompt": "x"}, "lyrics")
    answer = client.post("/suno/fetch", json={"ids": [first, "task_nope", second]}).json()
    assert answer["code"] == "success"
    assert [t["task_id"] for t in answer["data"]] == [first, second]
    assert srv.log[-1]["op"] == "poll"
    status, code, _ = error(client.post("/suno/fetch", json={"ids": "x"}))
    assert (status, code) == (400, "invalid_request")


def test_fetch_of_an_unknown_task_is_task_not_exist(client):
    status, code, _ = error(client.get("/suno/fetch/task_nope"))
    assert (status, code) == (400, "task_not_exist")


def test_auth_is_a_bearer_key(srv):
    with http(srv.url) as c:
        status, code, _ = error(c.post("/suno/submit/music", json=custom()))
    assert (status, code) == (401, "unauthorized")
    assert srv.tasks == []
    assert KEY not in str(srv.log)


def test_quota_not_enough_is_403(srv, client):
    srv.configure(credits=11)
    status, code, _ = error(client.post("/suno/submit/music", json=custom()))
    assert (status, code) == (403, "quota_not_enough")
    assert srv.log[-1]["envelope_code"] == "quota_not_enough"
    assert srv.tasks == []


def test_failed_task_reports_the_reason_and_refunds(srv, client):
    srv.configure(
        credits=100,
        faults=[
            {
                "match": {"path": "/suno/submit/music"},
                "times": 1,
                "action": {"fail_task": "SENSITIVE_WORD_ERROR", "message": "lyrics rejected"},
            }
        ],
    )
    task = fetch(client, submit(client, custom()))
    assert (task["status"], task["fail_reason"]) == ("FAILURE", "lyrics rejected")
    assert task["data"][0]["status"] == "error"
    assert srv.credits == 100
    assert srv.tasks[0]["refunded"] is True


def test_prices_are_charged(srv, client):
    srv.configure(credits=100)
    submit(client, custom())
    submit(client, {"prompt": "x"}, "lyrics")
    assert srv.credits == 100 - 12 - 1


def test_envelope_fault_uses_the_relay_error_shape(srv, client):
    srv.configure(
        faults=[
            {
                "match": {"path": "/suno/submit/music"},
                "times": 1,
                "action": {"envelope_code": "do_request_failed", "http_status": 500},
            }
        ]
    )
    status, code, _ = error(client.post("/suno/submit/music", json=custom()))
    assert (status, code) == (500, "do_request_failed")
    assert srv.tasks == []


def test_gateway_error_after_create(srv, client):
    srv.configure(
        faults=[
            {
                "match": {"path": "/suno/submit/music"},
                "times": 1,
                "action": {"http_status": 502, "after_create": True},
            }
        ]
    )
    assert client.post("/suno/submit/music", json=custom()).status_code == 502
    hidden = srv.log[-1]["task_id"]
    assert hidden is not None
    assert fetch(client, hidden)["status"] == "SUCCESS"


def test_rate_limit_is_429(srv, client):
    srv.configure(rate_limit={"requests": 2, "per_seconds": 5})
    answers = [client.post("/suno/fetch", json={"ids": []}) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[2].json()["code"] == "rate_limit_exceeded"


def test_expired_clip_url_refreshes_on_fetch(srv, client):
    task_id, clip = finished_clip(client)
    srv.configure(
        faults=[{"match": {"path": "/files/audio/*"}, "times": 1, "action": {"expired": True}}]
    )
    assert client.get(clip["audio_url"]).status_code == 403
    fresh = fetch(client, task_id)["data"][0]["audio_url"]
    assert fresh != clip["audio_url"]
    assert client.get(fresh).status_code == 200


def test_cli_serves_newapi_until_sigterm():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runner.fake",
            "--protocol",
            "newapi",
            "--port",
            "0",
            "--latency-scale",
            "0",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        with http(url) as c:
            task_id = submit(c, custom())
            assert fetch(c, task_id)["status"] == "SUCCESS"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
