"""The bodies of sunoapi.org callbacks (REFERENCE 2.8, 2.9, 2.12-2.16), per operation and
stage, built from the fake's task as it stands when the courier sends them.

Music goes through `text` (a quarter of the run, as record-info's TEXT_SUCCESS), `first`
(three quarters: the first clip is ready) and `complete`; a failed music task sends one
`error`. Every other family sends one callback when done, with the failure's code (not
200) when it failed. Casing follows the reference: snake_case items and `task_id` for
music, stems, WAV and MP4; `taskId` for lyrics and cover art.
"""

from __future__ import annotations

from typing import Any, Protocol

from runner.fake.config import MUSIC_OPS
from runner.fake.state import FIRST_AT, TEXT_AT, Clip, Task


class SunoApi(Protocol):
    """What a body reads of the service (runner.fake.sunoapi.SunoApi), named here because
    that module imports this one: no import circle, not even a type-only one."""

    world: Any

    def _fail(self, task: Task) -> tuple[int, str]: ...

    def _suno_item(self, base: str, clip: Clip, ready: bool) -> dict[str, Any]: ...

STEM_OPS = frozenset({"separate_vocal", "split_stem", "split_stem_advanced"})
CALLED_BACK = MUSIC_OPS | STEM_OPS | {"lyrics", "wav", "mp4", "cover"}
SNAKE = {
    "audioUrl": "audio_url", "sourceAudioUrl": "source_audio_url",
    "streamAudioUrl": "stream_audio_url", "sourceStreamAudioUrl": "source_stream_audio_url",
    "imageUrl": "image_url", "sourceImageUrl": "source_image_url", "modelName": "model_name",
}
MUSIC_MSG = {"text": "Text generation completed.", "first": "First audio generated.",
             "complete": "All generated successfully."}


def stages(task: Task) -> list[tuple[float, str]]:
    """(fraction of the task's run, stage) for each callback `task` sends."""
    if task.op not in CALLED_BACK:
        return []  # recovery: its callback shape is not documented
    if task.op in MUSIC_OPS:
        if task.fail is not None:
            return [(TEXT_AT, "text"), (1.0, "error")]
        return [(TEXT_AT, "text"), (FIRST_AT, "first"), (1.0, "complete")]
    return [(1.0, "complete")]


def body(api: SunoApi, task: Task, stage: str, base: str) -> dict[str, Any]:
    world = api.world
    failed = task.fail is not None
    code, msg = api._fail(task) if failed else (200, "success")
    if task.op in MUSIC_OPS:
        if stage == "error":
            return {"code": code, "msg": msg,
                    "data": {"callbackType": "error", "task_id": task.id, "data": None}}
        with world.lock:
            clips = [world.clips[c] for c in task.clips]
        items = []
        for i, clip in enumerate(clips):
            ready = stage == "complete" or (stage == "first" and i == 0)
            item = api._suno_item(base, clip, ready)
            items.append({SNAKE.get(k, k): v for k, v in item.items()})
        return {"code": 200, "msg": MUSIC_MSG[stage],
                "data": {"callbackType": stage, "task_id": task.id, "data": items}}
    if task.op == "lyrics":
        items = [{"text": "", "title": "", "status": "failed", "errorMessage": msg}] if failed \
            else [{**v, "status": "complete", "errorMessage": ""} for v in task.data["variants"]]
        return {"code": code, "msg": msg if failed else "All generated successfully.",
                "data": {"callbackType": "complete", "taskId": task.id, "data": items}}
    if task.op in STEM_OPS:
        info = None
        if not failed:
            info = {f"{stem}_url": world.url(base, f"stems/{task.id}/{stem}.mp3")
                    for stem in task.data["stems"]}
        return {"code": code, "msg": msg if failed else "vocal Removal generated successfully.",
                "data": {"task_id": task.id, "vocal_removal_info": info}}
    if task.op == "wav":
        url = None if failed else world.url(base, f"wav/{task.id}.wav")
        return {"code": code, "msg": msg, "data": {"task_id": task.id, "audioWavUrl": url}}
    if task.op == "mp4":
        url = None if failed else world.url(base, f"video/{task.id}.mp4")
        return {"code": code, "msg": msg if failed else "MP4 generated successfully.",
                "data": {"task_id": task.id, "video_url": url}}
    images = None if failed else [world.url(base, f"covers/{task.id}/{i}.png") for i in range(2)]
    return {"code": code, "msg": msg, "data": {"taskId": task.id, "images": images}}
