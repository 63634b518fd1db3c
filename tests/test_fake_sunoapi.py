"""The sunoapi.org fake, driven over real HTTP on loopback with httpx."""

from __future__ import annotations

import base64
import json
import os
import signal
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakecli import config_of

from runner.fake import ConfigError, FakeServer

KEY = "test-key-7f3a9"
CB = "https://client.test/callback"
V1 = "/api/v1"
ROOT = Path(__file__).resolve().parents[1]
# httpx loads the CA bundle for every Client (~0.1 s); loopback HTTP needs none of it.
TLS = ssl.create_default_context()


def http(url: str, **options: Any) -> httpx.Client:
    return httpx.Client(base_url=url, verify=TLS, **options)


@pytest.fixture
def srv():
    with FakeServer("sunoapi", api_key=KEY) as server:
        yield server


@pytest.fixture
def client(srv):
    headers = {"Authorization": f"Bearer {KEY}"}
    with http(srv.url, headers=headers, timeout=10) as c:
        yield c


def song(**overrides: Any) -> dict[str, Any]:
    body = {
        "customMode": True,
        "instrumental": False,
        "model": "V4_5",
        "callBackUrl": CB,
        "style": "indie folk",
        "title": "Sunrise",
        "prompt": "[Verse]\nfirst light on the hill\n[Chorus]\nrise up",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def post(client: httpx.Client, path: str, body: Any) -> dict[str, Any]:
    answer = client.post(path, json=body)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def task_id(client: httpx.Client, path: str, body: dict[str, Any]) -> str:
    answer = post(client, path, body)
    assert answer["code"] == 200, answer
    return str(answer["data"]["taskId"])


def record(
    client: httpx.Client, tid: str, path: str = f"{V1}/generate/record-info", key: str = "taskId"
) -> dict[str, Any]:
    answer = client.get(path, params={key: tid}).json()
    assert answer["code"] == 200, answer
    data: dict[str, Any] = answer["data"]
    return data


def finished_song(client: httpx.Client, **overrides: Any) -> tuple[str, list[dict[str, Any]]]:
    tid = task_id(client, f"{V1}/generate", song(**overrides))
    data = record(client, tid)
    assert data["status"] == "SUCCESS"
    return tid, data["response"]["sunoData"]


def balance(client: httpx.Client) -> int:
    return int(client.get(f"{V1}/generate/credit").json()["data"])


# -- generate and the record-info shape --------------------------------------------------


def test_generate_and_record_info_have_the_documented_shape(client, srv):
    body = song()
    tid = task_id(client, f"{V1}/generate", body)
    data = record(client, tid)
    assert set(data) == {
        "taskId",
        "param",
        "response",
        "status",
        "type",
        "operationType",
        "errorCode",
        "errorMessage",
    }
    assert data["taskId"] == tid
    assert isinstance(data["param"], str)
    assert json.loads(data["param"]) == body
    assert (data["status"], data["operationType"]) == ("SUCCESS", "generate")
    assert data["errorCode"] is None
    items = data["response"]["sunoData"]
    assert data["response"]["taskId"] == tid
    assert len(items) == 2
    required = {
        "id",
        "audioUrl",
        "streamAudioUrl",
        "imageUrl",
        "prompt",
        "modelName",
        "title",
        "tags",
        "createTime",
        "duration",
    }
    for item in items:
        assert required <= set(item)
        assert item["modelName"] == "chirp-v4-5"
        assert (item["title"], item["tags"], item["prompt"]) == (
            "Sunrise",
            "indie folk",
            body["prompt"],
        )
        assert item["duration"] == 30.0
        assert isinstance(item["createTime"], str)
        assert item["audioUrl"].startswith(srv.url + "/files/")
    assert items[0]["id"] != items[1]["id"]


def test_generated_files_are_real_media_served_by_the_fake(client):
    _, items = finished_song(client)
    audio = client.get(items[0]["audioUrl"])
    assert audio.status_code == 200
    assert audio.headers["content-type"] == "audio/mpeg"
    assert audio.content[:3] == b"ID3" or audio.content[:2] == b"\xff\xfb"
    assert int(audio.headers["content-length"]) == len(audio.content) > 10_000
    image = client.get(items[0]["imageUrl"])
    assert image.content.startswith(b"\x89PNG")
    stream = client.get(items[1]["streamAudioUrl"])
    assert stream.content == audio.content  # same duration, same deterministic bytes


def test_non_custom_mode_takes_only_a_prompt_and_invents_the_rest(client):
    _, items = finished_song(
        client,
        customMode=False,
        style=None,
        title=None,
        prompt="a calm song about rain on the window",
    )
    assert items[0]["title"] == "A Calm Song About"
    assert items[0]["tags"]
    assert items[0]["prompt"]  # invented lyrics for a vocal track


def test_instrumental_custom_mode_needs_no_prompt_and_has_no_lyrics(client):
    _, items = finished_song(client, instrumental=True, prompt=None)
    assert items[0]["prompt"] == ""


def test_status_walks_pending_text_first_success(srv, client):
    srv.configure(latency_scale=1, latency={"generate": {"dist": "fixed", "value": 100}})
    tid = task_id(client, f"{V1}/generate", song())
    seen = []
    for step in (0, 30, 50, 30):
        srv.advance(step)
        data = record(client, tid)
        seen.append(data["status"])
        if data["status"] == "PENDING":
            assert data["response"] is None
        elif data["status"] == "TEXT_SUCCESS":
            assert all(
                i["audioUrl"] == "" and i["streamAudioUrl"] for i in data["response"]["sunoData"]
            )
            assert data["response"]["sunoData"][0]["duration"] is None
        elif data["status"] == "FIRST_SUCCESS":
            first, second = data["response"]["sunoData"]
            assert first["audioUrl"]
            assert second["audioUrl"] == ""
    assert seen == ["PENDING", "TEXT_SUCCESS", "FIRST_SUCCESS", "SUCCESS"]


def test_v5_5_custom_mode_honours_duration(client):
    _, items = finished_song(client, model="V5_5", duration=12)
    assert items[0]["duration"] == 12.0


# -- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"customMode": None}, "customMode"),
        ({"instrumental": "no"}, "instrumental"),
        ({"model": "V3"}, "model"),
        ({"model": None}, "model"),
        ({"callBackUrl": None}, "callBackUrl"),
        ({"callBackUrl": "not a url"}, "callBackUrl"),
        ({"style": None}, "style"),
        ({"title": ""}, "title"),
        ({"prompt": None}, "prompt"),
        ({"customMode": False, "prompt": None}, "prompt"),
        ({"vocalGender": "x"}, "vocalGender"),
        ({"styleWeight": 1.5}, "styleWeight"),
        ({"audioWeight": 0.555}, "audioWeight"),
        ({"personaModel": "other"}, "personaModel"),
    ],
)
def test_invalid_generate_requests_answer_400_and_create_nothing(client, srv, overrides, fragment):
    answer = post(client, f"{V1}/generate", song(**overrides))
    assert answer["code"] == 400
    assert fragment in answer["msg"]
    assert answer["data"] is None
    assert srv.log[-1]["task_id"] is None
    assert srv.tasks == []


