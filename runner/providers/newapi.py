"""The new-api / one-api Suno relay provider (shared/api/REFERENCE.md section 3).

Submits are `POST /suno/submit/music|lyrics` answered `{code: "success", data: "<task id>"}`;
results come from `POST /suno/fetch {ids: [...]}`. Polls that arrive within a short
window are gathered into one fetch, so an album of tasks in flight costs one request per
round instead of one per task (every request counts against the rate limit).

Extend: the relay continues a clip and returns only the continuation, but a recipe's
extend means the whole song. So once the continuation is done the provider asks the relay
to join the chain (`/suno/submit/concat`, offered by hosted relays, free) or, when the
relay does not offer it (new-api itself answers `invalid_action`) or the recipe says
`concat: local`, joins source[0:continue_at] + continuation here with ffmpeg.

What the relay format has no field for (vocal_gender, weights, persona, negative_tags) is
not sent.

Callbacks (`sunoflow run --listen`): the relay page documents `notify_hook` on music and
lyrics submits, POSTed with the task object when the task ends. The provider sends the
run's listener URL there and reads a body exactly as a fetch of the same task (`_finished`);
the engine confirms a reported failure with a poll and keeps polling as the slow fallback.
An extend's callback only wakes the wait: its whole song needs the concat a poll does.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import anyio
import httpx

from runner import paths
from runner.errors import (
    AuthError,
    CreditsError,
    StepError,
    TaskFailed,
    TransientError,
    UsageError,
)
from runner.pacing import Clock
from runner.providers import answers, codes
from runner.providers.base import Fetch, Op, Produced, Result, Submitted, Uploads
from runner.providers.http import (
    GATEWAY,
    Answer,
    ApiClient,
    files_client,
    http_failure,
    lost,
    suffix,
)
from runner.providers.offload import in_studio
from runner.recipe.model import Provider as ProviderConfig
from runner.steps.models import DEFAULT_MODEL, MODEL_NAMES, custom_mode, is_local_task
from runner.studio import edit
from runner.studio.ffmpeg import MediaError
from runner.studio.probe import probe

log = logging.getLogger("sunoflow")

# The recipe's model -> the relay's `mv`, both ways. `mv` given in the step's inputs wins.
# chirp-v3-0 is new-api's default `mv` (REFERENCE 3.2); it has no sunoapi model, so a
# track the relay made with it reads as model "V3".
MV: dict[str, str] = {**MODEL_NAMES, "V3": "chirp-v3-0"}
MODEL_OF_MV = {mv: model for model, mv in MV.items()}
UPSTREAM_LOST = frozenset({"do_request_failed", "read_response_body_failed",
                           "unmarshal_response_body_failed"})
UPLOAD_POLLS = 120  # polls of an audio-url import before giving up (it takes seconds)
MISSING_LIMIT = 10  # fetches in a row that do not know a task before it is an error


def _dto_of(body: Any) -> dict[str, Any] | None:
    """The task object a notify_hook body carries: the object itself, or wrapped in the
    relay's `{code, data: {...}}` envelope (both readings are plausible; none is
    documented)."""
    if isinstance(body, dict) and "task_id" not in body and isinstance(body.get("data"), dict):
        body = body["data"]
    return body if isinstance(body, dict) else None


class InvalidAction(StepError):
    """The relay does not offer this action (new-api relays only MUSIC and LYRICS)."""


class _Batch:
    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.done = anyio.Event()
        self.found: dict[str, dict[str, Any]] = {}
        self.error: Exception | None = None


def _for_step(exc: Exception, step: str | None) -> Exception:
    """The batch's error as this caller's: the same kind, naming its step."""
    mine = copy.copy(exc)
    if hasattr(mine, "step"):
        mine.step = step
    return mine


class NewApiProvider:
    kind = "newapi"
    reports_first = False  # the relay's tasks have no first stage (REFERENCE 3.3)
    batch_window = 0.05  # seconds a poll waits for others to share its fetch

    def __init__(self, config: ProviderConfig, *, env: dict[str, str],
                 uploads: Uploads | None = None, clock: Clock | None = None) -> None:
        # `uploads` is not kept: the relay takes audio by URL only (no file upload), so
        # it has nothing to remember across runs; it is accepted as every remote
        # provider is made alike (runner.providers.registry).
        if not config.base_url:
            raise UsageError("provider newapi needs base_url (the relay's address): set "
                             "provider.base_url in the recipe or pass --base-url")
        self.config = config
        self.clock = clock or Clock()
        self.api = ApiClient(config, env=env, clock=self.clock)
        self._files = files_client(config)
        self.remote_concat = config.concat == "remote"
        self.notes: list[str] = []
        self._batch: _Batch | None = None
        self._concat: dict[str, list[str]] = {}  # extend task -> its concat tasks
        self._missing: dict[str, int] = {}
        self.notify_hook: str | None = None  # --listen: the run's callback URL

    @property
    def files(self) -> httpx.AsyncClient:
        """Result files live on CDNs: fetched without our key and outside the rate limit."""
        return self._files.get()

    def __repr__(self) -> str:
        return f"NewApiProvider({self.config.base_url!r})"

    # --- the Provider protocol -------------------------------------------------------

    @answers.guard_submit
    async def submit(self, op: Op) -> Submitted:
        if op.type == "generate":
            return Submitted(await self._submit(op, "music", self._generate_body(op)))
        if op.type == "extend":
            source = self._source(op)
            body = self._extend_body(op, source, str(source["task_id"]), str(source["id"]))
            return Submitted(await self._submit(op, "music", body))
        if op.type == "upload_extend":
            return Submitted(await self._upload_extend(op))
        if op.type == "lyrics":
            return Submitted(await self._submit(op, "lyrics",
                                                {"prompt": op.inputs.get("prompt") or ""}))
        raise StepError(f"the newapi relay does not perform '{op.type}'", step=op.step)

    @answers.guard_poll
    async def poll(self, op: Op, task_id: str) -> Result | None:
        dto = await self._fetch_one(op.step, task_id)
        if dto is None:
            return None
        done = self._finished(op, dto)
        if done is None:
            return None
        if op.type == "lyrics":
            return self._lyrics(op, task_id, dto)
        tracks = self._tracks(op, task_id, done)
        if op.type in ("extend", "upload_extend"):
            return await self._whole(op, task_id, tracks)
        return Result({"tracks": tracks, "task_id": task_id, "file": tracks[0]["file"]})

    @answers.guard_poll
    async def refresh(self, op: Op, task_id: str) -> Result | None:
        # The relay hands out its current links on every fetch; a poll is the refresh.
        return await self.poll(op, task_id)

    async def credits(self) -> float | None:
        return None  # new-api offers no Suno balance endpoint

    # --- callbacks (runner.providers.CallbackProvider) -----------------------------------

    def use_callback_url(self, url: str) -> None:
        """Send `url` as `notify_hook` on every music and lyrics submit from now on. Its last
        segment is the run's secret token: an answer quoting it is redacted like the key."""
        self.notify_hook = url
        token = url.rstrip("/").rsplit("/", 1)[-1]
        redact = self.api.redact
        self.api.redact = lambda text: redact(text).replace(token, "[redacted]")

    def callback_task_id(self, body: Any) -> str | None:
        dto = _dto_of(body)
        tid = dto.get("task_id") if dto is not None else None
        return tid if isinstance(tid, str) and 0 < len(tid) <= 128 else None

    @answers.guard_callback
    def from_callback(self, op: Op, task_id: str, body: Any) -> Result | None:
        """What a fetch with the same task object would answer: None while it runs (and
        for an extend, whose whole song a poll makes), the Result when done; TaskFailed
        when it reports a failure (the engine polls to confirm). Never raises anything
        else, whatever the body holds."""
        dto = _dto_of(body)
        if dto is None or dto.get("task_id") != task_id:
            return None
        try:
            done = self._finished(op, dto)
            if done is None or op.type in ("extend", "upload_extend"):
                return None
            if op.type == "lyrics":
                return self._lyrics(op, task_id, dto)
            tracks = self._tracks(op, task_id, done)
        except TaskFailed:
            raise
        except (AttributeError, KeyError, TypeError, ValueError):
            return None  # a body we cannot read: the fallback poll decides
        return Result({"tracks": tracks, "task_id": task_id, "file": tracks[0]["file"]})

    async def aclose(self) -> None:
        await self.api.aclose()
        await self._files.aclose()

    # --- requests --------------------------------------------------------------------

    def _error(self, answer: Answer, *, step: str | None, submit: bool) -> Exception | None:
        """None for a success envelope, else the error the answer means."""
        env = answer.body if isinstance(answer.body, dict) and "code" in answer.body else None
        if env is None and answer.status == 404:
            # gin's plain "404 page not found": new-api has no such route (upload, concat).
            return InvalidAction(f"{answer.where}: the relay has no such endpoint (HTTP 404)",
                                 step=step, code=404)
        if answer.status in GATEWAY or env is None:
            failure = http_failure(answer, step=step, submit=submit,
                                   key_env=self.config.api_key_env)
            return failure or lost(answer.where, "an answer that is not the relay's JSON",
                                   step=step, submit=submit)
        code, msg = str(env.get("code") or ""), str(env.get("message") or "")
        if code == "success" and answer.status < 300:
            return None
        where, detail = answer.where, f"{code}: {msg}" if msg else code
        if answer.status == 401 or code in ("unauthorized", "invalid_token"):
            return AuthError(f"{where}: the relay refused the key ({detail}); check the key "
                             f"in the environment variable {self.config.api_key_env}",
                             step=step, code=answer.status)
        if "quota" in code or "quota" in msg.lower() or answer.status == 402:
            return CreditsError(f"{where}: insufficient quota ({detail}); top up your relay "
                                "account, then run again (finished steps are not paid for "
                                "twice)", step=step, code=answer.status)
        if answer.status == 429 or "rate_limit" in code:
            return TransientError(f"{where}: rate limited ({detail})", step=step,
                                  code=answer.status, retry_after=answer.retry_after)
        if code in UPSTREAM_LOST:
            # new-api's words for "the request to the upstream went out and its answer was
            # lost": the upstream may have created (and charged for) the task.
            return lost(where, detail, step=step, submit=submit)
        if answer.status >= 500:
            # The relay's own error answer: no task was recorded.
            return TransientError(f"{where}: relay error ({detail})", step=step,
                                  code=answer.status, retry_after=answer.retry_after)
        if "invalid_action" in (code, msg) or answer.status == 404:
            return InvalidAction(f"{where}: the relay does not offer this action ({detail})",
                                 step=step, code=answer.status)
        return StepError(f"{where}: the relay rejected the request ({detail})", step=step,
                         code=answer.status)

    async def _submit(self, op: Op, action: str, body: dict[str, Any], *,
                      paid: bool = True) -> str:
        path = f"/suno/submit/{action}"
        if self.notify_hook is not None and action in ("music", "lyrics"):
            body = {**body, "notify_hook": self.notify_hook}  # the relay page's field
        answer = await self.api.send("POST", path, step=op.step, submit=paid, json=body)
        failure = self._error(answer, step=op.step, submit=paid)
        if failure is not None:
            raise failure
        task_id = answer.body.get("data")
        if not isinstance(task_id, str) or not task_id:
            raise lost(answer.where, "success without a task id", step=op.step, submit=paid)
        return task_id

    async def _fetch_now(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        answer = await self.api.send("POST", "/suno/fetch", step=None, submit=False,
                                     json={"ids": ids})
        failure = self._error(answer, step=None, submit=False)
        if failure is not None:
            raise failure
        data = answer.body.get("data") or []
        return {str(d["task_id"]): d for d in data if isinstance(d, dict) and d.get("task_id")}

    async def _fetch(self, step: str | None, ids: list[str]) -> dict[str, dict[str, Any]]:
        """The relay's records of `ids`, fetched together with every other poll that
        arrives within `batch_window`: the first poll of a round leads (waits, then sends
        one request for all), the others wait for its answer."""
        batch = self._batch
        leader = batch is None
        if batch is None:
            batch = self._batch = _Batch()
        batch.ids.update(ids)
        if leader:
            try:
                await anyio.sleep(self.batch_window)  # a coalescing window, not a schedule
                self._batch = None  # later polls start the next round
                batch.found = await self._fetch_now(sorted(batch.ids))
            except Exception as exc:
                batch.error = exc
            except BaseException:  # cancelled: the others must not wait forever
                batch.error = TransientError("the shared poll was cancelled")
                raise
            finally:
                if self._batch is batch:
                    self._batch = None
                batch.done.set()
        else:
            await batch.done.wait()
        if batch.error is not None:
            raise _for_step(batch.error, step) from batch.error
        return {i: batch.found[i] for i in ids if i in batch.found}

    async def _fetch_one(self, step: str, task_id: str) -> dict[str, Any] | None:
        found = await self._fetch(step, [task_id])
        if task_id in found:
            self._missing.pop(task_id, None)
            return found[task_id]
        # The relay omits ids it does not know; a moment after a submit that can happen.
        n = self._missing[task_id] = self._missing.get(task_id, 0) + 1
        if n >= MISSING_LIMIT:
            raise StepError(f"the relay does not know task {task_id}", step=step)
        return None

    # --- request bodies ----------------------------------------------------------------

    def _mv(self, op: Op, source: dict[str, Any] | None = None) -> tuple[str, str]:
        """(mv, the recipe's model name) for this operation. An extend without a model of
        its own keeps its source's: the model the source clip was made with (its
        `model_name`), which the relay must be asked for again."""
        i = op.inputs
        if i.get("mv"):
            mv = str(i["mv"])
            return mv, MODEL_OF_MV.get(mv, str(i.get("model") or mv))
        if i.get("model"):
            model = str(i["model"])
            return MV.get(model, model), model
        src = source or {}
        name, src_model = src.get("model_name"), src.get("model")
        if isinstance(name, str) and name:
            return name, MODEL_OF_MV.get(name, str(src_model or name))
        if isinstance(src_model, str) and src_model:
            return MV.get(src_model, src_model), src_model
        return MV[DEFAULT_MODEL], DEFAULT_MODEL

    def _generate_body(self, op: Op) -> dict[str, Any]:
        i = op.inputs
        body: dict[str, Any] = {"mv": self._mv(op)[0],
                                "make_instrumental": bool(i.get("instrumental"))}
        if custom_mode(i):
            body.update(prompt=i.get("prompt") or "", title=i.get("title") or "",
                        tags=i.get("style") or "")
        else:
            body["gpt_description_prompt"] = i.get("prompt") or ""  # inspiration mode
        return body

    def _source(self, op: Op) -> dict[str, Any]:
        audio = op.inputs.get("audio")
        if not isinstance(audio, dict) or not audio.get("id") or not audio.get("task_id") \
                or is_local_task(audio["task_id"]):
            raise StepError("extend on the relay needs a track the relay made as 'audio' "
                            "(with id and task_id); for other audio use upload_extend",
                            step=op.step)
        return audio

    def _extend_body(self, op: Op, source: dict[str, Any], task_id: str,
                     clip_id: str) -> dict[str, Any]:
        i = op.inputs
        at = i.get("continue_at")
        if not isinstance(at, (int, float)) or isinstance(at, bool) or at <= 0:
            raise StepError("extend on the relay needs continue_at (seconds, > 0)",
                            step=op.step)
        return {"task_id": task_id, "continue_clip_id": clip_id, "continue_at": at,
                "mv": self._mv(op, source)[0], "prompt": i.get("prompt") or "",
                "title": i.get("title") or source.get("title") or "",
                "tags": i.get("style") or source.get("tags") or "",
                "make_instrumental": bool(i.get("instrumental"))}

    async def _upload_extend(self, op: Op) -> str:
        """Import the audio as a clip (free), then submit the paid continuation of it.
        Only the continuation is paid: a failure before it is a free retry."""
        audio = op.inputs.get("audio")
        url = audio.get("audio_url") if isinstance(audio, dict) else audio
        if not isinstance(url, str) or not paths.is_url(url):
            raise StepError("upload_extend on the relay takes audio by URL (a track with an "
                            "audio_url, or an http(s) URL); it has no file upload",
                            step=op.step)
        answer = await self.api.send("POST", "/suno/uploads/audio-url", step=op.step,
                                     submit=False, json={"url": url})
        failure = self._error(answer, step=op.step, submit=False)
        if isinstance(failure, InvalidAction):
            raise StepError("this relay does not import audio (/suno/uploads/audio-url): "
                            "upload_extend needs a hosted relay that offers it", step=op.step,
                            code=failure.code) from failure
        if failure is not None:
            raise failure
        upload_id = answer.body.get("data")
        if not isinstance(upload_id, str) or not upload_id:
            raise TransientError("the relay accepted the audio without a task id",
                                 step=op.step)
        for _ in range(UPLOAD_POLLS):
            dto = await self._fetch_one(op.step, upload_id)
            if dto is not None and dto.get("status") == "SUCCESS" and dto.get("data"):
                clip = dto["data"][0]
                source = {**(audio if isinstance(audio, dict) else {}),
                          "title": (audio.get("title") if isinstance(audio, dict) else None)
                          or clip.get("title")}
                body = self._extend_body(op, source, upload_id, str(clip["id"]))
                return await self._submit(op, "music", body)
            if dto is not None and codes.failed(str(dto.get("status") or "")):
                raise StepError(f"the relay could not import {url}: "
                                f"{dto.get('fail_reason') or 'failed'}", step=op.step)
            await self.clock.sleep(min(2.0, self.config.poll_interval))
        raise TransientError(f"importing {url} did not finish", step=op.step)

    # --- results -------------------------------------------------------------------------

    def _finished(self, op: Op, dto: dict[str, Any]) -> Any:
        """The task's data once it succeeded; None while it runs; TaskFailed if it failed."""
        status = str(dto.get("status") or "").upper()
        if status == "SUCCESS":
            data = dto.get("data")
            if op.type != "lyrics" and not (isinstance(data, list) and data
                                            and all(c.get("audio_url") for c in data)):
                return None  # success before the links: fetch again
            return data
        if codes.failed(status):
            # FAILURE (new-api's TaskDto), FAIL (the relay page), any *FAIL* / *ERROR* word.
            data = dto.get("data")
            clips = [c for c in data if isinstance(c, dict)] if isinstance(data, list) else []
            # new-api returns the quota of a failed task; clips say so in refund_credits.
            refunded = any((c.get("metadata") or {}).get("refund_credits") for c in clips)
            raise TaskFailed(f"the relay failed task {dto.get('task_id')}: "
                             f"{status}: {dto.get('fail_reason') or 'no reason given'}"
                             + ("; the credits were refunded" if refunded else ""),
                             step=op.step, refunded=refunded)
        codes.note_unknown(status, self.kind)
        # No stream preview (runner.providers.Streams) from the relay: no relay page names
        # a stream link, and a clip's audio_url while it is "streaming" is undocumented.
        return None  # NOT_START, SUBMITTED, QUEUED, IN_PROGRESS and anything unknown

    def _lyrics(self, op: Op, task_id: str, dto: dict[str, Any]) -> Result:
        data = dto.get("data")
        items = data if isinstance(data, list) else [data] if isinstance(data, dict) else []
        texts = [{"title": str(d.get("title") or ""), "text": str(d.get("text") or "")}
                 for d in items if d.get("text")]
        if not texts:
            raise TaskFailed(f"the relay returned no lyrics for task {task_id}", step=op.step)
        return Result({"texts": texts, "text": texts[0]["text"], "title": texts[0]["title"],
                       "task_id": task_id})

    def _tracks(self, op: Op, task_id: str, clips: list[dict[str, Any]]
                ) -> list[dict[str, Any]]:
        audio = op.inputs.get("audio")
        source = audio if isinstance(audio, dict) else None
        mv, model = self._mv(op, source)
        tracks = []
        for c in clips:
            meta = c.get("metadata") or {}
            url = str(c["audio_url"])
            image = c.get("image_large_url") or c.get("image_url") or None
            duration = meta.get("duration")
            name = c.get("model_name") or mv
            tracks.append({
                "id": str(c.get("id")), "task_id": task_id, "title": c.get("title") or "",
                "duration": float(duration) if isinstance(duration, (int, float)) else None,
                "tags": meta.get("tags") or "", "prompt": meta.get("prompt") or
                c.get("text") or "", "model": MODEL_OF_MV.get(str(name), model),
                "model_name": name,
                "audio_url": url, "image_url": image, "file": Fetch(url, suffix(url, ".mp3")),
                "image_file": Fetch(image, suffix(image, ".jpeg")) if image else None,
            })
        return tracks

    # --- the whole song --------------------------------------------------------------------

    def _note_local(self, why: str) -> None:
        if not self.notes:
            msg = (f"newapi: {why}; joining extensions into whole songs locally with ffmpeg "
                   "(set concat: local in the provider block to skip asking)")
            self.notes.append(msg)
            log.warning(msg)

    async def _whole(self, op: Op, task_id: str, parts: list[dict[str, Any]]
                     ) -> Result | None:
        """The whole song for each continuation: by the relay's concat, else locally."""
        if self.remote_concat:
            ids = self._concat.get(task_id)
            if ids is None:
                try:
                    # Free on the relays that offer it; a lost answer is a free retry.
                    ids = [await self._submit(op, "concat", {"clip_id": p["id"]}, paid=False)
                           for p in parts]
                except InvalidAction as exc:
                    self.remote_concat = False
                    self._note_local(f"the relay does not offer concat ({exc.code})")
                    return await self._local_whole(op, task_id, parts)
                self._concat[task_id] = ids
            found = await self._fetch(op.step, ids)
            if any(i not in found for i in ids):
                return None
            try:
                done = [self._finished(op, found[i]) for i in ids]
            except TaskFailed:
                self._concat.pop(task_id, None)
                self._note_local("the relay failed a concat task")
                return await self._local_whole(op, task_id, parts)
            if any(d is None for d in done):
                return None
            tracks = [self._tracks(op, cid, d)[0] for cid, d in zip(ids, done, strict=True)]
            return Result({"tracks": tracks, "task_id": task_id, "file": tracks[0]["file"]},
                          task_ids=[task_id, *ids])
        return await self._local_whole(op, task_id, parts)

    async def _local_whole(self, op: Op, task_id: str, parts: list[dict[str, Any]]
                           ) -> Result:
        at = float(op.inputs["continue_at"])
        work = op.workdir
        work.mkdir(parents=True, exist_ok=True)
        src = await self._source_file(op, work)
        head = work / "head.wav"
        tracks = []
        try:
            await in_studio(lambda: edit.trim(src, head, start=0.0, end=at))
            for n, part in enumerate(parts):
                cont = work / f"continuation{n}{suffix(part['audio_url'], '.mp3')}"
                await self._download(op, part["audio_url"], cont)
                out = work / f"whole{n}.mp3"
                await in_studio(edit.concat, [head, cont], out)
                info = await in_studio(probe, out)
                # The whole song exists only here: it has no URL of its own. Its ids stay
                # the continuation's, which is what the relay can continue further.
                tracks.append({**part, "duration": round(info.duration, 3), "audio_url": None,
                               "file": Produced(out)})
        except MediaError as exc:
            raise StepError(f"joining the extension locally failed: {exc}",
                            step=op.step) from exc
        return Result({"tracks": tracks, "task_id": task_id, "file": tracks[0]["file"]})

    async def _source_file(self, op: Op, work: Path) -> Path:
        audio = op.inputs.get("audio")
        if isinstance(audio, dict):
            file = audio.get("file")
            if isinstance(file, str) and file and \
                    await anyio.Path(path := op.local_file(file)).is_file():
                return path
            url = audio.get("audio_url")
        else:
            url = audio
        if not isinstance(url, str) or not paths.is_url(url):
            raise StepError("the source of the extension has neither a file nor a URL",
                            step=op.step)
        dest = work / f"source{suffix(url, '.mp3')}"
        await self._download(op, url, dest)
        return dest

    async def _download(self, op: Op, url: str, dest: Path) -> None:
        """A result file for local work (not counted against the rate limit: not an API
        request, and never sent our key), with the limits of every download."""
        from runner.providers import download

        dest.unlink(missing_ok=True)  # noqa: ASYNC240 - a leftover of a failed attempt
        try:
            await download.stream_to(self.files, url, dest,
                                     max_bytes=self.config.max_download_bytes)
        except (TransientError, download.LinkExpired) as exc:
            raise TransientError(str(exc), step=op.step) from None  # polled again: free
        except download.DownloadRejected as exc:
            raise StepError(str(exc), step=op.step) from None
