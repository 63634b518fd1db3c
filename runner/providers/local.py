"""The local provider: an offline studio that really performs every step type.

Audio, images and video are made with the ffmpeg binary from the imageio-ffmpeg wheel
(runner.studio's compose, edit and art); text with runner.studio.textgen. Everything is
deterministic: the seed of a piece is a hash of the step type and its inputs
(runner.studio.dice), so the same recipe makes the same bytes on every machine. Nothing
here costs money or touches the network.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from runner.album.tags import TAGGABLE, write_tags
from runner.errors import StepError
from runner.paths import is_url
from runner.providers.base import Op, Produced, Result, Submitted
from runner.providers.offload import in_studio
from runner.recipe.model import Provider as ProviderConfig
from runner.steps.models import DEFAULT_MODEL, MODEL_NAMES, local_task_id
from runner.steps.types import TAG_FIELDS
from runner.studio import art, compose, dice, edit, textgen
from runner.studio.ffmpeg import MediaError
from runner.studio.probe import probe


def _seed(op: Op, extra: str = "") -> str:
    return dice.digest([op.type, _identity(op.inputs), extra])


def _identity(value: Any) -> Any:
    """Inputs as a seed sees them: a track is its file's content, not where it is stored."""
    if isinstance(value, dict):
        if "file" in value and isinstance(value.get("file"), str):
            return {"file": Path(value["file"]).name, "id": value.get("id")}
        return {k: _identity(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_identity(v) for v in value]
    return value


# Steps that only compute text in memory (no file, no ffmpeg): run on the event loop.
TEXT_ONLY = frozenset({"lyrics", "boost_style"})


class LocalProvider:
    kind = "local"
    reports_first = False

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self.take_seconds = config.take_seconds

    async def submit(self, op: Op) -> Submitted:
        fn = getattr(self, f"_{op.type}", None)
        if fn is None:
            raise StepError(f"the local provider cannot perform '{op.type}'", step=op.step)
        try:
            if op.type in TEXT_ONLY:
                outputs = fn(op)  # microseconds of string work: a thread hop costs more
            else:
                # Every ffmpeg of the step under its deadline, and killed if the step is
                # cancelled (runner.providers.offload).
                outputs = await in_studio(fn, op, seconds=op.timeout)
        except MediaError as exc:
            raise StepError(str(exc), step=op.step) from None
        return Submitted(None, Result(outputs))

    async def poll(self, op: Op, task_id: str) -> Result | None:
        raise StepError("local steps have no task to poll", step=op.step)

    async def refresh(self, op: Op, task_id: str) -> Result | None:
        return None

    async def credits(self) -> float | None:
        return None

    async def aclose(self) -> None:
        return None

    # --- helpers -------------------------------------------------------------------

    def _audio(self, op: Op, value: Any = None) -> Path:
        v = op.inputs.get("audio") if value is None else value
        if isinstance(v, dict):
            f = v.get("file")
            if not f or not isinstance(f, str):
                raise StepError("the audio track has no downloaded file", step=op.step)
            return op.local_file(f)
        if isinstance(v, str):
            if is_url(v):
                raise StepError("the local provider takes a track or a local file as audio, "
                                f"not a URL ({v})", step=op.step)
            p = op.local_file(v)
            if not p.is_file():
                raise StepError(f"audio file not found: {v}", step=op.step)
            return p
        raise StepError(f"'audio' must be a track, a URL or a path; got {type(v).__name__}",
                        step=op.step)

    def _track(self, op: Op, path: Path, n: int, *, title: str, prompt: str, style: str,
               image: Path | None = None, source: Any = None) -> dict[str, Any]:
        model = op.inputs.get("model") or (source or {}).get("model") or DEFAULT_MODEL
        info = probe(path)
        return {
            "id": f"{local_task_id(op.key)}-{n}", "task_id": local_task_id(op.key),
            "title": title, "duration": round(info.duration, 3), "tags": style,
            "prompt": prompt, "model": model, "model_name": MODEL_NAMES.get(model, model),
            "audio_url": None, "image_url": None, "file": Produced(path),
            "image_file": Produced(image) if image else None,
        }

    def _audio_out(self, tracks: list[dict[str, Any]]) -> dict[str, Any]:
        return {"tracks": tracks, "task_id": tracks[0]["task_id"], "file": tracks[0]["file"]}

    def _takes(self, op: Op, make: Any, *, title: str, prompt: str, style: str,
               source: Any = None) -> dict[str, Any]:
        tracks = []
        for n in range(2):
            out = op.workdir / f"take{n}.mp3"
            img = op.workdir / f"take{n}.jpg"
            seed = _seed(op, f"take{n}")
            make(out, seed)
            art.cover_image(img, seed=seed)
            tracks.append(self._track(op, out, n, title=title, prompt=prompt, style=style,
                                      image=img, source=source))
        return self._audio_out(tracks)

    # --- step types ----------------------------------------------------------------

    def _generate(self, op: Op) -> dict[str, Any]:
        i = op.inputs
        prompt = str(i.get("prompt") or "")
        title = str(i.get("title") or textgen.title_from(prompt or str(i.get("style") or "")))
        style = str(i.get("style") or "")
        return self._takes(op, lambda out, seed: compose.synth(
            out, seed=seed + prompt + title, duration=self.take_seconds, style=style,
            instrumental=bool(i.get("instrumental"))), title=title, prompt=prompt, style=style)

    def _extend(self, op: Op) -> dict[str, Any]:
        i = op.inputs
        src = self._audio(op)
        audio = i.get("audio")
        source: dict[str, Any] = audio if isinstance(audio, dict) else {}
        at = i.get("continue_at")
        dur = probe(src).duration
        if not isinstance(at, (int, float)) or not 0 < at < dur:
            raise StepError(f"continue_at must be inside the source track (0 < continue_at < "
                            f"{dur:.2f} s); got {at}", step=op.step)
        title = str(i.get("title") or source.get("title") or "")
        style = str(i.get("style") or source.get("tags") or "")
        prompt = str(i.get("prompt") or "")
        return self._takes(op, lambda out, seed: compose.extend(
            src, out, continue_at=float(at), seed=seed, duration=self.take_seconds, style=style,
            instrumental=bool(i.get("instrumental"))),
            title=title, prompt=prompt, style=style, source=source)

    _upload_extend = _extend

    def _upload_cover(self, op: Op) -> dict[str, Any]:
        i = op.inputs
        src = self._audio(op)
        dur = probe(src).duration
        prompt, style = str(i.get("prompt") or ""), str(i.get("style") or "")
        title = str(i.get("title") or textgen.title_from(prompt or style))
        return self._takes(op, lambda out, seed: compose.synth(
            out, seed=seed + src.name, duration=dur, style=style,
            instrumental=bool(i.get("instrumental"))), title=title, prompt=prompt, style=style)

    def _add_vocals(self, op: Op) -> dict[str, Any]:
        return self._layer(op, "vocals", str(op.inputs.get("style") or ""))

    def _add_instrumental(self, op: Op) -> dict[str, Any]:
        return self._layer(op, "instrumental", str(op.inputs.get("tags") or ""))

    def _layer(self, op: Op, layer: str, style: str) -> dict[str, Any]:
        src = self._audio(op)
        i = op.inputs
        return self._takes(op, lambda out, seed: compose.mix(src, out, seed=seed, layer=layer),
                           title=str(i.get("title") or ""), prompt=str(i.get("prompt") or ""),
                           style=style)

    def _cover(self, op: Op) -> dict[str, Any]:
        images = []
        for n in range(2):
            out = op.workdir / f"cover{n}.png"
            art.cover_image(out, seed=_seed(op, f"cover{n}"))
            images.append({"url": None, "file": Produced(out)})
        return {"images": images, "task_id": local_task_id(op.key)}

    def _lyrics(self, op: Op) -> dict[str, Any]:
        texts = textgen.lyrics(str(op.inputs.get("prompt") or ""))
        return {"texts": texts, "text": texts[0]["text"], "title": texts[0]["title"],
                "task_id": local_task_id(op.key)}

    def _timestamped_lyrics(self, op: Op) -> dict[str, Any]:
        audio = op.inputs.get("audio")
        src = self._audio(op)
        text = str(audio.get("prompt") or "") if isinstance(audio, dict) else ""
        dur = probe(src).duration
        words = textgen.align_words(text, dur)
        lrc = op.workdir / "lyrics.lrc"
        lrc.write_text(textgen.lrc(words, text), encoding="utf-8")
        return {"words": words, "lrc": Produced(lrc)}

    def _separate(self, op: Op) -> dict[str, Any]:
        src = self._audio(op)
        raw = op.workdir / "stems"
        raw.mkdir(exist_ok=True)
        stems = edit.separate(src, raw, mode=str(op.inputs.get("type") or "separate_vocal"))
        # The service hands out MP3 stems; so do we, so a recipe can switch provider as is.
        out: dict[str, Any] = {}
        for name, path in stems.items():
            mp3 = op.workdir / f"{name}.mp3"
            edit.transcode(path, mp3, fmt="mp3", bitrate_kbps=192)
            out[name] = {"url": None, "file": Produced(mp3)}
        return {"stems": out, "task_id": local_task_id(op.key)}

    def _convert(self, op: Op) -> dict[str, Any]:
        out = self._transcode(op)
        out["url"] = None
        out["task_id"] = local_task_id(op.key)
        return out

    def _transcode(self, op: Op) -> dict[str, Any]:
        fmt = str(op.inputs.get("format") or "wav")
        out = op.workdir / f"out.{fmt}"
        br = op.inputs.get("bitrate")
        edit.transcode(self._audio(op), out, fmt=fmt,
                       bitrate_kbps=int(br) if isinstance(br, int) else None)
        return self._processed(op, out)

    def _processed(self, op: Op, out: Path) -> dict[str, Any]:
        audio = op.inputs.get("audio")
        source = audio if isinstance(audio, dict) else {}
        track = self._track(op, out, 0, title=str(source.get("title") or ""),
                            prompt=str(source.get("prompt") or ""),
                            style=str(source.get("tags") or ""), source=source)
        if source.get("image_file"):
            track["image_file"] = source["image_file"]
        return {"tracks": [track], "file": track["file"]}

    def _boost_style(self, op: Op) -> dict[str, Any]:
        return {"text": textgen.boost_style(str(op.inputs.get("content") or ""))}

    def _video(self, op: Op) -> dict[str, Any]:
        src = self._audio(op)
        audio = op.inputs.get("audio")
        image = audio.get("image_file") if isinstance(audio, dict) else None
        out = op.workdir / "video.mp4"
        title = audio.get("title") if isinstance(audio, dict) else None
        author = op.inputs.get("author")
        art.video(src, out, seed=_seed(op),
                  image=op.local_file(image) if isinstance(image, str) and image else None,
                  title=title if isinstance(title, str) else "",
                  artist=author if isinstance(author, str) else "")
        return {"url": None, "file": Produced(out), "task_id": local_task_id(op.key)}

    def _concat(self, op: Op) -> dict[str, Any]:
        clips = op.inputs.get("clips")
        if isinstance(clips, dict):
            clips = [clips]
        if not isinstance(clips, list) or not clips:
            raise StepError("'clips' must be a non-empty list of tracks", step=op.step)
        paths = [self._audio(op, c.get("tracks", [c])[0] if isinstance(c, dict) and "tracks"
                             in c else c) for c in clips]
        out = op.workdir / "concat.mp3"
        edit.concat(paths, out)
        first = clips[0].get("tracks", [clips[0]])[0] if isinstance(clips[0], dict) else {}
        op.inputs = {**op.inputs, "audio": first}
        return self._processed(op, out)

    def _trim(self, op: Op) -> dict[str, Any]:
        out = op.workdir / f"trim{self._ext(op)}"
        end = op.inputs.get("end")
        edit.trim(self._audio(op), out, start=float(op.inputs.get("start") or 0),
                  end=float(end) if end is not None else None)
        return self._processed(op, out)

    def _fade(self, op: Op) -> dict[str, Any]:
        out = op.workdir / f"fade{self._ext(op)}"
        edit.fade(self._audio(op), out, fade_in=float(op.inputs.get("in") or 0),
                  fade_out=float(op.inputs.get("out") or 0))
        return self._processed(op, out)

    def _normalize(self, op: Op) -> dict[str, Any]:
        out = op.workdir / f"normalized{self._ext(op)}"
        lufs = op.inputs.get("lufs")
        edit.normalize(self._audio(op), out, lufs=float(lufs) if lufs is not None else -14.0)
        return self._processed(op, out)

    def _tag(self, op: Op) -> dict[str, Any]:
        src = self._audio(op)
        if src.suffix.lower() not in TAGGABLE:
            raise StepError(f"tag writes MP3, FLAC and WAV files; this track is "
                            f"{src.suffix or 'without an extension'}", step=op.step)
        out = op.workdir / f"tagged{src.suffix.lower()}"
        shutil.copyfile(src, out)
        tags = {k: op.inputs[k] for k in TAG_FIELDS if op.inputs.get(k) is not None}
        write_tags(out, tags)
        result = self._processed(op, out)
        if tags.get("title"):
            result["tracks"][0]["title"] = str(tags["title"])
        return result

    def _ext(self, op: Op) -> str:
        ext = self._audio(op).suffix.lower()
        return ext if ext in (".mp3", ".wav", ".flac") else ".mp3"