def test_a_body_that_is_not_a_json_object_is_400(client):
    answer = client.post(
        f"{V1}/generate", content=b"[1, 2]", headers={"Content-Type": "application/json"}
    ).json()
    assert answer["code"] == 400


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"model": "V4", "prompt": "x" * 3000}, 200),
        ({"model": "V4", "prompt": "x" * 3001}, 413),
        ({"model": "V4_5", "prompt": "x" * 5000}, 200),
        ({"model": "V5_5", "prompt": "x" * 5001}, 413),
        ({"model": "V4", "style": "s" * 201}, 413),
        ({"model": "V5", "style": "s" * 1000}, 200),
        ({"model": "V4_5PLUS", "style": "s" * 1001}, 413),
        ({"model": "V4_5ALL", "title": "t" * 81}, 413),
        ({"model": "V4", "title": "t" * 80}, 200),
        ({"model": "V5", "title": "t" * 100}, 200),
        ({"model": "V5", "title": "t" * 101}, 413),
        ({"customMode": False, "style": None, "title": None, "prompt": "p" * 500}, 200),
        ({"customMode": False, "style": None, "title": None, "prompt": "p" * 501}, 413),
    ],
)
def test_length_limits_per_model(client, overrides, code):
    assert post(client, f"{V1}/generate", song(**overrides))["code"] == code


# -- auth -------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}])
def test_requests_without_the_key_get_401(srv, headers):
    with http(srv.url, headers=headers) as c:
        answer = c.post(f"{V1}/generate", json=song()).json()
    assert answer["code"] == 401
    assert srv.tasks == []


def test_the_key_never_reaches_the_log(client, srv):
    finished_song(client)
    client.get(f"{V1}/generate/credit")
    assert KEY not in json.dumps(srv.log)
    assert KEY not in client.get("/_fake/config").text


def test_without_a_configured_key_no_auth_is_needed():
    with FakeServer("sunoapi") as server, http(server.url) as c:
        assert c.get(f"{V1}/generate/credit").json()["code"] == 200


# -- extend and the upload family -------------------------------------------------------


def test_extend_returns_the_whole_song(client):
    _, items = finished_song(client)
    source = items[0]
    body = {
        "defaultParamFlag": True,
        "audioId": source["id"],
        "model": "V4_5",
        "callBackUrl": CB,
        "style": "indie folk",
        "title": "Sunrise (long)",
        "prompt": "a soaring final chorus",
        "continueAt": 24.5,
    }
    tid = task_id(client, f"{V1}/generate/extend", body)
    data = record(client, tid)
    assert data["parentMusicId"] == source["id"]
    assert data["operationType"] == "extend"
    extended = data["response"]["sunoData"][0]
    assert extended["duration"] == 54.5  # 24.5 s of the source + a 30 s continuation
    assert extended["title"] == "Sunrise (long)"


def test_extend_with_default_params_continues_from_the_end(client):
    _, items = finished_song(client)
    tid = task_id(
        client,
        f"{V1}/generate/extend",
        {"defaultParamFlag": False, "audioId": items[0]["id"], "model": "V4_5", "callBackUrl": CB},
    )
    extended = record(client, tid)["response"]["sunoData"][0]
    assert (extended["duration"], extended["title"]) == (60.0, "Sunrise")


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"model": "V5"}, 400),
        ({"continueAt": 30}, 400),
        ({"continueAt": 0}, 400),
        ({"audioId": "no-such-clip"}, 400),
        ({"prompt": None}, 400),
        ({"title": "t" * 101}, 413),
    ],
)
def test_extend_is_validated_against_its_source(client, change, code):
    _, items = finished_song(client)
    body = {
        "defaultParamFlag": True,
        "audioId": items[0]["id"],
        "model": "V4_5",
        "callBackUrl": CB,
        "style": "s",
        "title": "t",
        "prompt": "p",
        "continueAt": 10,
    }
    body.update(change)
    body = {k: v for k, v in body.items() if v is not None}
    assert post(client, f"{V1}/generate/extend", body)["code"] == code


def upload_base64(
    client: httpx.Client, data: bytes, name: str = "take.mp3", path: str = "tests/audio"
) -> dict[str, Any]:
    answer = post(
        client,
        "/api/file-base64-upload",
        {"base64Data": base64.b64encode(data).decode(), "uploadPath": path, "fileName": name},
    )
    assert answer["success"] is True, answer
    result: dict[str, Any] = answer["data"]
    return result


def test_base64_upload_returns_a_fetchable_download_url(client):
    data = b"ID3" + bytes(range(256)) * 4
    info = upload_base64(client, data)
    assert set(info) == {
        "fileName",
        "filePath",
        "downloadUrl",
        "fileSize",
        "mimeType",
        "uploadedAt",
    }
    assert (info["fileName"], info["filePath"]) == ("take.mp3", "tests/audio/take.mp3")
    assert (info["fileSize"], info["mimeType"]) == (len(data), "audio/mpeg")
    assert client.get(info["downloadUrl"]).content == data


def test_base64_upload_accepts_a_data_url(client):
    encoded = base64.b64encode(b"hello").decode()
    answer = post(
        client,
        "/api/file-base64-upload",
        {"base64Data": f"data:text/plain;base64,{encoded}", "uploadPath": "x"},
    )
    assert answer["data"]["mimeType"] == "text/plain"
    assert client.get(answer["data"]["downloadUrl"]).content == b"hello"


def test_stream_upload_takes_multipart(client):
    answer = client.post(
        "/api/file-stream-upload",
        data={"uploadPath": "a/b"},
        files={"file": ("voice.wav", b"RIFF0000WAVEdata", "audio/wav")},
    ).json()
    assert answer["code"] == 200
    assert answer["data"]["filePath"] == "a/b/voice.wav"
    assert client.get(answer["data"]["downloadUrl"]).content == b"RIFF0000WAVEdata"


