"""sunoapi.org answers read into results, without I/O: a record-info `data` (or a
callback rewritten into one by sunoapi_callback.py) goes in; a Result, a First, Streams,
None ("still running") or a raised TaskFailed comes out. Nothing here sends a request or
touches a file, so every reader can be driven with plain dicts (tests/test_fuzz_answers.py).

Each operation reads its own status family (REFERENCE 2.22): `status` for music and
lyrics, a string `successFlag` for stems, WAV and MP4, an integer `successFlag` for cover
art. Unknown values mean "still running". A music task's FIRST_SUCCESS answers a First
once its first clip has what a download needs, whether a poll or a `first` callback
reports it: one reader (`read_music`) for both. Without the clip's audioUrl the task is
simply still running.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from runner.errors import TaskFailed
from runner.providers import codes, sunoapi_callback
from runner.providers.base import Fetch, First, Op, Result, Streams
from runner.providers.http import suffix
from runner.steps.models import DEFAULT_MODEL, MODEL_NAMES

ADD_DEFAULT_MODEL = "V4_5PLUS"  # the service's default for add-vocals / add-instrumental

STEMS = {
    "vocalUrl": "vocals", "instrumentalUrl": "instrumental",
    "backingVocalsUrl": "backing_vocals", "drumsUrl": "drums", "bassUrl": "bass",
    "guitarUrl": "guitar", "keyboardUrl": "keyboard", "percussionUrl": "percussion",
    "stringsUrl": "strings", "synthUrl": "synth", "fxUrl": "fx", "brassUrl": "brass",
    "woodwindsUrl": "woodwinds",
}


def _failed(status: str) -> bool:
    """A failure word by family (runner.providers.codes); CALLBACK_EXCEPTION reaches this
    only when the record holds no finished work, and then the task has nothing to give."""
    return status == "CALLBACK_EXCEPTION" or codes.failed(status)


def _refunded(code: Any, message: str) -> bool:
    # 531: "generation failed, credits refunded" (callback and record codes, REFERENCE 1.2).
    return codes.task(code, message).outcome == codes.REFUNDED


def music_items(response: Any) -> list[dict[str, Any]]:
    """A music record's clips, in either documented shape: sunoapi.org's
    `response.sunoData[]` (camelCase) or api.box's `response.data[]` (snake_case, the
    callbacks' items; REFERENCE 5), read into the camelCase a reader expects."""
    if not isinstance(response, dict):
        return []
    items = response.get("sunoData")
    if items is None:
        items = response.get("data")
    if not isinstance(items, list) or not all(isinstance(it, dict) for it in items):
        return []  # nothing readable: as if no clip were listed
    return [sunoapi_callback.music_item(it) for it in items]


def balance(data: Any) -> float | None:
    """`data` of a credits answer: an integer (/generate/credit) or {credits: N}
    (/get-credits)."""
    if isinstance(data, dict):
        data = data.get("credits")
    if isinstance(data, bool) or not isinstance(data, (int, float)):
        return None
    return float(data)


def stream_url(item: dict[str, Any]) -> str | None:
    url = item.get("streamAudioUrl")
    return url if isinstance(url, str) and url.startswith(("http://", "https://")) else None


def running_streams(items: list[dict[str, Any]]) -> Streams | None:
    """The takes' stream links of a running music task, or None when it offers none."""
    # Bounded like any text of an answer: a link too long for a browser is no preview.
    tracks = tuple({"n": n, "id": str(it.get("id") or "")[:200],
                    "title": str(it.get("title") or "")[:200], "stream_url": url}
                   for n, it in enumerate(items)
                   if (url := stream_url(it)) is not None and len(url) <= 4096)
    return Streams(tracks) if tracks else None


def _param(data: dict[str, Any]) -> dict[str, Any]:
    """record-info's `param`: the original request, as a JSON *string*."""
    raw = data.get("param")
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw) if isinstance(raw, str) and raw else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _cover_flag(raw: Any) -> int:
    """Cover art's successFlag is an int (0 pending, 1 success, 2 generating, 3 failed)."""
    if isinstance(raw, str) and not raw.strip().isdigit():
        return {"SUCCESS": 1, "FAILED": 3}.get(raw.strip().upper(), 0)
    try:
        return int(raw or 0)
    except (TypeError, ValueError):
        return 0


def fail(op: Op, task_id: str, status: str, data: dict[str, Any]) -> TaskFailed:
    code, msg = data.get("errorCode"), str(data.get("errorMessage") or "")
    refunded = _refunded(code, msg)
    detail = ", ".join(str(x) for x in (code, msg) if x not in (None, ""))
    return TaskFailed(f"the service failed task {task_id}: {status}"
                      + (f" ({detail})" if detail else "")
                      + ("; the credits were refunded" if refunded else ""),
                      step=op.step, refunded=refunded,
                      code=int(code) if isinstance(code, int) else None)


def read_music(op: Op, task_id: str, data: dict[str, Any]
               ) -> Result | First | Streams | None:
    status = str(data.get("status") or "").upper()
    items = music_items(data.get("response"))
    complete = bool(items) and all(it.get("audioUrl") for it in items)
    # CALLBACK_EXCEPTION: only the callback to us failed; the songs may well exist.
    if status == "SUCCESS" or (status == "CALLBACK_EXCEPTION" and complete):
        return Result(music_outputs(op, task_id, data, items)) if complete else None
    if _failed(status):
        raise fail(op, task_id, status, data)
    # The stream links a running task offers (REFERENCE 1.3: at TEXT_SUCCESS, in
    # record-info and in the `text` and `first` callbacks), for a preview only.
    streams = running_streams(items)
    if status == "FIRST_SUCCESS" and items and items[0].get("audioUrl") and \
            items[0].get("id"):
        # The first clip alone, read as the complete result will read it.
        return First(Result(music_outputs(op, task_id, data, items[:1])),
                     streams)
    # PENDING, TEXT_SUCCESS, GENERATING, FIRST_SUCCESS without a URL, anything unknown:
    # polled again, until the step's timeout (runner.engine.deadlines) ends the wait.
    # Streams is that same "running" answer (runner.providers), links attached.
    codes.note_unknown(status, "sunoapi")
    return streams


