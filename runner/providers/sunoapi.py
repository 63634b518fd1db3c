"""The sunoapi.org provider (also api.box and hosts serving the same "v1" API).

Shapes and codes follow shared/api/REFERENCE.md section 2. What this module must get right:

- Each operation polls its own details endpoint; its answer is read, without I/O, by
  sunoapi_answers.py (each family's status words, First, Streams, TaskFailed).
- Two code tables (1.1, 1.2): on the classic endpoints (generate, extend, upload-*, add-*,
  lyrics, style) 429 means "insufficient credits"; on the newer ones (WAV, MP4, cover art,
  vocal removal, recovery) 402 does, and 429 is a rate limit.
- 409 on WAV, MP4 or cover art means the record already exists: poll the existing task
  instead of failing (and instead of paying again).
- Local files given as `audio` are uploaded once to the upload host and the URL is cached
  by content (uploads live three days).
- `refresh` re-reads the details for fresh URLs; when those are dead too, it asks the
  recovery endpoint for new links to the same songs. Neither is a paid generation.
- A callback (`sunoflow run --listen`) is read by the same readers as a poll: it is first
  rewritten into the record-info shape (sunoapi_callback.py).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx

from runner import paths
from runner.errors import (
    AuthError,
    CreditsError,
    StepError,
    TransientError,
)
from runner.pacing import Clock
from runner.providers import answers, codes, sunoapi_answers, sunoapi_callback
from runner.providers.base import (
    Fetch,
    First,
    Op,
    Produced,
    Result,
    Streams,
    Submitted,
    Uploads,
)
from runner.providers.http import (
    GATEWAY,
    PLACEHOLDER_CALLBACK,
    Answer,
    ApiClient,
    files_client,
    http_failure,
    lost,
    suffix,
)
from runner.recipe.model import Provider as ProviderConfig
from runner.steps.models import DEFAULT_MODEL, custom_mode, is_local_task
from runner.studio.textgen import lrc

V1 = "/api/v1"
MUSIC_INFO = f"{V1}/generate/record-info"
CLASSIC, NEWER = "classic", "newer"  # which code table an endpoint answers with
CREDIT_PATHS = (f"{V1}/generate/credit", f"{V1}/get-credits")

UPLOAD_PATH = "sunoflow"
UPLOAD_MAX_AGE = 2.5 * 24 * 3600  # the host deletes uploads after 3 days; keep a margin
RECOVERY_POLL = 2.0  # seconds between recovery polls (the docs recommend ~2 s)
RECOVERY_MAX_POLLS = 90

# snake_case inputs -> the API's camelCase fields, for the optional music fields.
OPTIONAL = {
    "negative_tags": "negativeTags", "vocal_gender": "vocalGender",
    "style_weight": "styleWeight", "weirdness_constraint": "weirdnessConstraint",
    "audio_weight": "audioWeight", "persona_id": "personaId", "persona_model": "personaModel",
}


@dataclass(frozen=True)
class Endpoint:
    submit: str
    details: str | None  # None: the answer to the submit is the result
    family: str
    reader: str  # how the details report status: music | lyrics | flag | cover
    existing_ok: bool = False  # 409 names an existing record to poll (WAV, MP4, cover art)


ENDPOINTS: dict[str, Endpoint] = {
    "generate": Endpoint(f"{V1}/generate", MUSIC_INFO, CLASSIC, "music"),
    "extend": Endpoint(f"{V1}/generate/extend", MUSIC_INFO, CLASSIC, "music"),
    "upload_cover": Endpoint(f"{V1}/generate/upload-cover", MUSIC_INFO, CLASSIC, "music"),
    "upload_extend": Endpoint(f"{V1}/generate/upload-extend", MUSIC_INFO, CLASSIC, "music"),
    "add_vocals": Endpoint(f"{V1}/generate/add-vocals", MUSIC_INFO, CLASSIC, "music"),
    "add_instrumental": Endpoint(f"{V1}/generate/add-instrumental", MUSIC_INFO, CLASSIC,
                                 "music"),
    "lyrics": Endpoint(f"{V1}/lyrics", f"{V1}/lyrics/record-info", CLASSIC, "lyrics"),
    "timestamped_lyrics": Endpoint(f"{V1}/generate/get-timestamped-lyrics", None, CLASSIC,
                                   "sync"),
    "boost_style": Endpoint(f"{V1}/style/generate", None, CLASSIC, "sync"),
    "separate": Endpoint(f"{V1}/vocal-removal/generate", f"{V1}/vocal-removal/record-info",
                         NEWER, "flag"),
    "convert": Endpoint(f"{V1}/wav/generate", f"{V1}/wav/record-info", NEWER, "flag",
                        existing_ok=True),
    "video": Endpoint(f"{V1}/mp4/generate", f"{V1}/mp4/record-info", NEWER, "flag",
                      existing_ok=True),
    "cover": Endpoint(f"{V1}/suno/cover/generate", f"{V1}/suno/cover/record-info", NEWER,
                      "cover", existing_ok=True),
}


class SunoApiProvider:
    kind = "sunoapi"
    reports_first = True  # record-info's FIRST_SUCCESS (REFERENCE 2.7, 2.22)

    def __init__(self, config: ProviderConfig, *, env: dict[str, str],
                 uploads: Uploads | None = None, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or Clock()
        self.uploads = uploads  # where uploaded files' URLs outlive the run (none: no cache)
        self.api = ApiClient(config, env=env, clock=self.clock)
        # Never the API host's by default: uploads carry the key, and only the upload host
        # the recipe names or runner.recipe.load.upload_host knows may receive it.
        self.upload_base = (config.upload_base_url or "").rstrip("/")
        self.callback = config.callback_url or PLACEHOLDER_CALLBACK
        self.recovery_callback = self.callback
        self._files = files_client(config)
        self._uploads: dict[str, dict[str, Any]] | None = None
        self._upload_locks: dict[str, anyio.Lock] = {}
        self.wall = time.time  # upload ages are wall-clock: they outlive the process
        self._credit_path: str | None = None

    @property
    def files(self) -> httpx.AsyncClient:
        """Result files live on CDNs: fetched without our key and outside the rate limit."""
        return self._files.get()

    def __repr__(self) -> str:
        return f"SunoApiProvider({self.config.base_url!r})"

    # --- the Provider protocol -------------------------------------------------------

    @answers.guard_submit
    async def submit(self, op: Op) -> Submitted:
        ep = ENDPOINTS.get(op.type)
        if ep is None:
            raise StepError(f"sunoapi does not perform '{op.type}' remotely", step=op.step)
        body = await getattr(self, f"_body_{op.type}")(op)
        ok = (200, 409) if ep.existing_ok else (200,)
        env = await self._call(op.step, "POST", ep.submit, family=ep.family, submit=True,
                               json=body, ok=ok, existing=ep.existing_ok)
        data = env.get("data")
        if ep.details is None:
            return Submitted(None, self._sync_result(op, data))
        task_id = data.get("taskId") if isinstance(data, dict) else None
        if not task_id:
            # It said yes without naming the task: a task may exist that we cannot poll.
            raise lost(f"POST {ep.submit}", "success without a taskId", step=op.step,
                       submit=True)
        return Submitted(str(task_id))

    @answers.guard_poll
    async def poll(self, op: Op, task_id: str) -> Result | First | Streams | None:
        ep = ENDPOINTS.get(op.type)
        if ep is None or ep.details is None:
            raise StepError(f"'{op.type}' has no task to poll", step=op.step)
        env = await self._call(op.step, "GET", ep.details, family=ep.family, submit=False,
                               params={"taskId": task_id})
        data = env.get("data")
        if not isinstance(data, dict):
            raise TransientError(f"GET {ep.details}: no data for task {task_id}", step=op.step)
        return sunoapi_answers.READERS[ep.reader](op, task_id, data)

    @answers.guard_poll
    async def refresh(self, op: Op, task_id: str) -> Result | None:
        ep = ENDPOINTS.get(op.type)
        if ep is None or ep.details is None:
            return None
        fresh = await self.poll(op, task_id)
        if not isinstance(fresh, Result):
            return None  # not finished (a First is not the whole result)
        if ep.reader != "music":
            return fresh
        dead = await self._dead(fresh.outputs)
        if not dead:
            return fresh
        return await self._recover(op, task_id, fresh, dead)

    # --- callbacks (runner.providers.CallbackProvider) -----------------------------------

    def use_callback_url(self, url: str) -> None:
        """Send `url` as callBackUrl on every submit from now on (the run's listener).
        Its last segment is the run's secret token: an answer that quotes it (an error
        message echoing the request) is redacted like the key."""
        self.callback = url
        # Recovery tasks are polled here, never waited for by the engine: their callbacks
        # would only reach the listener as unknown tasks.
        self.recovery_callback = PLACEHOLDER_CALLBACK
        token = url.rstrip("/").rsplit("/", 1)[-1]
        redact = self.api.redact
        self.api.redact = lambda text: redact(text).replace(token, "[redacted]")

    def callback_task_id(self, body: Any) -> str | None:
        return sunoapi_callback.task_id(body)

    @answers.guard_callback
    def from_callback(self, op: Op, task_id: str, body: Any
                      ) -> Result | First | Streams | None:
        """A callback's result, read exactly as a poll answer with the same content would
        be: None while the task runs (the text stage, or a body with nothing usable), a
        First for a music task's first stage, a Result when complete; TaskFailed when it
        reports a failure."""
        got = self._callback_details(op, task_id, body)
        if got is None:
            return None
        reader, data = got
        return sunoapi_answers.READERS[reader](op, task_id, data)

    def _callback_details(self, op: Op, task_id: str, body: Any
                          ) -> tuple[str, dict[str, Any]] | None:
        """(reader, the record-info `data` a callback stands for), or None when it says
        nothing usable for this operation."""
        ep = ENDPOINTS.get(op.type)
        if ep is None or ep.details is None:
            return None
        data = sunoapi_callback.details(ep.reader, op.type, body)
        if not data:
            return None
        data["taskId"] = task_id
        return ep.reader, data

    async def credits(self) -> float | None:
        """The balance: from `/generate/credit` (the reference page), else from the quick
        start's `/get-credits` where a host serves only that (REFERENCE 2.15, 5); None when
        it serves neither. The path that answered is used for the rest of the run."""
        for path in [self._credit_path] if self._credit_path else CREDIT_PATHS:
            try:
                env = await self._call(None, "GET", path, family=CLASSIC, submit=False)
            except StepError as exc:
                if exc.code in (404, 405):
                    continue  # this host does not serve that endpoint: try the other
                raise
            self._credit_path = path
            return sunoapi_answers.balance(env.get("data"))
        return None

    async def aclose(self) -> None:
        await self.api.aclose()
        await self._files.aclose()

    # --- requests and the code tables ------------------------------------------------

    async def _call(self, step: str | None, method: str, path: str, *, family: str,
                    submit: bool, ok: tuple[int, ...] = (200,), existing: bool = False,
                    **kw: Any) -> dict[str, Any]:
        answer = await self.api.send(method, path, step=step, submit=submit, **kw)
        env = answer.body if isinstance(answer.body, dict) and "code" in answer.body else None
        if env is None or answer.status in GATEWAY:
            failure = http_failure(answer, step=step, submit=submit,
                                   key_env=self.config.api_key_env)
            raise failure or lost(answer.where, "an answer that is not the service's JSON",
                                  step=step, submit=submit)
        try:
            code = int(env["code"])
        except (TypeError, ValueError):
            raise lost(answer.where, f"unreadable code {env['code']!r}", step=step,
                       submit=submit) from None
        if code in ok:
            if code == 409 and existing:
                return self._existing(answer, env, step)
            return env
        if code == 400 and existing and self._existing_id(env):
            # Cover art answers a repeat with 400 and the existing task (REFERENCE 2.16).
            return self._existing(answer, env, step)
        raise self._code_error(answer, code, str(env.get("msg") or ""), step=step,
                               family=family)

    def _existing_id(self, env: dict[str, Any]) -> str | None:
        data = env.get("data")
        tid = data.get("taskId") or data.get("task_id") if isinstance(data, dict) else None
        return str(tid) if tid else None

    def _existing(self, answer: Answer, env: dict[str, Any], step: str | None
                  ) -> dict[str, Any]:
        """409: the record exists already. Use that task (it was paid for once)."""
        tid = self._existing_id(env)
        if tid is None:
            # Sending it again gets the same answer: the engine never does (early.EXISTS).
            raise StepError(f"{answer.where}: the service says the record already exists "
                            f"({env.get('msg')}) but does not name its task, so it cannot be "
                            "polled, and sending the request again would get the same answer "
                            "(this one made no task: nothing was paid); an earlier request "
                            "made it: find its result in the service's dashboard", step=step,
                            code=int(env["code"]))
        return {"code": 200, "msg": "existing", "data": {"taskId": tid}}

    def _code_error(self, answer: Answer, code: int, msg: str, *, step: str | None,
                    family: str) -> Exception:
        where, detail = answer.where, f"{code}: {msg}" if msg else str(code)
        meaning = codes.envelope(code, newer=family == NEWER)  # the one table
        if code == 401:
            return AuthError(f"{where}: the service refused the key ({detail}); check the "
                             f"key in the environment variable {self.config.api_key_env}",
                             step=step, code=code)
        if meaning.outcome == codes.STOP:
            return CreditsError(f"{where}: insufficient credits ({detail}); top up your "
                                "sunoapi account, then run again (finished steps are not "
                                "paid for twice)", step=step, code=code)
        if meaning.outcome == codes.NOT_CREATED:
            # The service's own answer that it created no task (DESIGN section 4): free to
            # send again.
            what = {405: "rate limited", 429: "rate limited", 430: "rate limited",
                    455: "the service is under maintenance"}.get(code, "service error")
            return TransientError(f"{where}: {what} ({detail})", step=step, code=code,
                                  retry_after=answer.retry_after)
        return StepError(f"{where}: the service rejected the request ({detail})", step=step,
                         code=code)

    # --- request bodies ----------------------------------------------------------------

    def _optional(self, op: Op, body: dict[str, Any]) -> dict[str, Any]:
        for name, field in OPTIONAL.items():
            value = op.inputs.get(name)
            if value is not None and value != "":
                body[field] = value
        return body

    def _track(self, op: Op, what: str) -> dict[str, Any]:
        """The `audio` input as a track the service made (it needs the track's ids)."""
        audio = op.inputs.get("audio")
        if not isinstance(audio, dict) or not audio.get("id") or not audio.get("task_id"):
            raise StepError(f"{what} needs a track made by the service as 'audio' (a track "
                            "object with id and task_id)", step=op.step)
        if is_local_task(audio["task_id"]):
            hint = "use upload_extend for audio made elsewhere" if what == "extend" else \
                "give it a track from a step the service ran (generate, extend, ...)"
            raise StepError(f"{what} needs a track made by the service, and this one was "
                            f"made on this machine; {hint}", step=op.step)
        return audio

    async def _body_generate(self, op: Op) -> dict[str, Any]:
        i = op.inputs
        custom = custom_mode(i)
        body: dict[str, Any] = {"customMode": custom, "instrumental": bool(i.get("instrumental")),
                                "model": i.get("model") or DEFAULT_MODEL,
                                "callBackUrl": self.callback}
        if i.get("prompt"):
            body["prompt"] = i["prompt"]
        if custom:
            # Custom mode needs style and title; the service rejects an empty one.
            for name in ("style", "title"):
                if i.get(name):
                    body[name] = i[name]
        return self._optional(op, body)

    async def _body_upload_cover(self, op: Op) -> dict[str, Any]:
        body = await self._body_generate(op)
        return {"uploadUrl": await self._upload_url(op), **body}

    def _extend_fields(self, op: Op, source: dict[str, Any]) -> dict[str, Any]:
        i = op.inputs
        custom = any(i.get(k) not in (None, "") for k in ("continue_at", "prompt", "style",
                                                          "title"))
        body: dict[str, Any] = {"defaultParamFlag": custom,
                                "model": i.get("model") or source.get("model") or DEFAULT_MODEL,
                                "callBackUrl": self.callback}
        if custom:
            # defaultParamFlag true makes style, title and continueAt required; style and
            # title default to the source track's.
            style, title = i.get("style") or source.get("tags"), i.get("title") or \
                source.get("title")
            missing = [n for n, v in (("continue_at", i.get("continue_at")), ("style", style),
                                      ("title", title)) if v in (None, "")]
            if missing:
                raise StepError(f"{op.type} with custom fields also needs "
                                f"{', '.join(missing)}", step=op.step)
            body.update(continueAt=i["continue_at"], style=style, title=title)
            if i.get("prompt") and not i.get("instrumental"):
                body["prompt"] = i["prompt"]
        if i.get("instrumental") is not None:
            body["instrumental"] = bool(i["instrumental"])
        self._optional(op, body)
        if body.get("instrumental"):
            body.pop("vocalGender", None)  # not allowed with instrumental (REFERENCE 2.2)
        return body

    async def _body_extend(self, op: Op) -> dict[str, Any]:
        source = self._track(op, "extend")
        return {"audioId": source["id"], **self._extend_fields(op, source)}

    async def _body_upload_extend(self, op: Op) -> dict[str, Any]:
        audio = op.inputs.get("audio")
        source = audio if isinstance(audio, dict) else {}
        body = self._extend_fields(op, source)
        return {"uploadUrl": await self._upload_url(op), **body}

    async def _body_add_vocals(self, op: Op) -> dict[str, Any]:
        i = op.inputs
        body: dict[str, Any] = {"uploadUrl": await self._upload_url(op),
                                "prompt": i.get("prompt") or "", "title": i.get("title") or "",
                                "style": i.get("style") or "",
                                "negativeTags": i.get("negative_tags") or "",
                                "callBackUrl": self.callback}
        if i.get("model"):
            body["model"] = i["model"]
        return self._optional(op, body)

    async def _body_add_instrumental(self, op: Op) -> dict[str, Any]:
        i = op.inputs
        # This endpoint takes `tags`, not `style` (REFERENCE 2.5).
        body: dict[str, Any] = {"uploadUrl": await self._upload_url(op),
                                "tags": i.get("tags") or "", "title": i.get("title") or "",
                                "negativeTags": i.get("negative_tags") or "",
                                "callBackUrl": self.callback}
        if i.get("model"):
            body["model"] = i["model"]
        return self._optional(op, body)

    async def _body_cover(self, op: Op) -> dict[str, Any]:
        return {"taskId": self._track(op, "cover")["task_id"], "callBackUrl": self.callback}

    async def _body_lyrics(self, op: Op) -> dict[str, Any]:
        return {"prompt": op.inputs.get("prompt") or "", "callBackUrl": self.callback}

    async def _body_timestamped_lyrics(self, op: Op) -> dict[str, Any]:
        track = self._track(op, "timestamped_lyrics")
        return {"taskId": track["task_id"], "audioId": track["id"]}

    async def _body_boost_style(self, op: Op) -> dict[str, Any]:
        return {"content": op.inputs.get("content") or ""}

    async def _body_separate(self, op: Op) -> dict[str, Any]:
        track = self._track(op, "separate")
        return {"taskId": track["task_id"], "audioId": track["id"],
                "type": op.inputs.get("type") or "separate_vocal", "callBackUrl": self.callback}

    async def _body_convert(self, op: Op) -> dict[str, Any]:
        if (op.inputs.get("format") or "wav") != "wav":
            raise StepError("the service converts to WAV only; other formats are made "
                            "locally", step=op.step)
        track = self._track(op, "convert")
        return {"taskId": track["task_id"], "audioId": track["id"], "callBackUrl": self.callback}

    async def _body_video(self, op: Op) -> dict[str, Any]:
        track = self._track(op, "video")
        body = {"taskId": track["task_id"], "audioId": track["id"], "callBackUrl": self.callback}
        for name, field in (("author", "author"), ("domain_name", "domainName")):
            if op.inputs.get(name):
                body[field] = op.inputs[name]
        return body

    # --- results -------------------------------------------------------------------------

    def _sync_result(self, op: Op, data: Any) -> Result:
        if not isinstance(data, dict):
            raise StepError(f"the service answered {op.type} without data", step=op.step)
        if op.type == "boost_style":
            flag = str(data.get("successFlag") or "")
            if data.get("result"):
                credits = data.get("creditsConsumed")
                return Result({"text": str(data["result"])},
                              credits=float(credits) if isinstance(credits, (int, float))
                              else None)
            if flag == "2":
                raise sunoapi_answers.fail(op, str(data.get("taskId") or "?"),
                                           "style generation failed", data)
            raise StepError("the service returned no style text (successFlag "
                            f"{flag or 'missing'})", step=op.step)
        aligned = [w for w in data.get("alignedWords") or [] if isinstance(w, dict)]
        words: list[dict[str, Any]] = [
            {"word": str(w.get("word") or ""), "start": float(w.get("startS") or 0.0),
             "end": float(w.get("endS") or 0.0)} for w in aligned]
        path = op.workdir / "lyrics.lrc"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(lrc(words), encoding="utf-8")
        return Result({"words": [{**w, "word": " ".join(w["word"].split())} for w in words
                                 if w["word"].strip()], "lrc": Produced(path)})

    # --- uploads ---------------------------------------------------------------------------

    async def _upload_url(self, op: Op) -> str:
        """A URL the service can fetch for the `audio` input: a track's stored file or a
        local path is uploaded (once per content); a URL is passed through."""
        audio = op.inputs.get("audio")
        if isinstance(audio, dict):
            file = audio.get("file")
            if isinstance(file, str) and file and \
                    await anyio.Path(path := op.local_file(file)).is_file():
                return await self._upload(op, path)
            if audio.get("audio_url"):
                return str(audio["audio_url"])
            raise StepError("the audio track has neither a file nor a URL", step=op.step)
        if isinstance(audio, str) and paths.is_url(audio):
            return audio
        if isinstance(audio, str) and audio:
            path = op.local_file(audio)
            if not await anyio.Path(path).is_file():
                raise StepError(f"audio file not found: {audio}", step=op.step)
            return await self._upload(op, path)
        raise StepError(f"{op.type} needs 'audio': a track, a URL or a local path",
                        step=op.step)

    def _load_uploads(self) -> dict[str, dict[str, Any]]:
        if self._uploads is None:
            self._uploads = self.uploads.load() if self.uploads is not None else {}
        return self._uploads

    def _save_uploads(self) -> None:
        if self.uploads is not None and self._uploads is not None:
            self.uploads.save(self._uploads)

    async def _upload(self, op: Op, path: Path) -> str:
        if not self.upload_base:
            # Validation refuses this (runner.plan.unit._check_upload_host); kept as the last
            # guard: with no known upload host, the file and the key go nowhere.
            raise StepError(f"no upload host is known for {self.config.base_url}: set "
                            "provider.upload_base_url", step=op.step)
        data = await anyio.to_thread.run_sync(path.read_bytes)
        sha = hashlib.sha256(data).hexdigest()
        lock = self._upload_locks.setdefault(sha, anyio.Lock())
        async with lock:  # two steps with the same file: one upload
            cache = await anyio.to_thread.run_sync(self._load_uploads)
            hit = cache.get(sha)
            # A hit must come from this upload host and be young enough to outlive the task.
            if hit and hit.get("host") == self.upload_base and \
                    self.wall() - float(hit.get("uploaded_at", 0)) < UPLOAD_MAX_AGE:
                return str(hit["url"])
            name = f"{sha[:16]}{path.suffix.lower()}"
            # Free, so every failure is retryable: submit=False.
            answer = await self.api.send(
                "POST", f"{self.upload_base}/api/file-stream-upload", step=op.step,
                submit=False, files={"file": (name, data, "application/octet-stream")},
                data={"uploadPath": UPLOAD_PATH, "fileName": name})
            env = answer.body if isinstance(answer.body, dict) else None
            url = ((env or {}).get("data") or {}).get("downloadUrl")
            if env is None or answer.status in GATEWAY or env.get("code") != 200 or not url:
                failure = http_failure(answer, step=op.step, submit=False,
                                       key_env=self.config.api_key_env)
                if failure is None and env is not None and isinstance(env.get("code"), int):
                    # An upload is never charged: its 429 is a rate limit (NEWER table).
                    failure = self._code_error(answer, env["code"], str(env.get("msg") or ""),
                                               step=op.step, family=NEWER)
                raise failure or TransientError(f"{answer.where}: the upload host gave no "
                                                "download URL", step=op.step)
            cache[sha] = {"url": str(url), "host": self.upload_base,
                          "uploaded_at": self.wall(), "size": len(data), "name": path.name}
            await anyio.to_thread.run_sync(self._save_uploads)
            return str(url)

    # --- expired links ---------------------------------------------------------------------

    async def _dead(self, outputs: dict[str, Any]) -> set[str]:
        """The URLs among `outputs`' files that the CDN says are gone."""
        dead: set[str] = set()
        for track in outputs.get("tracks", []):
            for name in ("file", "image_file"):
                f = track.get(name)
                if isinstance(f, Fetch) and await self._gone(f.url):
                    dead.add(f.url)
        return dead

    async def _gone(self, url: str) -> bool:
        try:
            resp = await self.files.head(url)
        except httpx.HTTPError:
            return False  # unknown: let the download decide
        return resp.status_code in (403, 404, 410)

    async def _recover(self, op: Op, task_id: str, fresh: Result, dead: set[str]
                       ) -> Result | None:
        """New links to the same songs through the recovery endpoint (no new generation).
        Recovered files may be .m4a. Artwork is not recovered: a dead image is dropped."""
        tracks = fresh.outputs["tracks"]
        if any(t["file"].url in dead for t in tracks):
            env = await self._call(op.step, "POST", f"{V1}/suno/recovery", family=NEWER,
                                   submit=False,
                                   json={"sunoTaskId": task_id,
                                         "callBackUrl": self.recovery_callback})
            data = env.get("data") or {}
            rid = data.get("task_id") or data.get("taskId")  # snake_case here (REFERENCE 2.19)
            if not rid:
                return None
            urls = await self._recovered(op, str(rid))
            if urls is None:
                return None
            for t in tracks:
                if t["file"].url in dead:
                    url = urls.get(t["id"])
                    if url is None:
                        return None
                    t["audio_url"], t["file"] = url, Fetch(url, suffix(url, ".m4a"))
        for t in tracks:
            if isinstance(t["image_file"], Fetch) and t["image_file"].url in dead:
                t["image_url"], t["image_file"] = None, None
        fresh.outputs["file"] = tracks[0]["file"]
        return fresh

    async def _recovered(self, op: Op, rid: str) -> dict[str, str] | None:
        """{clip id: fresh audio URL} once the recovery task ends; None if it failed."""
        path = f"{V1}/suno/recovery/record-info"
        for _ in range(RECOVERY_MAX_POLLS):
            # Top-level code: 201 running, 200 at least one track, 500 all failed.
            env = await self._call(op.step, "GET", path, family=NEWER, submit=False,
                                   params={"task_id": rid}, ok=(200, 201, 500))
            code = int(env["code"])
            if code == 200:
                return {str(d["id"]): str(d["audio_url"]) for d in env.get("data") or []
                        if str(d.get("status")).lower() == "success" and d.get("audio_url")}
            if code == 500:
                return None
            await self.clock.sleep(RECOVERY_POLL)
        return None