def test_url_upload_copies_a_file_the_fake_serves(client):
    _, items = finished_song(client)
    answer = post(
        client, "/api/file-url-upload", {"fileUrl": items[0]["audioUrl"], "uploadPath": "copies"}
    )
    assert answer["code"] == 200
    assert answer["data"]["fileName"] == f"{items[0]['id']}.mp3"
    copy = client.get(answer["data"]["downloadUrl"]).content
    assert copy == client.get(items[0]["audioUrl"]).content


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        ("/api/file-base64-upload", {"base64Data": "@@@", "uploadPath": "x"}, 400),
        ("/api/file-base64-upload", {"base64Data": "aGk=", "uploadPath": "/x"}, 400),
        ("/api/file-base64-upload", {"base64Data": "aGk="}, 400),
        ("/api/file-url-upload", {"fileUrl": "ftp://x", "uploadPath": "x"}, 400),
    ],
)
def test_upload_errors_use_the_upload_envelope(client, path, body, code):
    answer = post(client, path, body)
    assert (answer["success"], answer["code"]) == (False, code)


def test_upload_cover_measures_the_uploaded_audio(client):
    _, items = finished_song(client, model="V5_5", duration=12)
    info = upload_base64(client, client.get(items[0]["audioUrl"]).content)
    tid = task_id(client, f"{V1}/generate/upload-cover", song(uploadUrl=info["downloadUrl"]))
    data = record(client, tid)
    assert data["operationType"] == "upload_cover"
    assert abs(data["response"]["sunoData"][0]["duration"] - 12.0) < 0.2


def test_upload_cover_rejects_a_source_longer_than_the_model_allows(client, srv):
    srv.configure(upload_duration=70)  # outside URLs stand for a 70 s file (no network)
    body = song(uploadUrl="https://cdn.example/long.mp3", model="V4_5ALL")
    assert post(client, f"{V1}/generate/upload-cover", body)["code"] == 400
    body["model"] = "V4_5"
    assert post(client, f"{V1}/generate/upload-cover", body)["code"] == 200


def test_upload_cover_of_a_missing_own_file_is_451(client, srv):
    body = song(uploadUrl=f"{srv.url}/files/uploads/nothing/here.mp3")
    assert post(client, f"{V1}/generate/upload-cover", body)["code"] == 451


def test_upload_extend_continues_the_upload(client, srv):
    srv.configure(upload_duration=40)
    body = {
        "uploadUrl": "https://cdn.example/demo.mp3",
        "defaultParamFlag": True,
        "model": "V4_5",
        "callBackUrl": CB,
        "style": "rock",
        "title": "Demo",
        "prompt": "more",
        "continueAt": 35,
    }
    data = record(client, task_id(client, f"{V1}/generate/upload-extend", body))
    assert data["operationType"] == "upload_extend"
    assert data["response"]["sunoData"][0]["duration"] == 65.0
    body["continueAt"] = 41
    assert post(client, f"{V1}/generate/upload-extend", body)["code"] == 400


def test_add_vocals_and_add_instrumental(client):
    url = "https://cdn.example/stem.mp3"
    vocals = {
        "uploadUrl": url,
        "callBackUrl": CB,
        "prompt": "words",
        "title": "V",
        "negativeTags": "",
        "style": "soul",
    }
    data = record(client, task_id(client, f"{V1}/generate/add-vocals", vocals))
    assert data["response"]["sunoData"][0]["modelName"] == "chirp-v4-5-plus"  # the default
    assert post(client, f"{V1}/generate/add-vocals", {**vocals, "model": "V4"})["code"] == 400
    inst = {
        "uploadUrl": url,
        "callBackUrl": CB,
        "title": "I",
        "negativeTags": "metal",
        "tags": "lush strings",
        "model": "V5",
    }
    data = record(client, task_id(client, f"{V1}/generate/add-instrumental", inst))
    item = data["response"]["sunoData"][0]
    assert (item["tags"], item["prompt"], item["modelName"]) == ("lush strings", "", "chirp-v5")
    # add-instrumental takes `tags`, not `style`
    no_tags = {k: v for k, v in inst.items() if k != "tags"} | {"style": "x"}
    assert post(client, f"{V1}/generate/add-instrumental", no_tags)["code"] == 400


def test_replace_section(client):
    tid, items = finished_song(client)
    body = {
        "taskId": tid,
        "audioId": items[0]["id"],
        "prompt": "new words",
        "tags": "pop",
        "title": "Fixed",
        "infillStartS": 5.0,
        "infillEndS": 12.5,
    }
    data = record(client, task_id(client, f"{V1}/generate/replace-section", body))
    assert data["parentMusicId"] == items[0]["id"]
    assert data["response"]["sunoData"][0]["duration"] == 30.0
    assert (
        post(client, f"{V1}/generate/replace-section", {**body, "infillEndS": 8.0})["code"] == 400
    )  # shorter than 6 s


# -- lyrics, timestamps, style ----------------------------------------------------------


def test_lyrics_returns_several_variants(client):
    tid = task_id(client, f"{V1}/lyrics", {"prompt": "a song about the sea", "callBackUrl": CB})
    data = record(client, tid, f"{V1}/lyrics/record-info")
    assert (data["type"], data["status"]) == ("LYRICS", "SUCCESS")
    variants = data["response"]["data"]
    assert len(variants) == 2
    assert all(v["status"] == "complete" and v["text"] and v["title"] for v in variants)
    assert variants[0]["text"] != variants[1]["text"]


def test_lyrics_prompt_over_200_words_is_413(client):
    answer = post(client, f"{V1}/lyrics", {"prompt": "word " * 201, "callBackUrl": CB})
    assert answer["code"] == 413


def test_timestamped_lyrics_align_the_sung_words(client):
    tid, items = finished_song(client, prompt="[Verse]\nhello bright world")
    answer = post(
        client, f"{V1}/generate/get-timestamped-lyrics", {"taskId": tid, "audioId": items[0]["id"]}
    )
    words = answer["data"]["alignedWords"]
    assert [w["word"] for w in words] == ["hello", "bright", "world"]
    assert all(0 <= w["startS"] < w["endS"] <= 30 for w in words)
    assert {"waveformData", "hootCer", "isStreamed"} <= set(answer["data"])
    other_tid, _ = finished_song(client)
    wrong = post(
        client,
        f"{V1}/generate/get-timestamped-lyrics",
        {"taskId": other_tid, "audioId": items[0]["id"]},
    )
    assert wrong["code"] == 400


def test_timestamped_lyrics_of_an_instrumental_are_empty(client):
    tid, items = finished_song(client, instrumental=True, prompt=None)
    answer = post(
        client, f"{V1}/generate/get-timestamped-lyrics", {"taskId": tid, "audioId": items[0]["id"]}
    )
    assert answer["data"]["alignedWords"] == []


def test_boost_style_is_synchronous_and_charged(client):
    before = balance(client)
    data = post(client, f"{V1}/style/generate", {"content": "Pop, Mysterious"})["data"]
    assert data["successFlag"] == "1"
    assert data["result"].startswith("Pop, Mysterious")
    assert data["creditsConsumed"] == 1
    assert data["creditsRemaining"] == before - 1 == balance(client)


