"""The sunoapi.org "v1" protocol (REFERENCE section 2), including the file-upload host.

Envelopes are `{code, msg, data}` at HTTP 200; the upload host adds `success`. Two code
tables apply (REFERENCE 1.1 / 1.2): the "classic" family (generate, lyrics, style ...)
says 429 for insufficient credits and 405 for the rate limit; the "newer" endpoints (WAV,
MP4, cover art, stems, persona, replace-section, recovery) say 402 and 429.

With the `callbacks` configuration key set, every task whose submit names a callBackUrl
is called back in stages (bodies in sunoapi_callbacks.py, delivery in courier.py).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from typing import Any
from urllib.parse import unquote, urlsplit

from runner.fake import content, sunoapi_callbacks
from runner.fake.config import BARE_REFUSALS, MUSIC_OPS
from runner.fake.courier import Courier
from runner.fake.server import ApiError, Protocol, Request, Response, Route
from runner.fake.state import FIRST_AT, TEXT_AT, Clip, NoCredits, Resource, Task
from runner.fake.uploads import UploadHost
from runner.fake.validation import (
    ADD_MODELS,
    LYRICS_PROMPT_WORDS,
    MODEL_NAMES,
    boolean,
    callback,
    check_length,
    json_object,
    model_field,
    number,
    optional_fields,
    prompt_limit,
    required_string,
    song_fields,
    source_limit,
    string,
    style_limit,
    title_limit,
)

STEM_OPS = frozenset({"separate_vocal", "split_stem", "split_stem_advanced"})
SEPARATE_KEYS = {"origin": "originUrl", "instrumental": "instrumentalUrl", "vocal": "vocalUrl"}
SPLIT_KEYS = {
    "vocal": "vocalUrl",
    "backing_vocals": "backingVocalsUrl",
    "drums": "drumsUrl",
    "bass": "bassUrl",
    "guitar": "guitarUrl",
    "keyboard": "keyboardUrl",
    "percussion": "percussionUrl",
    "strings": "stringsUrl",
    "synth": "synthUrl",
    "fx": "fxUrl",
    "brass": "brassUrl",
    "woodwinds": "woodwindsUrl",
}
ALL_STEM_KEYS = ["originUrl", "instrumentalUrl", *SPLIT_KEYS.values()]
RECOVERY_ERRORS = frozenset(
    "no_audio_id_mappings account_missing get_tokens_failed feed_failed clip_error "
    "clip_not_complete mango_transfer_failed".split()
)
DEFAULT_FAIL_CODES = {
    "SENSITIVE_WORD_ERROR": 400,
    "GENERATE_AUDIO_FAILED": 501,
    "GENERATE_LYRICS_FAILED": 501,
}
CLASSIC, NEWER, UPLOAD = "classic", "newer", "upload"
DONE_FLAGS = frozenset({"SUCCESS", "CALLBACK_EXCEPTION"})  # the work exists in both


class SunoApi(Protocol):
    name = "sunoapi"

    def __init__(self, world: Any) -> None:
        super().__init__(world)
        uploads = UploadHost(self.world)
        self.courier = Courier(
            self.world, lambda task, stage, base: sunoapi_callbacks.body(self, task, stage, base)
        )
        v1 = "/api/v1"
        post, get = "POST", "GET"
        self.routes: dict[tuple[str, str], Route] = {
            (post, f"{v1}/generate"): Route("generate", self.generate),
            (post, f"{v1}/generate/extend"): Route("extend", self.extend),
            (post, f"{v1}/generate/upload-cover"): Route("upload_cover", self.upload_cover),
            (post, f"{v1}/generate/upload-extend"): Route("upload_extend", self.upload_extend),
            (post, f"{v1}/generate/add-vocals"): Route("add_vocals", self.add_vocals),
            (post, f"{v1}/generate/add-instrumental"): Route(
                "add_instrumental", self.add_instrumental
            ),
            (get, f"{v1}/generate/record-info"): Route("poll", self.music_record),
            (post, f"{v1}/lyrics"): Route("lyrics", self.lyrics),
            (get, f"{v1}/lyrics/record-info"): Route("poll", self.lyrics_record),
            (post, f"{v1}/generate/get-timestamped-lyrics"): Route(
                "timestamped_lyrics", self.timestamped_lyrics
            ),
            (post, f"{v1}/style/generate"): Route("style", self.style),
            (post, f"{v1}/vocal-removal/generate"): Route("separate", self.separate, NEWER),
            (get, f"{v1}/vocal-removal/record-info"): Route("poll", self.stems_record, NEWER),
            (post, f"{v1}/wav/generate"): Route("wav", self.wav, NEWER),
            (get, f"{v1}/wav/record-info"): Route("poll", self.wav_record, NEWER),
            (post, f"{v1}/mp4/generate"): Route("mp4", self.mp4, NEWER),
            (get, f"{v1}/mp4/record-info"): Route("poll", self.mp4_record, NEWER),
            (post, f"{v1}/suno/cover/generate"): Route("cover", self.cover, NEWER),
            (get, f"{v1}/suno/cover/record-info"): Route("poll", self.cover_record, NEWER),
            (post, f"{v1}/generate/generate-persona"): Route("persona", self.persona, NEWER),
            (post, f"{v1}/generate/replace-section"): Route(
                "replace_section", self.replace_section, NEWER
            ),
            (get, f"{v1}/generate/credit"): Route("credit", self.credit),
            (get, f"{v1}/get-credits"): Route("credit", self.get_credits),
            (post, f"{v1}/suno/recovery"): Route("recovery", self.recovery, NEWER),
            (get, f"{v1}/suno/recovery/record-info"): Route("poll", self.recovery_record, NEWER),
            (post, "/api/file-base64-upload"): Route(
                "upload_base64", uploads.upload_base64, UPLOAD
            ),
            (post, "/api/file-stream-upload"): Route(
                "upload_stream", uploads.upload_stream, UPLOAD
            ),
            (post, "/api/file-url-upload"): Route("upload_url", uploads.upload_url, UPLOAD),
        }

    # -- routing and envelopes -------------------------------------------------------------

    def route(self, method: str, path: str, body: Any) -> Route | None:
        found = self.routes.get((method, path.rstrip("/") or "/"))
        if found is not None and found.op == "separate":
            kind = body.get("type") if isinstance(body, dict) else None
            op = kind if kind in STEM_OPS else "separate_vocal"
            return Route(op, found.handler, found.family)
        return found

    def error(
        self,
        route: Route | None,
        code: int | str,
        msg: str,
        *,
        http_status: int | None = None,
        data: Any = None,
    ) -> Response:
        body: dict[str, Any] = {"code": code, "msg": msg, "data": data}
        if route is not None and route.family == UPLOAD:
            body = {"success": False, **body}
        return Response.json_body(body, http_status or 200, envelope_code=code)

    def not_found(self, method: str, path: str) -> Response:
        return self.error(
            None, 404, f"invalid request method or path: {method} {path}", http_status=404
        )

    def unauthorized(self, route: Route) -> Response:
        return self.error(route, 401, "You do not have access permissions")

    def rate_limited(self, route: Route) -> Response:
        code = 429 if route.family == NEWER else 405
        return self.error(route, code, "rate limit exceeded: too many requests, retry later")

    def server_error(self, route: Route | None) -> Response:
        return self.error(route, 500, "server error", http_status=500)

    @staticmethod
    def ok(data: Any) -> Response:
        return Response.json_body({"code": 200, "msg": "success", "data": data}, envelope_code=200)

    # -- shared pieces ---------------------------------------------------------------------

    def _submit(
        self,
        req: Request,
        op: str,
        family: str,
        params: dict[str, Any],
        data: dict[str, Any] | None = None,
    ) -> Task:
        try:
            task = self.world.create_task(
                req.entry, req.fault, task_id=self.world.new_hex(), op=op, params=params, data=data
            )
        except NoCredits as exc:
            raise ApiError(402 if family == NEWER else 429, str(exc)) from None
        url = params.get("callBackUrl")
        if isinstance(url, str) and self.world.config["callbacks"] is not None:
            stages = sunoapi_callbacks.stages(task)
            req.after.append(lambda: self.courier.schedule(task, url, req.base, stages))
        return task

    def _charge(self, op: str, family: str) -> int:
        try:
            return self.world.charge(op)
        except NoCredits as exc:
            raise ApiError(402 if family == NEWER else 429, str(exc)) from None

    def _add_clips(
        self,
        task: Task,
        *,
        model: str,
        title: str,
        tags: str,
        lyrics: str,
        instrumental: bool,
        duration: float,
    ) -> None:
        world = self.world
        for _ in range(world.config["clips_per_task"]):
            clip = Clip(
                id=world.new_uuid(),
                task_id=task.id,
                title=title,
                tags=tags,
                lyrics=lyrics,
                model=model,
                model_name=MODEL_NAMES.get(model, model),
                duration=round(duration, 2),
                instrumental=instrumental,
                created=task.created,
            )
            world.add_clip(clip)
            for key in (f"audio/{clip.id}.mp3", f"stream/{clip.id}.mp3"):
                world.add_file(key, Resource("mp3", clip.duration))
            world.add_file(f"image/{clip.id}.png", Resource("png"))

    def _finished_clip(self, audio_id: str, task_id: str | None = None, missing: int = 400) -> Clip:
        """A finished clip of a music task (of `task_id`, when given): any clip of a
        successful task, or the first one once the task reports it (FIRST_SUCCESS)."""
        with self.world.lock:
            clip = self.world.clips.get(audio_id)
            task = self.world.tasks.get(clip.task_id) if clip else None
        if clip is None or task is None or task.op not in MUSIC_OPS:
            raise ApiError(missing, f"audioId {audio_id} not found")
        if task_id is not None and clip.task_id != task_id:
            raise ApiError(missing, f"audioId {audio_id} does not belong to task {task_id}")
        self._check_finished(task, first=task.clips[:1] == [clip.id])
        return clip

    def _finished_task(self, task_id: str, missing: int) -> Task:
        task = self.world.task(task_id, MUSIC_OPS)
        if task is None:
            raise ApiError(missing, f"taskId {task_id} not found")
        self._check_finished(task, first=True)
        return task

    def _check_finished(self, task: Task, *, first: bool) -> None:
        """Work on `task` (on its first clip when `first`) may start: it succeeded (and
        the work endpoints' record, `record_lag` behind, knows it), or, unless
        `unfinished_work` is "refuse", it has reached its first stage. A refusal is raised
        before any task is made or any credit taken."""
        now = self.world.now()
        config = self.world.config
        # The work endpoints learn of the task's end `record_lag` after record-info does,
        # or once they have refused `record_lag_refusals` requests that read it.
        succeeded = task.succeeded(now)
        if succeeded:
            with self.world.lock:
                count = config["record_lag_refusals"]
                if now >= task.ends + config["record_lag"] * config["latency_scale"] or \
                        (count is not None and task.lag_refused >= count):
                    return
                task.lag_refused += 1
            answer = config["record_lag_answer"]
            if answer in BARE_REFUSALS:
                raise ApiError(*BARE_REFUSALS[answer])
        # Refused: succeeded, but the record lags; or unfinished on a host that refuses.
        if succeeded or (config["unfinished_work"] == "refuse" and not task.done(now)):
            refusal = config["unfinished_refusal"]
            raise ApiError(refusal["code"], refusal["message"].replace("{task_id}", task.id),
                           http_status=refusal["http_status"])
        if not (first and task.first_ready(now)):
            raise ApiError(400, f"task {task.id} has not finished successfully")

    def _source_duration(self, req: Request, url: str, model: str | None) -> float:
        """Seconds of the audio behind an uploadUrl, checked against the model's limit."""
        if not re.match(r"^https?://[^\s/]+", url):
            raise ApiError(400, "uploadUrl must be an http(s) URL")
        ours, resource = self.world.own_resource(url, req.base)
        if not ours:
            # No network: an outside URL stands for a track of the configured length.
            duration = self.world.config["upload_duration"] or self.world.config["clip_duration"]
        elif resource is None:
            raise ApiError(451, f"failed to fetch the source file {url}")
        else:
            probed = self.world.duration_of(resource)
            if probed is None:
                raise ApiError(400, f"uploadUrl is not a readable audio file: {url}")
            duration = probed
        if model is not None and duration > source_limit(model):
            raise ApiError(
                400,
                f"the source audio lasts {duration:.0f} s; model {model} "
                f"accepts at most {source_limit(model):.0f} s",
            )
        return float(duration)

    def _continuation(self, continue_at: float) -> float:
        extra: float = self.world.config["continuation_duration"]
        whole = (self.world.config["extend_returns"] or "whole") == "whole"
        return continue_at + extra if whole else extra

    def _poll_task(
        self, req: Request, ops: frozenset[str], *, key: str = "taskId", missing: int = 400
    ) -> Task:
        task_id = req.query.get(key)
        if not task_id:
            raise ApiError(400, f"{key} is required")
        task = self.world.task(task_id, ops)
        if task is None:
            raise ApiError(missing, f"{key} {task_id} not found")
        return task

    def _fail(self, task: Task) -> tuple[int, str]:
        assert task.fail is not None
        status = task.fail["status"]
        code = task.fail.get("code") or DEFAULT_FAIL_CODES.get(status, 500)
        return int(code), task.fail.get("message") or f"{status}: generation failed"

    def _times(self, task: Task) -> tuple[int, int | None]:
        now = self.world.now()
        complete = self.world.epoch_ms(task.ends) if task.done(now) else None
        return self.world.epoch_ms(task.created), complete

    def _flag(self, task: Task) -> str:
        """successFlag of the string-flag families (stems, WAV, MP4)."""
        if not task.done(self.world.now()):
            return "PENDING"
        return task.fail["status"] if task.fail else self._success(task)

    @staticmethod
    def _success(task: Task) -> str:
        # The work is done, but the callback to the client failed (REFERENCE 2.22).
        return "CALLBACK_EXCEPTION" if task.callback_failed else "SUCCESS"

    # -- music family ----------------------------------------------------------------------

    def generate(self, req: Request) -> Response:
        body = json_object(req)
        custom = bool(boolean(body, "customMode"))
        instrumental = bool(boolean(body, "instrumental"))
        model = model_field(body)
        callback(body)
        title, tags, lyrics = song_fields(body, custom, instrumental, model)
        optional_fields(body)
        duration = float(self.world.config["clip_duration"])
        if "duration" in body:
            value = body["duration"]
            if isinstance(value, bool) or not isinstance(value, int) or not 10 <= value <= 360:
                raise ApiError(400, "duration must be an integer from 10 to 360")
            if custom and model == "V5_5":
                duration = float(value)
        task = self._submit(req, "generate", CLASSIC, body)
        self._add_clips(
            task,
            model=model,
            title=title,
            tags=tags,
            lyrics=lyrics,
            instrumental=instrumental,
            duration=duration,
        )
        return self.ok({"taskId": task.id})

    def extend(self, req: Request) -> Response:
        body = json_object(req)
        custom = bool(boolean(body, "defaultParamFlag"))
        audio_id = required_string(body, "audioId")
        model = model_field(body)
        callback(body)
        source = self._finished_clip(audio_id)
        if source.model != model:
            raise ApiError(400, f"model must match the source track's model {source.model}")
        instrumental = boolean(body, "instrumental", required=False)
        instrumental = source.instrumental if instrumental is None else instrumental
        if custom:
            style = required_string(body, "style")
            title = required_string(body, "title")
            continue_at = number(body, "continueAt")
            assert continue_at is not None
            if not 0 < continue_at < source.duration:
                raise ApiError(
                    400, f"continueAt must be > 0 and < the source duration {source.duration}"
                )
            prompt = string(body, "prompt", required=not instrumental)
            check_length("prompt", prompt, prompt_limit(model), model)
            check_length("style", style, style_limit(model), model)
            check_length("title", title, title_limit(model), model)
        else:
            style, title, continue_at, prompt = source.tags, source.title, source.duration, ""
        optional_fields(body)
        task = self._submit(req, "extend", CLASSIC, body, data={"parent": audio_id})
        lyrics = "" if instrumental else f"{source.lyrics}\n{prompt or ''}".strip()
        self._add_clips(
            task,
            model=model,
            title=title,
            tags=style,
            lyrics=lyrics,
            instrumental=instrumental,
            duration=self._continuation(continue_at),
        )
        return self.ok({"taskId": task.id})

    def upload_cover(self, req: Request) -> Response:
        body = json_object(req)
        url = required_string(body, "uploadUrl")
        custom = bool(boolean(body, "customMode"))
        instrumental = bool(boolean(body, "instrumental"))
        model = model_field(body)
        callback(body)
        title, tags, lyrics = song_fields(body, custom, instrumental, model)
        optional_fields(body)
        duration = self._source_duration(req, url, model)
        task = self._submit(req, "upload_cover", CLASSIC, body)
        self._add_clips(
            task,
            model=model,
            title=title,
            tags=tags,
            lyrics=lyrics,
            instrumental=instrumental,
            duration=duration,
        )
        return self.ok({"taskId": task.id})

    def upload_extend(self, req: Request) -> Response:
        body = json_object(req)
        url = required_string(body, "uploadUrl")
        custom = bool(boolean(body, "defaultParamFlag"))
        model = model_field(body)
        callback(body)
        instrumental = bool(boolean(body, "instrumental", required=False))
        source = self._source_duration(req, url, model)
        if custom:
            style = required_string(body, "style")
            title = required_string(body, "title")
            continue_at = number(body, "continueAt")
            assert continue_at is not None
            if not 0 < continue_at < source:
                raise ApiError(
                    400, f"continueAt must be > 0 and < the uploaded audio's duration {source}"
                )
            prompt = string(body, "prompt", required=not instrumental)
            check_length("prompt", prompt, prompt_limit(model), model)
            check_length("style", style, style_limit(model), model)
            check_length("title", title, title_limit(model), model)
        else:
            prompt = string(body, "prompt", required=False)
            check_length("prompt", prompt, prompt_limit(model), model)
            name = unquote(urlsplit(url).path.rsplit("/", 1)[-1]).rsplit(".", 1)[0]
            style, title, continue_at = "", content.title_from(name or "upload"), source
        optional_fields(body)
        task = self._submit(req, "upload_extend", CLASSIC, body)
        self._add_clips(
            task,
            model=model,
            title=title,
            tags=style,
            lyrics="" if instrumental else prompt or "",
            instrumental=instrumental,
            duration=self._continuation(continue_at),
        )
        return self.ok({"taskId": task.id})

    def _empty_ok(self) -> bool:
        """An empty negativeTags: given (accept) or missing (refuse)? Undocumented."""
        return bool(self.world.config["empty_required"] == "accept")

    def add_vocals(self, req: Request) -> Response:
        body = json_object(req)
        url = required_string(body, "uploadUrl")
        callback(body)
        prompt = required_string(body, "prompt")
        title = required_string(body, "title")
        required_string(body, "negativeTags", allow_empty=self._empty_ok())
        style = required_string(body, "style")
        model = model_field(body, ADD_MODELS, default="V4_5PLUS")
        check_length("prompt", prompt, prompt_limit(model), model)
        check_length("style", style, style_limit(model), model)
        check_length("title", title, title_limit(model), model)
        optional_fields(body)
        duration = self._source_duration(req, url, model)
        task = self._submit(req, "add_vocals", CLASSIC, body)
        self._add_clips(
            task,
            model=model,
            title=title,
            tags=style,
            lyrics=prompt,
            instrumental=False,
            duration=duration,
        )
        return self.ok({"taskId": task.id})

    def add_instrumental(self, req: Request) -> Response:
        body = json_object(req)
        url = required_string(body, "uploadUrl")
        title = required_string(body, "title")
        negative = required_string(body, "negativeTags", allow_empty=self._empty_ok())
        tags = required_string(body, "tags")
        callback(body)
        model = model_field(body, ADD_MODELS, default="V4_5PLUS")
        check_length("negativeTags", negative, 200)
        check_length("tags", tags, 1000)
        check_length("title", title, title_limit(model), model)
        optional_fields(body)
        duration = self._source_duration(req, url, model)
        task = self._submit(req, "add_instrumental", CLASSIC, body)
        self._add_clips(
            task,
            model=model,
            title=title,
            tags=tags,
            lyrics="",
            instrumental=True,
            duration=duration,
        )
        return self.ok({"taskId": task.id})

    def replace_section(self, req: Request) -> Response:
        body = json_object(req)
        task_id = required_string(body, "taskId")
        audio_id = required_string(body, "audioId")
        prompt = required_string(body, "prompt")
        tags = required_string(body, "tags")
        title = required_string(body, "title")
        start = number(body, "infillStartS")
        end = number(body, "infillEndS")
        assert start is not None
        assert end is not None
        callback(body, required=False)
        string(body, "negativeTags", required=False, allow_empty=True)
        source = self._finished_clip(audio_id, task_id, missing=404)
        if not 0 <= start < end <= source.duration:
            raise ApiError(400, f"need 0 <= infillStartS < infillEndS <= {source.duration}")
        if not 6 <= end - start <= 60 or end - start > source.duration / 2:
            raise ApiError(
                400, "the replaced section must last 6-60 s and at most half of the track"
            )
        check_length("prompt", prompt, prompt_limit(source.model), source.model)
        check_length("tags", tags, style_limit(source.model), source.model)
        check_length("title", title, title_limit(source.model), source.model)
        task = self._submit(req, "replace_section", NEWER, body, data={"parent": audio_id})
        self._add_clips(
            task,
            model=source.model,
            title=title,
            tags=tags,
            lyrics=prompt,
            instrumental=source.instrumental,
            duration=source.duration,
        )
        return self.ok({"taskId": task.id})

    def _music_status(self, task: Task) -> str:
        now = self.world.now()
        if task.done(now):
            return task.fail["status"] if task.fail else self._success(task)
        running = self.world.config["running_status"]
        if running is not None:
            return str(running)  # a host's own word for "running" (the quick start's)
        fraction = task.fraction(now)
        if fraction >= FIRST_AT:
            return "FIRST_SUCCESS"
        return "TEXT_SUCCESS" if fraction >= TEXT_AT else "PENDING"

    def _suno_item(self, base: str, clip: Clip, ready: bool) -> dict[str, Any]:
        world = self.world
        audio = world.url(base, f"audio/{clip.id}.mp3") if ready else ""
        stream = world.url(base, f"stream/{clip.id}.mp3")
        image = world.url(base, f"image/{clip.id}.png")
        created = dt.datetime.fromtimestamp(world.epoch_ms(clip.created) / 1000)
        return {
            "id": clip.id,
            "audioUrl": audio,
            "sourceAudioUrl": audio,
            "streamAudioUrl": stream,
            "sourceStreamAudioUrl": stream,
            "imageUrl": image,
            "sourceImageUrl": image,
            "prompt": clip.lyrics,
            "modelName": clip.model_name,
            "title": clip.title,
            "tags": clip.tags,
            "createTime": created.strftime("%Y-%m-%d %H:%M:%S"),
            "duration": clip.duration if ready else None,
        }

    def music_record(self, req: Request) -> Response:
        task = self._poll_task(req, MUSIC_OPS)
        status = self._music_status(task)
        with self.world.lock:
            clips = [self.world.clips[c] for c in task.clips]
        response = None
        # CALLBACK_EXCEPTION: only the callback failed; the songs exist (REFERENCE 2.22).
        if status in ("TEXT_SUCCESS", "FIRST_SUCCESS", "SUCCESS", "CALLBACK_EXCEPTION"):
            done = status in ("SUCCESS", "CALLBACK_EXCEPTION")
            items = [
                self._suno_item(req.base, clip, done or (status == "FIRST_SUCCESS" and i == 0))
                for i, clip in enumerate(clips)
            ]
            response = {"taskId": task.id, "sunoData": items}
            if self.world.config["record_style"] == "apibox":
                # api.box's example: response.data[] with the callbacks' snake_case items.
                response = {
                    "taskId": task.id,
                    "data": [
                        {sunoapi_callbacks.SNAKE.get(k, k): v for k, v in item.items()}
                        for item in items
                    ],
                }
        failed = task.fail is not None and task.done(self.world.now())
        code, message = self._fail(task) if failed else (None, None)
        data: dict[str, Any] = {"taskId": task.id}
        if task.op in ("extend", "replace_section"):
            data["parentMusicId"] = task.data.get("parent", "")
        data.update(
            {
                "param": json.dumps(task.params, ensure_ascii=False),
                "response": response,
                "status": status,
                "type": task.op.upper(),
                "operationType": task.op,
                "errorCode": code,
                "errorMessage": message,
            }
        )
        return self.ok(data)

    # -- lyrics, timestamps, style ---------------------------------------------------------

    def lyrics(self, req: Request) -> Response:
        body = json_object(req)
        prompt = required_string(body, "prompt")
        callback(body)
        words = len(prompt.split())
        if words > LYRICS_PROMPT_WORDS:
            raise ApiError(
                413, f"prompt is too long: {words} words, the limit is {LYRICS_PROMPT_WORDS}"
            )
        variants = [
            {"title": content.title_from(prompt), "text": content.lyrics_from(prompt, i)}
            for i in range(self.world.config["lyrics_variants"])
        ]
        task = self._submit(req, "lyrics", CLASSIC, body, data={"variants": variants})
        return self.ok({"taskId": task.id})

    def lyrics_record(self, req: Request) -> Response:
        task = self._poll_task(req, frozenset({"lyrics"}))
        now = self.world.now()
        status = "PENDING"
        code: int | None = None
        message: str | None = None
        response = None
        if task.done(now) and task.fail:
            status = task.fail["status"]
            code, message = self._fail(task)
        elif task.done(now):
            status = self._success(task)
            response = {
                "taskId": task.id,
                "data": [
                    {**v, "status": "complete", "errorMessage": ""} for v in task.data["variants"]
                ],
            }
        return self.ok(
            {
                "taskId": task.id,
                "param": json.dumps(task.params, ensure_ascii=False),
                "response": response,
                "status": status,
                "type": "LYRICS",
                "errorCode": code,
                "errorMessage": message,
            }
        )

    def timestamped_lyrics(self, req: Request) -> Response:
        body = json_object(req)
        task_id = required_string(body, "taskId")
        clip = self._finished_clip(required_string(body, "audioId"), task_id)
        self._charge("timestamped_lyrics", CLASSIC)
        words = [] if clip.instrumental else content.aligned_words(
            clip.lyrics, self.world.config["aligned_words"])
        # Spread the words evenly over the middle 90 % of the clip.
        step = clip.duration * 0.9 / max(len(words), 1)
        aligned = [
            {
                "word": word,
                "success": True,
                "startS": round(0.05 * clip.duration + i * step, 2),
                "endS": round(0.05 * clip.duration + (i + 0.9) * step, 2),
                "palign": 0,
            }
            for i, word in enumerate(words)
        ]
        waveform = [round(abs(math.sin(i / 3)), 3) for i in range(100)]
        return self.ok(
            {
                "alignedWords": aligned,
                "waveformData": waveform,
                "hootCer": 0.0 if not words else 0.05,
                "isStreamed": False,
            }
        )

    def style(self, req: Request) -> Response:
        body = json_object(req)
        text = required_string(body, "content")
        task_id = self.world.new_hex()
        self.world.annotate(req.entry, task_id=task_id)  # synchronous: no task to poll
        created = self.world.epoch_ms(self.world.now())
        if req.fault and "fail_task" in req.fault:
            return self.ok(
                {
                    "taskId": task_id,
                    "param": text,
                    "result": None,
                    "creditsConsumed": 0,
                    "creditsRemaining": self.world.balance(),
                    "successFlag": "2",
                    "errorCode": req.fault.get("code") or 500,
                    "errorMessage": req.fault.get("message") or req.fault["fail_task"],
                    "createTime": created,
                }
            )
        price = self._charge("style", CLASSIC)
        result = f"{text}, {content.tags_from(text)}, polished production, wide stereo image"
        return self.ok(
            {
                "taskId": task_id,
                "param": text,
                "result": result,
                "creditsConsumed": price,
                "creditsRemaining": self.world.balance(),
                "successFlag": "1",
                "errorCode": None,
                "errorMessage": "",
                "createTime": created,
            }
        )

    # -- derived products: stems, WAV, MP4, cover art, persona -----------------------------

    def separate(self, req: Request) -> Response:
        body = json_object(req)
        kind = body.get("type", "separate_vocal")
        if kind not in STEM_OPS:
            raise ApiError(400, f"type must be one of {', '.join(sorted(STEM_OPS))}")
        callback(body)
        if body.get("audioUrl") and not body.get("taskId"):
            url = required_string(body, "audioUrl")
            duration, audio_id = self._source_duration(req, url, None), ""
        else:
            task_id = required_string(body, "taskId")
            audio_id = required_string(body, "audioId")
            duration = self._finished_clip(audio_id, task_id, missing=404).duration
        if kind == "separate_vocal":
            stems = SEPARATE_KEYS
        elif kind == "split_stem":
            stems = SPLIT_KEYS
        else:
            stem = body.get("stemName", "vocal")
            if stem not in SPLIT_KEYS:
                raise ApiError(400, f"stemName must be one of {', '.join(SPLIT_KEYS)}")
            stems = {stem: SPLIT_KEYS[stem]}
        task = self._submit(
            req, kind, NEWER, body, data={"audio_id": audio_id, "stems": dict(stems)}
        )
        for stem in stems:
            self.world.add_file(f"stems/{task.id}/{stem}.mp3", Resource("mp3", duration))
        return self.ok({"taskId": task.id})

    def stems_record(self, req: Request) -> Response:
        task = self._poll_task(req, STEM_OPS, missing=404)
        created, complete = self._times(task)
        flag = self._flag(task)
        response = None
        if flag in DONE_FLAGS:
            response = dict.fromkeys(ALL_STEM_KEYS)
            for stem, key in task.data["stems"].items():
                response[key] = self.world.url(req.base, f"stems/{task.id}/{stem}.mp3")
        code, message = self._fail(task) if task.fail and flag != "PENDING" else (None, None)
        audio_id = task.data["audio_id"]
        return self.ok(
            {
                "taskId": task.id,
                "musicId": audio_id,
                "callbackUrl": task.params.get("callBackUrl"),
                "audioId": audio_id,
                "completeTime": complete,
                "response": response,
                "successFlag": flag,
                "createTime": created,
                "errorCode": code,
                "errorMessage": message,
            }
        )

    def _once(
        self, req: Request, op: str, owner: str, params: dict[str, Any], data: dict[str, Any]
    ) -> Task:
        """Create the one `op` record for `owner`; 409 with the existing taskId otherwise.

        A failed record does not count: asking again is the way to retry it.
        """
        with self.world.lock:
            existing = self.world.task(self.world.singletons.get((op, owner)))
            now = self.world.now()
            if existing is not None and not (existing.done(now) and existing.fail):
                raise ApiError(
                    409, f"a {op} record already exists for {owner}", data={"taskId": existing.id}
                )
            task = self._submit(req, op, NEWER, params, data=data)
            self.world.singletons[(op, owner)] = task.id
            return task

    def wav(self, req: Request) -> Response:
        body = json_object(req)
        task_id = required_string(body, "taskId")
        audio_id = required_string(body, "audioId")
        callback(body)
        clip = self._finished_clip(audio_id, task_id, missing=404)
        task = self._once(req, "wav", audio_id, body, {"audio_id": audio_id})
        self.world.add_file(f"wav/{task.id}.wav", Resource("wav", clip.duration))
        return self.ok({"taskId": task.id})

    def wav_record(self, req: Request) -> Response:
        task = self._poll_task(req, frozenset({"wav"}), missing=404)
        created, complete = self._times(task)
        flag = self._flag(task)
        response = None
        if flag in DONE_FLAGS:
            response = {"audioWavUrl": self.world.url(req.base, f"wav/{task.id}.wav")}
        code, message = self._fail(task) if task.fail and flag != "PENDING" else (None, None)
        return self.ok(
            {
                "taskId": task.id,
                "musicId": task.data["audio_id"],
                "callbackUrl": task.params.get("callBackUrl"),
                "completeTime": complete,
                "response": response,
                "successFlag": flag,
                "createTime": created,
                "errorCode": code,
                "errorMessage": message,
            }
        )

    def mp4(self, req: Request) -> Response:
        body = json_object(req)
        task_id = required_string(body, "taskId")
        audio_id = required_string(body, "audioId")
        callback(body)
        for key in ("author", "domainName"):
            check_length(key, string(body, key, required=False, allow_empty=True), 50)
        self._finished_clip(audio_id, task_id, missing=404)
        task = self._once(req, "mp4", audio_id, body, {"audio_id": audio_id})
        self.world.add_file(f"video/{task.id}.mp4", Resource("mp4"))
        return self.ok({"taskId": task.id})

    def mp4_record(self, req: Request) -> Response:
        task = self._poll_task(req, frozenset({"mp4"}), missing=404)
        created, complete = self._times(task)
        flag = self._flag(task)
        response = None
        if flag in DONE_FLAGS:
            response = {"videoUrl": self.world.url(req.base, f"video/{task.id}.mp4")}
        code, message = self._fail(task) if task.fail and flag != "PENDING" else (None, None)
        audio_id = task.data["audio_id"]
        return self.ok(
            {
                "taskId": task.id,
                "musicId": audio_id,
                "callbackUrl": task.params.get("callBackUrl"),
                "audioId": audio_id,
                "completeTime": complete,
                "response": response,
                "successFlag": flag,
                "createTime": created,
                "errorCode": code,
                "errorMessage": message,
            }
        )

    def cover(self, req: Request) -> Response:
        body = json_object(req)
        task_id = required_string(body, "taskId")
        callback(body)
        self._finished_task(task_id, missing=404)
        task = self._once(req, "cover", task_id, body, {"parent": task_id})
        for i in range(2):
            self.world.add_file(f"covers/{task.id}/{i}.png", Resource("png"))
        return self.ok({"taskId": task.id})

    def cover_record(self, req: Request) -> Response:
        task = self._poll_task(req, frozenset({"cover"}), missing=404)
        created, complete = self._times(task)
        now = self.world.now()
        response = None
        code: int | None = None
        message: str | None = None
        if task.done(now) and task.fail:
            flag = 3
            code, message = self._fail(task)
        elif task.done(now):
            flag = 1
            response = {
                "images": [self.world.url(req.base, f"covers/{task.id}/{i}.png") for i in range(2)]
            }
        else:
            flag = 2 if task.fraction(now) >= 0.5 else 0
        return self.ok(
            {
                "taskId": task.id,
                "parentTaskId": task.data["parent"],
                "callbackUrl": task.params.get("callBackUrl"),
                "completeTime": complete,
                "response": response,
                "successFlag": flag,
                "createTime": created,
                "errorCode": code,
                "errorMessage": message,
            }
        )

    def persona(self, req: Request) -> Response:
        body = json_object(req)
        task_id = required_string(body, "taskId")
        audio_id = required_string(body, "audioId")
        name = required_string(body, "name")
        description = required_string(body, "description")
        self._finished_clip(audio_id, task_id, missing=404)
        with self.world.lock:
            existing = self.world.singletons.get(("persona", audio_id))
            if existing is not None:
                raise ApiError(
                    409, f"a persona already exists for {audio_id}", data={"personaId": existing}
                )
            self._charge("persona", NEWER)
            persona_id = self.world.new_hex()
            self.world.singletons[("persona", audio_id)] = persona_id
        return self.ok({"personaId": persona_id, "name": name, "description": description})

    # -- credits and recovery --------------------------------------------------------------

    def credit(self, req: Request) -> Response:
        if self.world.config["credits_endpoint"] in ("get-credits", "none"):
            return self.not_found(req.method, req.path)
        return self.ok(self.world.balance())

    def get_credits(self, req: Request) -> Response:
        """The quick start's sample endpoint: `data.credits` (REFERENCE 2.15)."""
        if self.world.config["credits_endpoint"] in ("credit", "none"):
            return self.not_found(req.method, req.path)
        return self.ok({"credits": self.world.balance()})

    def recovery(self, req: Request) -> Response:
        body = json_object(req)
        source_id = required_string(body, "sunoTaskId")
        callback(body)
        if self.world.task(source_id, MUSIC_OPS) is None:
            raise ApiError(404, f"sunoTaskId {source_id} not found")
        task = self._submit(req, "recovery", NEWER, body, data={"source": source_id})
        return self.ok({"task_id": task.id})

    def recovery_record(self, req: Request) -> Response:
        task_id = req.query.get("task_id")
        if not task_id:
            hint = " (snake_case: task_id, not taskId)" if "taskId" in req.query else ""
            raise ApiError(400, f"task_id is required{hint}")
        task = self.world.task(task_id, frozenset({"recovery"}))
        if task is None:
            raise ApiError(404, f"task_id {task_id} not found")
        now = self.world.now()
        if not task.done(now):
            return Response.json_body(
                {"code": 201, "task_id": task.id, "msg": "running", "data": None}, envelope_code=201
            )
        source = self.world.task(task.data["source"], MUSIC_OPS)
        assert source is not None
        error = None
        if task.fail:
            error = task.fail["status"] if task.fail["status"] in RECOVERY_ERRORS else "clip_error"
        elif not source.succeeded(now):
            error = "clip_not_complete"
        items = []
        with self.world.lock:
            clips = [self.world.clips[c] for c in source.clips]
        for clip in clips:
            key = f"recovered/{clip.id}.m4a"
            if error is None:
                self.world.add_file(key, Resource("m4a", clip.duration))
            items.append(
                {
                    "id": clip.id,
                    "title": clip.title,
                    "audio_url": self.world.url(req.base, key) if error is None else None,
                    "status": "failed" if error else "success",
                    "error": error,
                }
            )
        code, msg = (500, "all tracks failed") if error else (200, "success")
        return Response.json_body(
            {"code": code, "task_id": task.id, "msg": msg, "data": items}, envelope_code=code
        )
