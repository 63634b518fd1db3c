"""The new-api / one-api Suno relay protocol (REFERENCE section 3).

Submits answer `{code: "success", message: "", data: "<task_id>"}`; errors are
`{code: "<error_code>", message, data: null}` with an HTTP status, as new-api's
`TaskError` (validation: `invalid_request` 400 with the reason in `message`; no quota:
`quota_not_enough` 403; unknown task: `task_not_exist` 400).

A continuation returns only the new part, as Suno itself does, so a client wanting the
whole song must concat; `extend_returns: "whole"` makes it return source + new part.
`relay_extras` switches the hosted-relay endpoints (concat, upload) on; off, the fake
answers as new-api does: concat is an `invalid_action`, the upload route does not exist.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any
from urllib.parse import unquote, urlsplit

from runner.fake import content
from runner.fake.courier import Courier
from runner.fake.server import ApiError, Protocol, Request, Response, Route
from runner.fake.state import Clip, NoCredits, Resource, Task

DEFAULT_MV = "chirp-v3-0"  # new-api's default when `mv` is empty
MV_PATTERN = re.compile(r"^chirp-[a-z0-9-]+$")
MUSIC_OPS = frozenset({"generate", "extend", "concat", "upload"})
ACTIONS = {
    "generate": "MUSIC",
    "extend": "MUSIC",
    "lyrics": "LYRICS",
    "concat": "CONCAT",
    "upload": "UPLOAD",
}


def _text(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ApiError("invalid_request", f"{key} must be a string")
    return value


def _full_length(clips: dict[str, Clip], clip: Clip) -> float:
    """Seconds of the whole song that ends with `clip` (its extension chain, concatenated)."""
    source_id = clip.extra.get("source")
    if not clip.extra.get("continuation_only") or source_id not in clips:
        return clip.duration
    source = clips[source_id]
    before = _full_length(clips, source) - source.duration  # what precedes the source clip
    return round(before + float(clip.extra["continue_at"]) + clip.duration, 2)


def _history(clips: dict[str, Clip], clip: Clip) -> list[dict[str, Any]]:
    """The steps that led to `clip`, root first: each names a clip and where its child
    continued it, as Suno's `metadata.history`."""
    chain: list[dict[str, Any]] = []
    current = clip
    while current.extra.get("source") in clips:
        chain.insert(
            0,
            {
                "id": current.extra["source"],
                "continue_at": current.extra["continue_at"],
                "type": "gen",
                "source": "web",
                "infill": False,
            },
        )
        current = clips[current.extra["source"]]
    return chain