# -- stems, WAV, MP4, cover art, persona --------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "keys", "price"),
    [
        ("separate_vocal", {"originUrl", "instrumentalUrl", "vocalUrl"}, 10),
        ("split_stem", {"vocalUrl", "drumsUrl", "bassUrl", "woodwindsUrl", "backingVocalsUrl"}, 50),
    ],
)
def test_vocal_removal(client, kind, keys, price):
    tid, items = finished_song(client)
    before = balance(client)
    stems_tid = task_id(
        client,
        f"{V1}/vocal-removal/generate",
        {"taskId": tid, "audioId": items[0]["id"], "type": kind, "callBackUrl": CB},
    )
    assert balance(client) == before - price
    data = record(client, stems_tid, f"{V1}/vocal-removal/record-info")
    assert data["successFlag"] == "SUCCESS"
    assert (data["audioId"], data["musicId"]) == (items[0]["id"], items[0]["id"])
    given = {k for k, v in data["response"].items() if v}
    assert keys <= given
    if kind == "separate_vocal":
        assert given == keys
    assert client.get(data["response"]["vocalUrl"]).status_code == 200
    assert isinstance(data["createTime"], int)
    assert isinstance(data["completeTime"], int)


def test_vocal_removal_rejects_an_unknown_type(client):
    tid, items = finished_song(client)
    answer = post(
        client,
        f"{V1}/vocal-removal/generate",
        {"taskId": tid, "audioId": items[0]["id"], "type": "karaoke", "callBackUrl": CB},
    )
    assert answer["code"] == 400


def test_wav_is_made_once_per_audio_and_409_returns_the_existing_task(client):
    tid, items = finished_song(client)
    body = {"taskId": tid, "audioId": items[0]["id"], "callBackUrl": CB}
    wav_tid = task_id(client, f"{V1}/wav/generate", body)
    again = post(client, f"{V1}/wav/generate", body)
    assert again["code"] == 409
    assert again["data"]["taskId"] == wav_tid
    data = record(client, wav_tid, f"{V1}/wav/record-info")
    assert data["successFlag"] == "SUCCESS"
    assert data["musicId"] == items[0]["id"]
    wav = client.get(data["response"]["audioWavUrl"]).content
    assert wav[:4] == b"RIFF"
    assert wav[8:12] == b"WAVE"
    other = post(client, f"{V1}/wav/generate", {**body, "audioId": items[1]["id"]})
    assert other["code"] == 200


def test_wav_of_an_unknown_audio_is_404(client):
    tid, _ = finished_song(client)
    answer = post(
        client, f"{V1}/wav/generate", {"taskId": tid, "audioId": "nope", "callBackUrl": CB}
    )
    assert answer["code"] == 404


def test_mp4_once_per_audio(client):
    tid, items = finished_song(client)
    body = {"taskId": tid, "audioId": items[0]["id"], "callBackUrl": CB, "author": "Band"}
    mp4_tid = task_id(client, f"{V1}/mp4/generate", body)
    assert post(client, f"{V1}/mp4/generate", body)["data"]["taskId"] == mp4_tid
    data = record(client, mp4_tid, f"{V1}/mp4/record-info")
    assert data["successFlag"] == "SUCCESS"
    video = client.get(data["response"]["videoUrl"])
    assert (video.headers["content-type"], video.content[4:8]) == ("video/mp4", b"ftyp")
    too_long = post(
        client, f"{V1}/mp4/generate", {**body, "audioId": items[1]["id"], "author": "a" * 51}
    )
    assert too_long["code"] == 413


def test_cover_art_once_per_task_with_int_success_flag(client):
    tid, _ = finished_song(client)
    cover_tid = task_id(client, f"{V1}/suno/cover/generate", {"taskId": tid, "callBackUrl": CB})
    again = post(client, f"{V1}/suno/cover/generate", {"taskId": tid, "callBackUrl": CB})
    assert (again["code"], again["data"]["taskId"]) == (409, cover_tid)
    data = record(client, cover_tid, f"{V1}/suno/cover/record-info")
    assert data["successFlag"] == 1
    assert data["parentTaskId"] == tid
    images = data["response"]["images"]
    assert len(images) == 2
    assert client.get(images[1]).content.startswith(b"\x89PNG")


def test_cover_success_flag_counts_up_while_running(srv, client):
    tid, _ = finished_song(client)
    srv.configure(latency_scale=1, latency={"cover": {"dist": "fixed", "value": 20}})
    cover_tid = task_id(client, f"{V1}/suno/cover/generate", {"taskId": tid, "callBackUrl": CB})
    flags = []
    for step in (0, 12, 10):
        srv.advance(step)
        flags.append(record(client, cover_tid, f"{V1}/suno/cover/record-info")["successFlag"])
    assert flags == [0, 2, 1]


def test_persona_once_per_audio(client):
    tid, items = finished_song(client)
    body = {"taskId": tid, "audioId": items[0]["id"], "name": "Ann", "description": "warm alto"}
    first = post(client, f"{V1}/generate/generate-persona", body)
    assert first["data"]["name"] == "Ann"
    again = post(client, f"{V1}/generate/generate-persona", body)
    assert (again["code"], again["data"]["personaId"]) == (409, first["data"]["personaId"])


# -- credits ------------------------------------------------------------------------------


def test_prices_are_taken_per_operation(client):
    start = balance(client)
    tid, items = finished_song(client)
    assert balance(client) == start - 12
    task_id(client, f"{V1}/lyrics", {"prompt": "x", "callBackUrl": CB})
    task_id(
        client, f"{V1}/wav/generate", {"taskId": tid, "audioId": items[0]["id"], "callBackUrl": CB}
    )
    task_id(
        client, f"{V1}/mp4/generate", {"taskId": tid, "audioId": items[0]["id"], "callBackUrl": CB}
    )
    task_id(client, f"{V1}/suno/cover/generate", {"taskId": tid, "callBackUrl": CB})
    assert balance(client) == start - 12 - 1 - 1 - 2 - 1


def test_insufficient_credits_is_429_on_generate_and_402_on_newer_endpoints(srv, client):
    tid, items = finished_song(client)
    srv.configure(credits=11)
    answer = post(client, f"{V1}/generate", song())
    assert answer["code"] == 429
    srv.configure(credits=0)
    for path, body in [
        (f"{V1}/wav/generate", {"audioId": items[0]["id"]}),
        (f"{V1}/mp4/generate", {"audioId": items[0]["id"]}),
        (f"{V1}/suno/cover/generate", {}),
        (f"{V1}/vocal-removal/generate", {"audioId": items[0]["id"]}),
    ]:
        answer = post(client, path, {"taskId": tid, "callBackUrl": CB, **body})
        assert answer["code"] == 402, path
    assert post(client, f"{V1}/lyrics", {"prompt": "x", "callBackUrl": CB})["code"] == 429
    assert len(srv.tasks) == 1
    assert balance(client) == 0


