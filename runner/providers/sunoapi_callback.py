"""sunoapi.org callbacks, read as the record-info answers they stand for.

A callback (REFERENCE 2.8, 2.9, 2.12-2.16) carries what a poll would have returned, in
another shape: snake_case items (`audio_url`) where record-info says `audioUrl`, a stage
(`callbackType` text | first | complete | error) where record-info has a `status`, and
`task_id` on most families but `taskId` on lyrics and cover art. `details` rewrites a
callback into the record-info `data` that the provider's readers already understand, so a
callback and a poll of the same task give the same Result through the same code.

Bodies come from the network: everything here is defensive. Only the fields a reader
uses are kept, URLs must be http(s) strings, items must be objects; anything else is
dropped, and a body that says nothing usable reads as "still running".
"""

from __future__ import annotations

from typing import Any

from runner import paths

MAX_ID = 128  # longer "task ids" are not the service's

# snake_case callback item fields -> the record-info camelCase a reader expects.
MUSIC_FIELDS = {
    "id": "id", "audio_url": "audioUrl", "stream_audio_url": "streamAudioUrl",
    "image_url": "imageUrl", "prompt": "prompt", "model_name": "modelName", "title": "title",
    "tags": "tags", "createTime": "createTime", "duration": "duration",
}
URL_FIELDS = frozenset({"audioUrl", "streamAudioUrl", "imageUrl"})
STAGES = {"text": "TEXT_SUCCESS", "first": "FIRST_SUCCESS", "complete": "SUCCESS"}
# The failure status each string-flag family reports (REFERENCE 2.22).
FLAG_FAILED = {"separate": "GENERATE_AUDIO_FAILED", "convert": "GENERATE_WAV_FAILED",
               "video": "GENERATE_MP4_FAILED"}


def task_id(body: Any) -> str | None:
    """The task a callback is about, or None when the body names none."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict):
        return None
    tid = data.get("task_id") or data.get("taskId")
    if isinstance(tid, int) and not isinstance(tid, bool):
        tid = str(tid)
    if not isinstance(tid, str) or not tid or len(tid) > MAX_ID:
        return None
    return tid


def stage(body: Any) -> str | None:
    data = body.get("data") if isinstance(body, dict) else None
    value = data.get("callbackType") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def _url(value: Any) -> str | None:
    if isinstance(value, str) and paths.is_url(value):
        return value
    return None


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _ok(body: dict[str, Any]) -> bool:
    return str(body.get("code")) == "200"


def _failure(body: dict[str, Any]) -> dict[str, Any]:
    code = body.get("code")
    msg = body.get("msg")
    return {"errorCode": code if isinstance(code, int) and not isinstance(code, bool) else None,
            "errorMessage": msg if isinstance(msg, str) else ""}


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(w.capitalize() for w in rest)


def music_item(item: dict[str, Any]) -> dict[str, Any]:
    """One clip, snake_case or camelCase, as record-info's camelCase."""
    out: dict[str, Any] = {}
    for src, dst in MUSIC_FIELDS.items():
        value = item.get(src, item.get(dst))
        if dst in URL_FIELDS:
            value = _url(value)
        if _scalar(value):
            out[dst] = value
    return out


def details(reader: str, op_type: str, body: Any) -> dict[str, Any]:
    """The record-info `data` a callback stands for, for the provider's `reader`
    (music | lyrics | flag | cover). A callback that is not a 200 is a failure."""
    if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
        return {}
    data: dict[str, Any] = body["data"]
    ok = _ok(body) and stage(body) != "error"
    if reader == "music":
        if not ok:
            return {"status": "GENERATE_AUDIO_FAILED", **_failure(body)}
        items = data.get("data")
        songs = [music_item(it) for it in items if isinstance(it, dict)] \
            if isinstance(items, list) else []
        return {"status": STAGES.get(stage(body) or "", "PENDING"),
                "response": {"sunoData": songs}}
    if reader == "lyrics":
        if not ok:
            return {"status": "GENERATE_LYRICS_FAILED", **_failure(body)}
        items = data.get("data")
        texts = [{k: it.get(k) for k in ("text", "title", "status", "errorMessage")
                  if isinstance(it.get(k), str)}
                 for it in items if isinstance(it, dict)] if isinstance(items, list) else []
        return {"status": "SUCCESS", "response": {"data": texts}}
    if reader == "flag":
        if not ok:
            return {"successFlag": FLAG_FAILED.get(op_type, "GENERATE_AUDIO_FAILED"),
                    **_failure(body)}
        response: dict[str, Any] = {}
        if op_type == "separate":
            info = data.get("vocal_removal_info")
            if isinstance(info, dict):
                response = {_camel(k): u for k, v in info.items()
                            if isinstance(k, str) and (u := _url(v))}
        elif op_type == "convert":
            wav = _url(data.get("audioWavUrl") or data.get("audio_wav_url"))
            response = {"audioWavUrl": wav} if wav else {}
        elif op_type == "video":
            video = _url(data.get("video_url") or data.get("videoUrl"))
            response = {"videoUrl": video} if video else {}
        return {"successFlag": "SUCCESS", "response": response}
    if reader == "cover":
        if not ok:
            return {"successFlag": 3, **_failure(body)}
        images = data.get("images")
        urls = [u for u in images if _url(u)] if isinstance(images, list) else []
        return {"successFlag": 1, "response": {"images": urls}}
    return {}