class NewApi(Protocol):
    name = "newapi"

    def __init__(self, world: Any) -> None:
        super().__init__(world)
        # `notify_hook` (the relay page, REFERENCE 5): the task object, POSTed when the task
        # ends, with the `callbacks` configuration's delays and faults.
        self.courier = Courier(self.world, lambda task, stage, base: self._dto(base, task))

    def route(self, method: str, path: str, body: Any) -> Route | None:
        path = path.rstrip("/")
        extras = self.world.config["relay_extras"]
        if method == "POST" and path.startswith("/suno/submit/"):
            action = path.removeprefix("/suno/submit/").lower()
            if action == "music":
                extend = isinstance(body, dict) and bool(
                    body.get("continue_clip_id") or body.get("task_id")
                )
                return Route("extend" if extend else "generate", self.music)
            if action == "lyrics":
                return Route("lyrics", self.lyrics)
            if action == "concat" and extras:
                return Route("concat", self.concat)
            return Route("submit", self.invalid_action)
        if method == "POST" and path == "/suno/uploads/audio-url" and extras:
            return Route("upload", self.upload)
        if method == "POST" and path == "/suno/fetch":
            return Route("poll", self.fetch_many)
        if method == "GET" and path.startswith("/suno/fetch/") and path.count("/") == 3:
            return Route("poll", self.fetch_one)
        return None

    # -- envelopes -------------------------------------------------------------------------

    def error(
        self,
        route: Route | None,
        code: int | str,
        msg: str,
        *,
        http_status: int | None = None,
        data: Any = None,
    ) -> Response:
        if http_status is None:
            http_status = code if isinstance(code, int) and 400 <= code < 600 else 400
        return Response.json_body(
            {"code": str(code), "message": msg, "data": data}, http_status, envelope_code=str(code)
        )

    def not_found(self, method: str, path: str) -> Response:
        # gin's answer for a route that does not exist.
        return Response(404, b"404 page not found", "text/plain")

    def unauthorized(self, route: Route) -> Response:
        return self.error(route, "unauthorized", "invalid or missing token", http_status=401)

    def rate_limited(self, route: Route) -> Response:
        return self.error(route, "rate_limit_exceeded", "too many requests", http_status=429)

    def server_error(self, route: Route | None) -> Response:
        return self.error(route, "internal_error", "server error", http_status=500)

    @staticmethod
    def success(data: Any) -> Response:
        return Response.json_body(
            {"code": "success", "message": "", "data": data}, envelope_code="success"
        )

    # -- submits ---------------------------------------------------------------------------

    def _body(self, req: Request) -> dict[str, Any]:
        if not isinstance(req.json, dict):
            raise ApiError("invalid_request", "the request body must be a JSON object")
        return req.json

    def _submit(
        self, req: Request, op: str, params: dict[str, Any], data: dict[str, Any] | None = None
    ) -> Task:
        try:
            # new-api gives the quota back for every failed task.
            task = self.world.create_task(
                req.entry,
                req.fault,
                task_id=self.world.new_relay_id(),
                op=op,
                params=params,
                refund_on_fail="all",
                data=data,
            )
        except NoCredits as exc:
            raise ApiError("quota_not_enough", str(exc), http_status=403) from None
        hook = params.get("notify_hook")
        if isinstance(hook, str) and hook and self.world.config["callbacks"] is not None:
            stages = [(1.0, "complete")]
            req.after.append(lambda: self.courier.schedule(task, hook, req.base, stages))
        return task

    def _add_clip(
        self,
        task: Task,
        *,
        mv: str,
        title: str,
        tags: str,
        lyrics: str,
        instrumental: bool,
        duration: float,
        extra: dict[str, Any],
    ) -> None:
        world = self.world
        clip = Clip(
            id=world.new_uuid(),
            task_id=task.id,
            title=title,
            tags=tags,
            lyrics=lyrics,
            model=mv,
            model_name=mv,
            duration=round(duration, 2),
            instrumental=instrumental,
            created=task.created,
            extra=extra,
        )
        world.add_clip(clip)
        world.add_file(f"audio/{clip.id}.mp3", Resource("mp3", clip.duration))
        world.add_file(f"image/{clip.id}.png", Resource("png"))
        world.add_file(f"video/{clip.id}.mp4", Resource("mp4"))

    def invalid_action(self, req: Request) -> Response:
        raise ApiError("invalid_request", "invalid_action")

    def music(self, req: Request) -> Response:
        body = self._body(req)
        mv = _text(body, "mv") or DEFAULT_MV
        if not MV_PATTERN.match(mv):
            raise ApiError("invalid_request", f"mv must be a model id such as chirp-v4; got {mv!r}")
        instrumental = body.get("make_instrumental", False)
        if not isinstance(instrumental, bool):
            raise ApiError("invalid_request", "make_instrumental must be true or false")
        prompt, tags, title = _text(body, "prompt"), _text(body, "tags"), _text(body, "title")
        description = _text(body, "gpt_description_prompt")
        clip_id, origin_id = _text(body, "continue_clip_id"), _text(body, "task_id")
        if clip_id and not origin_id:
            raise ApiError(
                "invalid_request", "continue_clip_id needs task_id (the task that made the clip)"
            )
        if origin_id and not clip_id:
            raise ApiError("invalid_request", "task_id needs continue_clip_id")
        config = self.world.config
        if clip_id:
            source = self._continuable(origin_id, clip_id)
            at = body.get("continue_at")
            if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
                raise ApiError("invalid_request", "continue_at (seconds) is required")
            if not 0 < at < source.duration:
                raise ApiError(
                    "invalid_request",
                    f"continue_at must be > 0 and < the clip's duration {source.duration}",
                )
            whole = (config["extend_returns"] or "continuation") == "whole"
            extra = {
                "type": "gen",
                "source": source.id,
                "continue_at": float(at),
                "continuation_only": not whole,
            }
            duration = config["continuation_duration"] + (float(at) if whole else 0.0)
            title, tags = title or source.title, tags or source.tags
            lyrics = "" if instrumental else prompt
            op = "extend"
        elif description or prompt or tags:
            extra = {"type": "gen", "gpt_description_prompt": description or None}
            duration = config["clip_duration"]
            if description:
                title = title or content.title_from(description)
                tags = tags or content.tags_from(description)
                lyrics = "" if instrumental else content.lyrics_from(description)
            else:
                title = title or content.title_from(prompt or tags)
                lyrics = "" if instrumental else prompt
            op = "generate"
        else:
            raise ApiError("invalid_request", "prompt_empty")
        task = self._submit(req, op, body)
        for _ in range(config["clips_per_task"]):
            self._add_clip(
                task,
                mv=mv,
                title=title,
                tags=tags,
                lyrics=lyrics,
                instrumental=instrumental,
                duration=duration,
                extra=dict(extra),
            )
        return self.success(task.id)

    def _continuable(self, origin_id: str, clip_id: str) -> Clip:
        origin = self.world.task(origin_id, MUSIC_OPS)
        if origin is None:
            raise ApiError("invalid_request", "task_origin_not_exist")
        if not origin.succeeded(self.world.now()):
            raise ApiError("invalid_request", f"task {origin_id} has not finished successfully")
        if clip_id not in origin.clips:
            raise ApiError("invalid_request", f"clip {clip_id} is not a clip of task {origin_id}")
        with self.world.lock:
            return self.world.clips[clip_id]

    def lyrics(self, req: Request) -> Response:
        body = self._body(req)
        prompt = _text(body, "prompt")
        if not prompt:
            raise ApiError("invalid_request", "prompt_empty")
        task = self._submit(
            req,
            "lyrics",
            body,
            data={
                "id": self.world.new_uuid(),
                "title": content.title_from(prompt),
                "text": content.lyrics_from(prompt),
            },
        )
        return self.success(task.id)

    def concat(self, req: Request) -> Response:
        body = self._body(req)
        clip_id = _text(body, "clip_id")
        if not clip_id:
            raise ApiError("invalid_request", "clip_id is required")
        if not isinstance(body.get("is_infill", False), bool):
            raise ApiError("invalid_request", "is_infill must be true or false")
        with self.world.lock:
            clips = dict(self.world.clips)
        clip = clips.get(clip_id)
        if clip is None:
            raise ApiError("invalid_request", f"clip {clip_id} not found")
        origin = self.world.task(clip.task_id)
        if origin is None or not origin.succeeded(self.world.now()):
            raise ApiError("invalid_request", f"clip {clip_id} has not finished successfully")
        task = self._submit(req, "concat", body)
        self._add_clip(
            task,
            mv=clip.model,
            title=clip.title,
            tags=clip.tags,
            lyrics=clip.lyrics,
            instrumental=clip.instrumental,
            duration=_full_length(clips, clip),
            extra={
                "type": "concat",
                "concat_history": [
                    *_history(clips, clip),
                    {
                        "id": clip.id,
                        "continue_at": None,
                        "type": "gen",
                        "source": "web",
                        "infill": False,
                    },
                ],
            },
        )
        return self.success(task.id)

    def upload(self, req: Request) -> Response:
        body = self._body(req)
        url = _text(body, "url")
        if not re.match(r"^https?://[^\s/]+", url):
            raise ApiError("invalid_request", "url must be an http(s) URL")
        ours, resource = self.world.own_resource(url, req.base)
        if not ours:
            # No network: an outside URL stands for a track of the configured length.
            duration = self.world.config["upload_duration"] or self.world.config["clip_duration"]
        elif resource is None:
            raise ApiError("invalid_request", f"failed to fetch {url}")
        else:
            duration = self.world.duration_of(resource)
            if duration is None:
                raise ApiError("invalid_request", f"{url} is not a readable audio file")
        name = unquote(urlsplit(url).path.rsplit("/", 1)[-1]).rsplit(".", 1)[0]
        task = self._submit(req, "upload", body)
        self._add_clip(
            task,
            mv="chirp-upload",
            title=content.title_from(name or "upload"),
            tags="",
            lyrics="",
            instrumental=False,
            duration=float(duration),
            extra={"type": "upload"},
        )
        return self.success(task.id)

    # -- fetch -----------------------------------------------------------------------------

    def _status(self, task: Task) -> tuple[str, float]:
        now = self.world.now()
        fraction = task.fraction(now)
        if task.done(now):
            return ("FAILURE" if task.fail else "SUCCESS"), fraction
        if fraction < 0.05:
            return "SUBMITTED", fraction
        return ("QUEUED" if fraction < 0.15 else "IN_PROGRESS"), fraction

    def _clip(self, base: str, clip: Clip, status: str) -> dict[str, Any]:
        world = self.world
        done = status == "SUCCESS"
        started = status in ("IN_PROGRESS", "SUCCESS")
        clip_status = {
            "SUCCESS": "complete",
            "FAILURE": "error",
            "IN_PROGRESS": "streaming",
            "QUEUED": "queued",
        }.get(status, "submitted")
        audio = world.url(base, f"audio/{clip.id}.mp3") if started else ""
        image = world.url(base, f"image/{clip.id}.png") if started else ""
        task = world.task(clip.task_id)
        failure = task.fail if task is not None and status == "FAILURE" else None
        with world.lock:
            history = _history(world.clips, clip)
        metadata: dict[str, Any] = {
            "tags": clip.tags,
            "prompt": clip.lyrics,
            "gpt_description_prompt": clip.extra.get("gpt_description_prompt"),
            "audio_prompt_id": None,
            "type": clip.extra.get("type", "gen"),
            "duration": clip.duration if done else None,
            "stream": True,
            "refund_credits": failure is not None,
            "error_type": "generation_error" if failure else None,
            "error_message": (failure.get("message") or failure["status"]) if failure else None,
            "history": history or None,
            "concat_history": clip.extra.get("concat_history"),
        }
        created = dt.datetime.fromtimestamp(world.epoch_ms(clip.created) / 1000, dt.UTC)
        return {
            "id": clip.id,
            "video_url": world.url(base, f"video/{clip.id}.mp4") if done else "",
            "audio_url": audio,
            "image_url": image,
            "image_large_url": image,
            "is_video_pending": not done,
            "major_model_version": clip.model.removeprefix("chirp-"),
            "model_name": clip.model_name,
            "status": clip_status,
            "title": clip.title,
            "text": clip.lyrics,
            "metadata": metadata,
            "created_at": created.isoformat().replace("+00:00", "Z"),
        }

    def _dto(self, base: str, task: Task) -> dict[str, Any]:
        world = self.world
        status, fraction = self._status(task)
        data: Any
        if task.op == "lyrics":
            lyric = task.data
            data = {
                "id": lyric["id"],
                "status": {"SUCCESS": "complete", "FAILURE": "error"}.get(status, "running"),
                "title": lyric["title"] if status == "SUCCESS" else "",
                "text": lyric["text"] if status == "SUCCESS" else "",
            }
        else:
            with world.lock:
                clips = [world.clips[c] for c in task.clips]
            data = [self._clip(base, clip, status) for clip in clips]
        fail_reason = ""
        if status == "FAILURE" and task.fail:
            fail_reason = task.fail.get("message") or task.fail["status"]
        started = status in ("IN_PROGRESS", "SUCCESS", "FAILURE")
        return {
            "task_id": task.id,
            "action": ACTIONS[task.op],
            # FAILURE in new-api's TaskDto, FAIL on the relay page: a configured reading.
            "status": self.world.config["relay_fail_status"] if status == "FAILURE" else status,
            "fail_reason": fail_reason,
            "submit_time": world.epoch_ms(task.created),
            "start_time": world.epoch_ms(task.created + 0.15 * task.wall) if started else 0,
            "finish_time": world.epoch_ms(task.ends)
            if status in ("SUCCESS", "FAILURE")
            else 0,
            "progress": "100%"
            if status in ("SUCCESS", "FAILURE")
            else f"{min(99, int(fraction * 100))}%",
            "data": data,
        }

    def fetch_many(self, req: Request) -> Response:
        body = self._body(req)
        ids = body.get("ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ApiError("invalid_request", "ids must be a list of task ids")
        found = [self.world.task(i) for i in ids]
        return self.success([self._dto(req.base, t) for t in found if t is not None])

    def fetch_one(self, req: Request) -> Response:
        task = self.world.task(req.path.rstrip("/").rsplit("/", 1)[-1])
        if task is None:
            raise ApiError("task_not_exist", "task_not_exist")
        return self.success(self._dto(req.base, task))