def test_configured_prices_override_the_table():
    with (
        FakeServer("sunoapi", credits=100, prices={"generate": 40}) as server,
        http(server.url) as c,
    ):
        task_id(c, f"{V1}/generate", song())
        assert balance(c) == 60


# -- recovery --------------------------------------------------------------------------


def test_recovery_uses_snake_case_and_top_level_codes(srv, client):
    tid, items = finished_song(client)
    answer = post(client, f"{V1}/suno/recovery", {"sunoTaskId": tid, "callBackUrl": CB})
    rid = answer["data"]["task_id"]
    wrong = client.get(f"{V1}/suno/recovery/record-info", params={"taskId": rid}).json()
    assert wrong["code"] == 400
    assert "task_id" in wrong["msg"]
    done = client.get(f"{V1}/suno/recovery/record-info", params={"task_id": rid}).json()
    assert (done["code"], done["task_id"]) == (200, rid)
    assert [d["id"] for d in done["data"]] == [i["id"] for i in items]
    assert all(d["status"] == "success" and d["error"] is None for d in done["data"])
    recovered = client.get(done["data"][0]["audio_url"])
    assert done["data"][0]["audio_url"].split("?")[0].endswith(".m4a")
    assert recovered.content[4:8] == b"ftyp"


def test_recovery_reports_201_while_running_and_500_when_all_failed(srv, client):
    tid, _ = finished_song(client)
    srv.configure(
        latency_scale=1,
        latency={"recovery": {"dist": "fixed", "value": 4}},
        faults=[{"match": {"path": f"{V1}/suno/recovery"}, "action": {"fail_task": "feed_failed"}}],
    )
    rid = post(client, f"{V1}/suno/recovery", {"sunoTaskId": tid, "callBackUrl": CB})["data"][
        "task_id"
    ]
    running = client.get(f"{V1}/suno/recovery/record-info", params={"task_id": rid}).json()
    assert (running["code"], running["data"]) == (201, None)
    srv.advance(5)
    failed = client.get(f"{V1}/suno/recovery/record-info", params={"task_id": rid}).json()
    assert failed["code"] == 500
    assert {d["error"] for d in failed["data"]} == {"feed_failed"}
    assert srv.log[-1]["envelope_code"] == 500


def test_recovery_of_an_unknown_task_is_404(client):
    assert (
        post(client, f"{V1}/suno/recovery", {"sunoTaskId": "nope", "callBackUrl": CB})["code"]
        == 404
    )


# -- routing ----------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), [("GET", f"{V1}/generate"), ("POST", f"{V1}/nothing")])
def test_unknown_routes_are_404(client, method, path):
    answer = client.request(method, path)
    assert answer.status_code == 404
    assert answer.json()["code"] == 404


@pytest.mark.parametrize("path", [f"{V1}/generate/record-info", f"{V1}/wav/record-info"])
def test_record_info_needs_a_known_task_of_its_family(client, path):
    tid = task_id(client, f"{V1}/lyrics", {"prompt": "x", "callBackUrl": CB})
    assert client.get(path).json()["code"] == 400
    assert client.get(path, params={"taskId": tid}).json()["code"] in (400, 404)


# -- faults --------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [430, 455, 500, 405, 429, 413])
def test_envelope_code_fault_creates_no_task(srv, client, code):
    srv.configure(
        faults=[
            {
                "match": {"path": f"{V1}/generate", "method": "POST"},
                "times": 1,
                "action": {"envelope_code": code},
            }
        ]
    )
    first = client.post(f"{V1}/generate", json=song())
    assert (first.status_code, first.json()["code"]) == (200, code)
    assert srv.tasks == []
    assert post(client, f"{V1}/generate", song())["code"] == 200  # times: 1
    entries = [e for e in srv.log if e["path"] == f"{V1}/generate"]
    assert [e["envelope_code"] for e in entries] == [code, 200]
    assert entries[0]["fault"] == {"envelope_code": code}


def test_gateway_error_before_create_creates_no_task(srv, client):
    srv.configure(
        faults=[{"match": {"path": f"{V1}/generate"}, "times": 1, "action": {"http_status": 502}}]
    )
    answer = client.post(f"{V1}/generate", json=song())
    assert answer.status_code == 502
    assert "Bad Gateway" in answer.text
    assert srv.tasks == []


def test_gateway_error_after_create_hides_a_created_task(srv, client):
    srv.configure(
        faults=[
            {
                "match": {"path": f"{V1}/generate"},
                "times": 1,
                "action": {"http_status": 504, "after_create": True},
            }
        ]
    )
    answer = client.post(f"{V1}/generate", json=song())
    assert answer.status_code == 504
    entry = srv.log[-1]
    assert entry["status"] == 504
    assert entry["task_id"] is not None  # possibly submitted: it exists, the client can't know
    assert [t["task_id"] for t in srv.tasks] == [entry["task_id"]]
    assert record(client, entry["task_id"])["status"] == "SUCCESS"


def test_delay_fault_provokes_a_client_read_timeout_after_creating_the_task(srv):
    srv.configure(
        faults=[{"match": {"path": f"{V1}/generate"}, "times": 1, "action": {"delay": 30}}]
    )
    headers = {"Authorization": f"Bearer {KEY}"}
    with http(srv.url, headers=headers, timeout=0.2) as c, pytest.raises(httpx.ReadTimeout):
        c.post(f"{V1}/generate", json=song())
    assert len(srv.tasks) == 1


@pytest.mark.parametrize("after_create", [False, True])
def test_reset_fault_closes_the_connection(srv, client, after_create):
    srv.configure(
        faults=[
            {
                "match": {"path": f"{V1}/generate"},
                "times": 1,
                "action": {"reset": True, "after_create": after_create},
            }
        ]
    )
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.post(f"{V1}/generate", json=song())
    assert srv.log[-1]["status"] is None
    assert len(srv.tasks) == (1 if after_create else 0)
    assert post(client, f"{V1}/generate", song())["code"] == 200


def test_fail_task_531_refunds_the_credits(srv, client):
    start = balance(client)
    srv.configure(
        faults=[
            {
                "match": {"path": f"{V1}/generate"},
                "times": 1,
                "action": {"fail_task": "GENERATE_AUDIO_FAILED", "code": 531},
            }
        ]
    )
    tid = task_id(client, f"{V1}/generate", song())
    data = record(client, tid)
    assert (data["status"], data["errorCode"]) == ("GENERATE_AUDIO_FAILED", 531)
    assert data["errorMessage"]
    assert data["response"] is None
    assert balance(client) == start
    assert srv.tasks[0]["refunded"] is True