def _model(op: Op, data: dict[str, Any]) -> str:
    param = _param(data)
    if param.get("model"):
        return str(param["model"])
    if op.inputs.get("model"):
        return str(op.inputs["model"])
    if op.type in ("add_vocals", "add_instrumental"):
        return ADD_DEFAULT_MODEL
    audio = op.inputs.get("audio")
    return str(audio.get("model") or DEFAULT_MODEL) if isinstance(audio, dict) \
        else DEFAULT_MODEL


def music_outputs(op: Op, task_id: str, data: dict[str, Any],
                  items: list[dict[str, Any]]) -> dict[str, Any]:
    model = _model(op, data)
    tid = str(data.get("taskId") or task_id)
    tracks = []
    for it in items:
        url, image = str(it["audioUrl"]), it.get("imageUrl") or None
        duration = it.get("duration")
        tracks.append({
            "id": str(it.get("id")), "task_id": tid, "title": it.get("title") or "",
            "duration": float(duration) if isinstance(duration, (int, float)) else None,
            "tags": it.get("tags") or "", "prompt": it.get("prompt") or "",
            "model": model, "model_name": it.get("modelName") or MODEL_NAMES.get(model, model),
            "audio_url": url, "image_url": image, "file": Fetch(url, suffix(url, ".mp3")),
            "image_file": Fetch(image, suffix(image, ".jpeg")) if image else None,
            # Playable while the task runs (REFERENCE 1.3), for a preview; a plain
            # string, never a Fetch: the stream is not the result and is not stored.
            "stream_url": stream_url(it),
        })
    return {"tracks": tracks, "task_id": tid, "file": tracks[0]["file"]}


def read_lyrics(op: Op, task_id: str, data: dict[str, Any]) -> Result | None:
    status = str(data.get("status") or "").upper()
    items = (data.get("response") or {}).get("data") or []
    texts = [{"title": it.get("title") or "", "text": it.get("text") or ""}
             for it in items if str(it.get("status", "complete")).lower() != "failed"
             and it.get("text")]
    if status == "SUCCESS" or (status == "CALLBACK_EXCEPTION" and texts):
        if not texts:
            raise TaskFailed(f"the service returned no lyrics for task {task_id}",
                             step=op.step)
        return Result({"texts": texts, "text": texts[0]["text"],
                       "title": texts[0]["title"], "task_id": task_id})
    if _failed(status):
        raise fail(op, task_id, status, data)
    return None


def read_flag(op: Op, task_id: str, data: dict[str, Any]) -> Result | None:
    flag = str(data.get("successFlag") or "PENDING").upper()
    response = data.get("response") or {}
    outputs = _flag_outputs(op, task_id, response)
    if flag == "SUCCESS" or (flag == "CALLBACK_EXCEPTION" and outputs is not None):
        return Result(outputs) if outputs is not None else None
    if _failed(flag):
        raise fail(op, task_id, flag, data)
    return None


def _flag_outputs(op: Op, task_id: str, response: dict[str, Any]
                  ) -> dict[str, Any] | None:
    if op.type == "separate":
        stems = {name: {"url": response[key], "file": Fetch(response[key],
                                                             suffix(response[key], ".mp3"))}
                 for key, name in STEMS.items() if response.get(key)}
        return {"stems": stems, "task_id": task_id} if stems else None
    if op.type == "video":
        url = response.get("videoUrl")
        return {"url": url, "file": Fetch(url, suffix(url, ".mp4")),
                "task_id": task_id} if url else None
    url = response.get("audioWavUrl")
    if not url:
        return None
    audio = op.inputs.get("audio")
    source: dict[str, Any] = audio if isinstance(audio, dict) else {}
    wav = Fetch(url, suffix(url, ".wav"))
    # The WAV is the same song: it keeps the source's ids (so later steps can still
    # name it to the service) and its artwork, with the new audio file.
    track = {**{k: source.get(k) for k in ("id", "task_id", "title", "duration", "tags",
                                           "prompt", "model", "model_name", "image_url",
                                           "image_file")},
             "audio_url": url, "file": wav}
    return {"tracks": [track], "file": wav, "url": url, "task_id": task_id}


def read_cover(op: Op, task_id: str, data: dict[str, Any]) -> Result | None:
    flag = _cover_flag(data.get("successFlag"))
    if flag == 1:
        images = (data.get("response") or {}).get("images") or []
        if not images:
            return None
        return Result({"images": [{"url": u, "file": Fetch(u, suffix(u, ".png"))}
                                  for u in images], "task_id": task_id})
    if flag == 3:
        raise fail(op, task_id, "cover art failed", data)
    return None  # 0 pending, 2 generating


# Endpoint.reader -> the function that reads that family's record-info `data`.
READERS: dict[str, Callable[[Op, str, dict[str, Any]], Result | First | Streams | None]] = {
    "music": read_music, "lyrics": read_lyrics, "flag": read_flag, "cover": read_cover,
}