def test_fail_task_without_531_keeps_the_credits(srv, client):
    start = balance(client)
    srv.configure(
        faults=[
            {
                "match": {"path": f"{V1}/generate"},
                "times": 1,
                "action": {"fail_task": "SENSITIVE_WORD_ERROR"},
            }
        ]
    )
    data = record(client, task_id(client, f"{V1}/generate", song()))
    assert (data["status"], data["errorCode"]) == ("SENSITIVE_WORD_ERROR", 400)
    assert balance(client) == start - 12


def test_callback_exception_still_carries_the_songs(srv, client):
    srv.configure(
        faults=[
            {
                "match": {"path": f"{V1}/generate"},
                "times": 1,
                "action": {"fail_task": "CALLBACK_EXCEPTION"},
            }
        ]
    )
    data = record(client, task_id(client, f"{V1}/generate", song()))
    assert data["status"] == "CALLBACK_EXCEPTION"
    assert data["response"]["sunoData"][0]["audioUrl"]


def test_fail_task_on_wav_sets_the_success_flag(srv, client):
    tid, items = finished_song(client)
    srv.configure(
        faults=[
            {
                "match": {"op": "wav"},
                "times": 1,
                "action": {"fail_task": "GENERATE_WAV_FAILED", "code": 500},
            }
        ]
    )
    body = {"taskId": tid, "audioId": items[0]["id"], "callBackUrl": CB}
    data = record(client, task_id(client, f"{V1}/wav/generate", body), f"{V1}/wav/record-info")
    assert (data["successFlag"], data["errorCode"], data["response"]) == (
        "GENERATE_WAV_FAILED",
        500,
        None,
    )
    assert post(client, f"{V1}/wav/generate", body)["code"] == 200  # a failed WAV can be redone


def test_truncated_download(srv, client):
    _, items = finished_song(client)
    srv.configure(
        faults=[
            {"match": {"path": "/files/audio/*"}, "times": 1, "action": {"truncate_download": True}}
        ]
    )
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(items[0]["audioUrl"])
    assert srv.log[-1]["op"] == "download"
    assert len(client.get(items[0]["audioUrl"]).content) > 10_000


def test_slow_download_still_delivers_every_byte(srv, client):
    _, items = finished_song(client)
    whole = client.get(items[0]["audioUrl"]).content
    srv.configure(
        faults=[{"match": {"path": "/files/*"}, "times": 1, "action": {"slow_download": 5_000_000}}]
    )
    assert client.get(items[0]["audioUrl"]).content == whole
    assert srv.log[-1]["fault"] == {"slow_download": 5_000_000}


def test_expired_url_stays_dead_and_record_info_hands_out_a_fresh_one(srv, client):
    tid, items = finished_song(client)
    old = items[0]["audioUrl"]
    srv.configure(
        faults=[{"match": {"path": "/files/audio/*"}, "times": 1, "action": {"expired": True}}]
    )
    assert client.get(old).status_code == 403
    assert client.get(old).status_code == 403
    fresh = record(client, tid)["response"]["sunoData"][0]["audioUrl"]
    assert fresh != old
    assert client.get(fresh).status_code == 200
    recovery = post(client, f"{V1}/suno/recovery", {"sunoTaskId": tid, "callBackUrl": CB})
    done = client.get(
        f"{V1}/suno/recovery/record-info", params={"task_id": recovery["data"]["task_id"]}
    ).json()
    assert client.get(done["data"][0]["audio_url"]).status_code == 200


def test_expired_can_answer_404(srv, client):
    _, items = finished_song(client)
    srv.configure(
        faults=[
            {
                "match": {"path": "/files/image/*"},
                "times": 1,
                "action": {"expired": True, "status": 404},
            }
        ]
    )
    assert client.get(items[0]["imageUrl"]).status_code == 404
    assert client.get(items[0]["imageUrl"]).status_code == 404  # and stays so


def test_faults_match_on_the_body(srv, client):
    srv.configure(faults=[{"match": {"json": {"title": "Bad"}}, "action": {"envelope_code": 455}}])
    assert post(client, f"{V1}/generate", song(title="Good"))["code"] == 200
    assert post(client, f"{V1}/generate", song(title="Bad"))["code"] == 455
    assert post(client, f"{V1}/generate", song(title="Bad"))["code"] == 455  # times: null


def test_fault_probability_is_seeded():
    def pattern() -> list[int]:
        rule = {
            "match": {"path": f"{V1}/generate/credit"},
            "probability": 0.5,
            "action": {"envelope_code": 500},
        }
        with FakeServer("sunoapi", seed=7, faults=[rule]) as server, http(server.url) as c:
            return [c.get(f"{V1}/generate/credit").json()["code"] for _ in range(20)]

    first = pattern()
    assert first == pattern()
    assert set(first) == {200, 500}


def test_probability_zero_never_fires(srv, client):
    srv.configure(faults=[{"match": {}, "probability": 0, "action": {"envelope_code": 500}}])
    assert all(balance(client) > 0 for _ in range(5))
    assert "fault" not in srv.log[-1]


# -- rate limit ---------------------------------------------------------------------------


def test_rate_limit_answers_405_then_429_on_newer_endpoints(srv, client):
    tid, items = finished_song(client)  # 2 requests, before the limit is set
    srv.configure(rate_limit={"requests": 3, "per_seconds": 10})
    assert [client.get(f"{V1}/generate/credit").json()["code"] for _ in range(4)] == [
        200,
        200,
        200,
        405,
    ]
    body = {"taskId": tid, "audioId": items[0]["id"], "callBackUrl": CB}
    assert post(client, f"{V1}/wav/generate", body)["code"] == 429
    assert client.get(items[0]["audioUrl"]).status_code == 200  # downloads are not counted
    srv.advance(10.5)
    assert post(client, f"{V1}/wav/generate", body)["code"] == 200
    assert len(srv.tasks) == 2


# -- latency, log and control endpoints ----------------------------------------------------


def test_latency_is_drawn_per_task_and_recorded(srv, client):
    srv.configure(
        latency_scale=0.5,
        latency={
            "generate": {"dist": "fixed", "value": 100},
            "lyrics": {"dist": "uniform", "low": 2, "high": 3},
        },
    )
    tid = task_id(client, f"{V1}/generate", song())
    lyrics_tid = task_id(client, f"{V1}/lyrics", {"prompt": "x", "callBackUrl": CB})
    tasks = {t["task_id"]: t for t in client.get("/_fake/tasks").json()}
    assert (tasks[tid]["latency"], tasks[tid]["wall_latency"]) == (100, 50)
    assert tasks[tid]["state"] == "running"
    assert 2 <= tasks[lyrics_tid]["latency"] <= 3
    assert srv.log[-1]["latency"] == tasks[lyrics_tid]["latency"]


def test_lognormal_latency_is_reproducible_with_a_seed():
    def draws() -> list[float]:
        latency = {"generate": {"dist": "lognormal", "median": 150, "sigma": 0.3}}
        with FakeServer("sunoapi", seed=3, latency=latency) as server, http(server.url) as c:
            for _ in range(3):
                task_id(c, f"{V1}/generate", song())
            return [t["latency"] for t in server.tasks]

    first = draws()
    assert first == draws()
    assert len(set(first)) == 3


def test_log_entries_have_the_documented_fields(srv, client):
    tid = task_id(client, f"{V1}/generate", song(title="Logged"))
    client.get(f"{V1}/generate/record-info", params={"taskId": tid})
    log = client.get("/_fake/log").json()
    assert [e["op"] for e in log] == ["generate", "poll"]
    submit, poll = log
    assert set(submit) == {
        "t",
        "method",
        "path",
        "query",
        "json",
        "status",
        "envelope_code",
        "task_id",
        "op",
        "latency",
    }
    assert (submit["method"], submit["path"], submit["status"], submit["envelope_code"]) == (
        "POST",
        f"{V1}/generate",
        200,
        200,
    )
    assert submit["json"]["title"] == "Logged"
    assert submit["task_id"] == tid
    assert poll["query"] == {"taskId": tid}
    assert 0 <= submit["t"] <= poll["t"]
    assert [e for e in log if e["path"] == f"{V1}/generate" and e["json"]["title"] == "Logged"] == [
        submit
    ]


def test_base64_payloads_are_not_logged_in_full(srv, client):
    upload_base64(client, b"x" * 3000)
    assert srv.log[-1]["json"]["base64Data"] == "<4000 chars>"


def test_control_endpoints(srv, client):
    bad = client.post("/_fake/config", json={"latency": {"generate": {"dist": "gamma"}}})
    assert bad.status_code == 400
    assert "latency.generate.dist" in bad.json()["error"]
    assert client.post("/_fake/config", json={"nope": 1}).status_code == 400
    config = client.post("/_fake/config", json={"credits": 50}).json()
    assert config["api_key"] == "***"
    assert balance(client) == 50
    task_id(client, f"{V1}/generate", song())
    assert client.get("/_fake/state").json()["credits"] == 38
    assert client.post("/_fake/reset").json() == {"ok": True}
    assert client.get("/_fake/log").json() == []
    assert client.get("/_fake/tasks").json() == []
    assert balance(client) == 1_000_000
    assert client.post("/_fake/advance", json={"seconds": 5}).json()["now"] >= 5


def test_invalid_startup_config_raises():
    with pytest.raises(ConfigError, match="faults"):
        FakeServer("sunoapi", faults=[{"match": {}, "action": {"explode": True}}])


# -- the command line -------------------------------------------------------------------


def start_cli(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "runner.fake", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_cli_prints_the_url_serves_and_exits_0_on_sigterm(tmp_path):
    config = tmp_path / "faults.json"
    config.write_text(
        json.dumps(
            {"faults": [{"match": {"path": f"{V1}/lyrics"}, "action": {"envelope_code": 455}}]}
        )
    )
    proc = start_cli(
        "--protocol",
        "sunoapi",
        "--port",
        "0",
        "--api-key",
        "cli-key",
        "--credits",
        "77",
        "--config",
        str(config),
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        with http(url, headers={"Authorization": "Bearer cli-key"}) as c:
            assert c.get(f"{V1}/generate/credit").json() == {
                "code": 200,
                "msg": "success",
                "data": 77,
            }
            assert (
                c.post(f"{V1}/lyrics", json={"prompt": "x", "callBackUrl": CB}).json()["code"]
                == 455
            )
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert out == ""  # exactly one line was printed, and it was read above


def test_cli_rejects_a_bad_config_with_exit_2(tmp_path):
    config = tmp_path / "bad.json"
    config.write_text(json.dumps({"latency_scale": -1}))
    proc = start_cli("--config", str(config))
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert out == ""
    assert "latency_scale" in err


# -- work on an unfinished task (config unfinished_work) -----------------------------------
# REFERENCE 5: whether the service takes an extend, WAV, MP4, stems or cover request for a
# task at FIRST_SUCCESS is documented nowhere, so the fake plays both readings.

UNFINISHED_SONG = 100.0  # model seconds; the first clip is ready from 75


def first_stage_song(srv, client) -> tuple[str, list[str]]:
    """A song at FIRST_SUCCESS: its first clip ready, the task not finished."""
    srv.configure(latency_scale=1,
                  latency={"generate": {"dist": "fixed", "value": UNFINISHED_SONG},
                           "*": {"dist": "fixed", "value": 0}})
    tid = task_id(client, f"{V1}/generate", song())
    srv.advance(0.8 * UNFINISHED_SONG)
    data = record(client, tid)
    assert data["status"] == "FIRST_SUCCESS"
    return tid, [i["id"] for i in data["response"]["sunoData"]]


def work_on_first_clip(tid: str, clip: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{V1}/wav/generate", {"taskId": tid, "audioId": clip, "callBackUrl": CB}),
        (f"{V1}/mp4/generate", {"taskId": tid, "audioId": clip, "callBackUrl": CB}),
        (f"{V1}/vocal-removal/generate",
         {"taskId": tid, "audioId": clip, "type": "separate_vocal", "callBackUrl": CB}),
        (f"{V1}/generate/extend", {"audioId": clip, "defaultParamFlag": False,
                                   "model": "V4_5", "callBackUrl": CB}),
        (f"{V1}/suno/cover/generate", {"taskId": tid, "callBackUrl": CB}),
    ]


def test_by_default_work_on_the_first_clip_of_an_unfinished_task_is_accepted(srv, client):
    tid, (first, second) = first_stage_song(srv, client)
    for path, body in work_on_first_clip(tid, first):
        assert post(client, path, body)["code"] == 200, path
    # The second clip is not ready: refused as before, whatever the reading.
    wav = post(client, f"{V1}/wav/generate", {"taskId": tid, "audioId": second,
                                               "callBackUrl": CB})
    assert wav["code"] == 400


def test_the_strict_reading_refuses_work_on_an_unfinished_task_for_free(srv, client):
    tid, (first, _second) = first_stage_song(srv, client)
    srv.configure(unfinished_work="refuse")
    before, tasks = srv.credits, len(srv.tasks)
    for path, body in work_on_first_clip(tid, first):
        answer = post(client, path, body)
        assert (answer["code"], answer["msg"]) == (400, f"task {tid} has not finished"), path
    assert (srv.credits, len(srv.tasks)) == (before, tasks)  # no task, no charge
    srv.advance(UNFINISHED_SONG)  # finished: the same requests are taken
    for path, body in work_on_first_clip(tid, first):
        assert post(client, path, body)["code"] == 200, path


@pytest.mark.parametrize(("refusal", "status"), [
    ({"code": 422, "http_status": 422, "message": "audio {task_id} is still generating"}, 422),
    ({"code": 409, "message": "conflict"}, 200),
    ({"code": "TASK_NOT_READY"}, 200),
])
def test_the_strict_refusal_takes_other_codes_and_words(srv, client, refusal, status):
    tid, (first, _second) = first_stage_song(srv, client)
    srv.configure(unfinished_work="refuse", unfinished_refusal=refusal)
    answer = client.post(f"{V1}/wav/generate",
                         json={"taskId": tid, "audioId": first, "callBackUrl": CB})
    assert answer.status_code == status
    body = answer.json()
    assert body["code"] == refusal["code"]
    assert body["msg"] == refusal.get("message", "task {task_id} has not finished").replace(
        "{task_id}", tid)
    assert not [t for t in srv.tasks if t["op"] == "wav"]


@pytest.mark.parametrize("reading", ["accept", "refuse"])
def test_a_lagging_record_refuses_work_for_free_after_it_says_success(srv, client, reading):
    """`record_lag`: record-info says SUCCESS, but for that long the work endpoints answer
    as `unfinished_work: refuse` does (whatever the reading), then take the work."""
    tid, (first, second) = first_stage_song(srv, client)
    srv.configure(unfinished_work=reading, record_lag=10)
    srv.advance(0.25 * UNFINISHED_SONG)  # 5 s past the song's end
    assert record(client, tid)["status"] == "SUCCESS"
    before, tasks = srv.credits, len(srv.tasks)
    for path, body in [*work_on_first_clip(tid, first),
                       (f"{V1}/wav/generate", {"taskId": tid, "audioId": second,
                                               "callBackUrl": CB})]:
        answer = post(client, path, body)
        assert (answer["code"], answer["msg"]) == (400, f"task {tid} has not finished"), path
    assert (srv.credits, len(srv.tasks)) == (before, tasks)  # no task, no charge
    srv.advance(6)  # the record has caught up (10 s after the end)
    for path, body in work_on_first_clip(tid, first):
        assert post(client, path, body)["code"] == 200, path


@pytest.mark.parametrize(("answer", "code", "msg"), [
    ("unfinished", 400, "task {tid} has not finished"),
    ("404", 404, "not found"),
    ("400", 400, "validation error"),
    ("422", 422, "validation error"),
])
def test_a_lagging_record_answers_in_the_shape_asked_for(srv, client, answer, code, msg):
    """`record_lag_answer`: the lag's refusal says the task has not finished (as
    `unfinished_refusal` words it), or is a bare code of REFERENCE 1.2's table that does
    not say why; either way it makes no task and costs nothing. The early refusal of the
    strict reading keeps its own answer."""
    tid, (first, second) = first_stage_song(srv, client)
    srv.configure(unfinished_work="refuse", record_lag=10, record_lag_answer=answer)
    wav = {"taskId": tid, "audioId": first, "callBackUrl": CB}
    early = post(client, f"{V1}/wav/generate", wav)
    assert (early["code"], early["msg"]) == (400, f"task {tid} has not finished")
    srv.advance(0.25 * UNFINISHED_SONG)  # 5 s past the song's end
    assert record(client, tid)["status"] == "SUCCESS"
    before, tasks = srv.credits, len(srv.tasks)
    for path, body in work_on_first_clip(tid, first):
        answer_ = client.post(path, json=body)
        assert answer_.status_code == 200, path  # the service's envelope
        assert (answer_.json()["code"], answer_.json()["msg"]) == \
            (code, msg.format(tid=tid)), path
    assert (srv.credits, len(srv.tasks)) == (before, tasks)  # no task, no charge
    srv.advance(6)  # the record has caught up
    assert post(client, f"{V1}/wav/generate", wav)["code"] == 200


def test_a_lag_counted_in_refusals_ends_after_that_many_whatever_the_clock(srv, client):
    """`record_lag_refusals`: the lag ends once it has refused N requests that read the
    task (counted per task), though `record_lag` has not passed."""
    tid, (first, second) = first_stage_song(srv, client)
    srv.configure(record_lag=1000, record_lag_refusals=3, record_lag_answer="404")
    srv.advance(UNFINISHED_SONG)
    wavs = [{"taskId": tid, "audioId": clip, "callBackUrl": CB} for clip in (first, second)]
    codes = [post(client, f"{V1}/wav/generate", wavs[n % 2])["code"] for n in range(3)]
    assert codes == [404, 404, 404]
    assert not [t for t in srv.tasks if t["op"] == "wav"]
    assert [post(client, f"{V1}/wav/generate", body)["code"] for body in wavs] == [200, 200]


@pytest.mark.parametrize(("patch", "word"), [
    ({"record_lag": -1}, "record_lag"),
    ({"record_lag_answer": "410"}, "record_lag_answer"),
    ({"record_lag_refusals": 0}, "record_lag_refusals"),
    ({"record_lag_refusals": True}, "record_lag_refusals"),
    ({"unfinished_work": "sometimes"}, "unfinished_work"),
    ({"unfinished_refusal": {"code": 200}}, "unfinished_refusal.code"),
    ({"unfinished_refusal": {"http_status": 99}}, "unfinished_refusal.http_status"),
    ({"unfinished_refusal": {"colour": "red"}}, "unfinished_refusal"),
])
def test_a_bad_unfinished_setting_is_named(patch, word):
    with pytest.raises(ConfigError, match=word):
        FakeServer("sunoapi", **patch)


def test_cli_flag_plays_a_lagging_record():
    assert config_of("--record-lag", "7.5")["record_lag"] == 7.5
    config = config_of()
    assert (config["record_lag"], config["record_lag_answer"],
            config["record_lag_refusals"]) == (0, "unfinished", None)
    config = config_of("--record-lag", "7.5", "--record-lag-answer", "404",
                       "--record-lag-refusals", "2")
    assert (config["record_lag_answer"], config["record_lag_refusals"]) == ("404", 2)


def test_cli_flags_play_the_strict_reading():
    config = config_of("--unfinished", "refuse", "--unfinished-code", "422",
                       "--unfinished-http-status", "422", "--unfinished-message", "not yet")
    assert config["unfinished_work"] == "refuse"
    assert config["unfinished_refusal"] == {"code": 422, "http_status": 422,
                                            "message": "not yet"}
