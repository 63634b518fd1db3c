"""Step types are data: each declares its inputs, its outputs and what each provider does
with it, here and only here. Adding a step type means adding one entry to TYPES.

Input schemas are JSON Schema fragments; every input also accepts a template string
(a value containing ``{{``), since inputs may come from earlier steps. Length limits that
depend on the model live in :mod:`runner.steps.models` and are checked once values are
rendered (statically when they are literal), always before any request is sent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from runner.steps.models import MODELS, is_local_task

# --- output types: "str", "num", "bool", "file", "any", ("list", T) or a dict of fields ---

OutType = Any
URL_FILE: dict[str, OutType] = {"url": "str", "file": "file"}
TRACK: dict[str, OutType] = {
    "id": "str", "task_id": "str", "title": "str", "duration": "num", "tags": "str",
    "prompt": "str", "model": "str", "model_name": "str", "audio_url": "str",
    "image_url": "str", "file": "file", "image_file": "file",
    # sunoapi music tracks: the stream the service plays while the task runs (never the
    # stored result); absent on tracks made elsewhere.
    "stream_url": "str",
}
STEM_NAMES = ("vocals", "instrumental", "backing_vocals", "drums", "bass", "guitar", "keyboard",
              "percussion", "strings", "synth", "fx", "brass", "woodwinds")
AUDIO_OUT: dict[str, OutType] = {"tracks": ("list", TRACK), "task_id": "str", "file": "file"}
LOCAL_AUDIO_OUT: dict[str, OutType] = {"tracks": ("list", TRACK), "file": "file"}


# --- input schema helpers -----------------------------------------------------------

def text(desc: str) -> dict[str, Any]:
    return {"type": "string", "description": desc}


def flag(desc: str) -> dict[str, Any]:
    return {"type": "boolean", "description": desc}


def number(desc: str, *, minimum: float | None = None, maximum: float | None = None,
           exclusive_minimum: float | None = None, integer: bool = False) -> dict[str, Any]:
    s: dict[str, Any] = {"type": "integer" if integer else "number", "description": desc}
    if minimum is not None:
        s["minimum"] = minimum
    if maximum is not None:
        s["maximum"] = maximum
    if exclusive_minimum is not None:
        s["exclusiveMinimum"] = exclusive_minimum
    return s


def choice(desc: str, *values: str | int) -> dict[str, Any]:
    return {"enum": list(values), "description": desc}


AUDIO = {"description": "a track object from an earlier step, a URL, or a local path",
         "type": ["object", "string"]}
# Two decimals at most: checked in runner.steps.models (a schema `multipleOf: 0.01` refuses 0.29,
# since 0.29 / 0.01 is not exactly 29 in floating point).
WEIGHT = {"type": "number", "minimum": 0, "maximum": 1}
MODEL = choice("the model; the service's default when omitted", *MODELS)
GENDER = choice("preferred vocal gender (a hint, not a guarantee)", "m", "f")

WEIGHTS = {
    "style_weight": {**WEIGHT, "description": "how strongly to follow the style (0-1)"},
    "weirdness_constraint": {**WEIGHT, "description": "creative deviation (0-1)"},
    "audio_weight": {**WEIGHT, "description": "weight of the reference audio (0-1)"},
}
GENERATE_IN = {
    "prompt": text("custom mode: the exact lyrics; otherwise an idea for the song"),
    "style": text("style tags, e.g. 'indie folk, warm' (custom mode)"),
    "title": text("the song's title (custom mode)"),
    "custom_mode": flag("default true when style or title is given"),
    "instrumental": flag("no vocals (default false)"),
    "model": MODEL,
    "negative_tags": text("styles to exclude"),
    "vocal_gender": GENDER,
    **WEIGHTS,
    "persona_id": text("a persona id from generate-persona (custom mode only)"),
    "persona_model": choice("which kind of persona persona_id names", "style_persona",
                            "voice_persona"),
    "mv": text("newapi only: the relay's model id (e.g. chirp-v4-5); wins over model"),
}
EXTEND_IN = {
    "continue_at": number("seconds into the source where the extension starts",
                          exclusive_minimum=0),
    "prompt": text("lyrics or a description for the extension"),
    "style": text("default: the source track's style"),
    "title": text("default: the source track's title"),
    "model": {**MODEL, "description": "default: the source track's model (must match it)"},
    "instrumental": flag("no vocals"),
    "negative_tags": text("styles to exclude"),
    "vocal_gender": GENDER,
    **WEIGHTS,
    "persona_id": text("persona id"),
    "persona_model": GENERATE_IN["persona_model"],
    "mv": GENERATE_IN["mv"],
}
FORMAT = choice("output format", "wav", "flac", "mp3")
BITRATE = choice("MP3 bitrate in kbps", 64, 96, 128, 160, 192, 256, 320)

# Support per provider: "remote" (a service call), "local" (ffmpeg/text on this machine), or
# absent (the provider cannot do it: validation fails, naming the step).
REMOTE_FAMILY = {"local": "local", "sunoapi": "remote"}
LOCAL_EVERYWHERE = {"local": "local", "sunoapi": "local", "newapi": "local"}


@dataclass(frozen=True)
class StepType:
    name: str
    summary: str
    inputs: dict[str, dict[str, Any]]
    outputs: dict[str, OutType]
    required: tuple[str, ...] = ()
    support: dict[str, str] = field(default_factory=lambda: dict(REMOTE_FAMILY))
    price: int = 0  # default credits per remote submission; the provider block may override
    takes_audio: bool = True
    # Operations with the same `pace` take about as long at the service: the poller shares
    # what it learns about them in a run (extend learns from generate).
    pace: str = ""
    # Seconds the service usually takes to do it (0: not a service task): what the
    # scheduler expects until the run has learned better (runner.engine.priority).
    expected: float = 0.0
    # Routing exceptions, as data. A provider whose service supports the step does it only
    # when each input named in `service_values` (its default when absent) has one of the
    # values listed, and, with `service_tracks`, only on a track the service made (its task
    # id and audio id): anything else is local ffmpeg (convert: the service makes WAV of
    # its own tracks only).
    service_values: tuple[tuple[str, Any, tuple[Any, ...]], ...] = ()
    service_tracks: bool = False
    # A price exception: (input, its default, {value: credits}). A value listed costs its
    # own price, named by the value in the provider block's `prices` (separate's
    # split_stem); the rest cost the type's.
    price_by: tuple[str, Any, dict[str, int]] | None = None

    @property
    def fields(self) -> dict[str, dict[str, Any]]:
        return ({"audio": AUDIO} if self.takes_audio else {}) | self.inputs

    def paid(self, provider: str) -> bool:
        return self.support.get(provider) == "remote" and self.price > 0

    def local_by_value(self, value: Callable[[str, Any], Any]) -> bool:
        """Whether the inputs' values (`value(name, default)`: rendered, or as known before
        the run) make this step local ffmpeg where the service could do it."""
        return any(value(name, default) not in allowed
                   for name, default, allowed in self.service_values)

    def route(self, provider: str, inputs: Mapping[str, Any]) -> str:
        """"remote" when `provider`'s service performs this step on these rendered inputs,
        "local" for ffmpeg here. The one routing rule: the engine, `status`, the plan's
        checks and its prices all ask it (or `local_by_value`, before the run)."""
        route = self.support.get(provider, "local")
        if route == "remote" and (self.local_by_value(inputs.get) or
                                  self.service_tracks and not own_track(inputs.get("audio"))):
            return "local"
        return route

    def price_of(self, provider: str, prices: Mapping[str, Any],
                 value: Callable[[str, Any], Any]) -> float:
        """Credits one submission costs on `provider` (0 when local), given the provider
        block's `prices` and the inputs' values (`value(name, default)`)."""
        if not self.paid(provider) or self.local_by_value(value):
            return 0.0
        if self.price_by is not None:
            name, default, table = self.price_by
            v = value(name, default)
            if isinstance(v, str) and v in table:
                return float(prices.get(v, table[v]))
        return float(prices.get(self.name, self.price))


def own_track(audio: Any) -> bool:
    """A track the service made (the service's task id and audio id; ``local-`` task ids
    are this machine's)."""
    return bool(isinstance(audio, dict) and audio.get("id") and audio.get("task_id") and
                not is_local_task(audio.get("task_id", "")))


def pace_of(op: str) -> str:
    """The family whose durations a step type shares (extend learns from generate)."""
    t = TYPES.get(op)
    return (t.pace or t.name) if t is not None else op


def _t(name: str, summary: str, inputs: dict[str, Any], outputs: dict[str, Any],
       **kw: Any) -> StepType:
    return StepType(name, summary, inputs, outputs, **kw)


# A song takes the service 2-3 minutes to make (REFERENCE 1.3); every music operation does.
MUSIC: dict[str, Any] = {"pace": "music", "expected": 150.0}


TYPES: dict[str, StepType] = {t.name: t for t in [
    _t("generate", "make a song (two takes) from a prompt, or lyrics, style and title",
       GENERATE_IN, AUDIO_OUT, takes_audio=False, price=12,
       support={"local": "local", "sunoapi": "remote", "newapi": "remote"}, **MUSIC),
    _t("extend", "continue a track from continue_at; the output is the whole song",
       EXTEND_IN, AUDIO_OUT, required=("audio",), price=12,
       support={"local": "local", "sunoapi": "remote", "newapi": "remote"}, **MUSIC),
    _t("upload_cover", "re-imagine an uploaded track in a new style", GENERATE_IN, AUDIO_OUT,
       required=("audio",), price=12, **MUSIC),
    _t("upload_extend", "extend an uploaded track", EXTEND_IN, AUDIO_OUT, required=("audio",),
       price=12, support={"local": "local", "sunoapi": "remote", "newapi": "remote"}, **MUSIC),
    _t("add_vocals", "sing over an instrumental",
       {k: GENERATE_IN[k] for k in ("prompt", "style", "title", "negative_tags", "model",
                                    "vocal_gender", *WEIGHTS)},
       AUDIO_OUT, required=("audio", "prompt", "style", "title"), price=12, **MUSIC),
    _t("add_instrumental", "build an accompaniment under a vocal or melody",
       {"tags": text("style tags of the accompaniment"),
        **{k: GENERATE_IN[k] for k in ("title", "negative_tags", "model", "vocal_gender",
                                       *WEIGHTS)}},
       AUDIO_OUT, required=("audio", "tags", "title"), price=12, **MUSIC),
    _t("cover", "cover artwork images for a generated track (usually two); not a musical "
       "cover: upload_cover makes a new song from uploaded audio", {},
       {"images": ("list", URL_FILE), "task_id": "str"}, required=("audio",), price=1,
       expected=30.0),
    _t("lyrics", "write lyrics (several variants)",
       {"prompt": text("what the song is about (at most 200 words)")},
       {"texts": ("list", {"title": "str", "text": "str"}), "text": "str", "title": "str",
        "task_id": "str"},
       required=("prompt",), takes_audio=False, price=1, expected=10.0,
       support={"local": "local", "sunoapi": "remote", "newapi": "remote"}),
    _t("timestamped_lyrics", "align the lyrics of a generated track to its audio", {},
       {"words": ("list", {"word": "str", "start": "num", "end": "num"}), "lrc": "file"},
       required=("audio",), expected=10.0),
    _t("separate", "split a track into vocals and instrumental, or into stems",
       {"type": choice("separate_vocal (2 stems) or split_stem (up to 12)",
                       "separate_vocal", "split_stem")},
       {"stems": {name: URL_FILE for name in STEM_NAMES}, "task_id": "str"},
       required=("audio",), price=10, expected=90.0,
       price_by=("type", "separate_vocal", {"split_stem": 50})),
    _t("convert", "convert a track to WAV (by the service when it can), FLAC or MP3",
       {"format": FORMAT, "bitrate": BITRATE},
       {"tracks": ("list", TRACK), "file": "file", "url": "str", "task_id": "str"},
       required=("audio",), price=1, expected=30.0,
       support={"local": "local", "sunoapi": "remote", "newapi": "local"},
       service_values=(("format", "wav", ("wav",)),), service_tracks=True),
    _t("boost_style", "expand a few style words into a detailed style",
       {"content": text("style words to expand, e.g. 'Pop, Mysterious'")},
       {"text": "str"}, required=("content",), takes_audio=False, price=1, expected=5.0),
    _t("video", "an MP4 of a track with artwork and a waveform",
       {"author": text("artist name shown in the video (at most 50 characters)"),
        "domain_name": text("watermark text (at most 50 characters)")},
       {**URL_FILE, "task_id": "str"}, required=("audio",), price=2, expected=60.0),
    _t("concat", "join clips end to end",
       {"clips": {"type": ["array", "string"], "description": "tracks to join, in order"}},
       LOCAL_AUDIO_OUT, required=("clips",), takes_audio=False, support=dict(LOCAL_EVERYWHERE)),
    _t("trim", "keep the part of a track between start and end",
       {"start": number("seconds", minimum=0), "end": number("seconds", exclusive_minimum=0)},
       LOCAL_AUDIO_OUT, required=("audio",), support=dict(LOCAL_EVERYWHERE)),
    _t("fade", "fade a track in and out",
       {"in": number("fade-in seconds", minimum=0), "out": number("fade-out seconds", minimum=0)},
       LOCAL_AUDIO_OUT, required=("audio",), support=dict(LOCAL_EVERYWHERE)),
    _t("normalize", "normalise loudness (EBU R128)",
       {"lufs": number("target integrated loudness (default -14)", minimum=-70, maximum=-5)},
       LOCAL_AUDIO_OUT, required=("audio",), support=dict(LOCAL_EVERYWHERE)),
    _t("transcode", "convert a track's format on this machine (never a service call)",
       {"format": FORMAT, "bitrate": BITRATE},
       LOCAL_AUDIO_OUT, required=("audio",), support=dict(LOCAL_EVERYWHERE)),
    _t("tag", "write tags (title, artist, album, track, genre, year, lyrics) into a copy of "
       "an MP3, FLAC or WAV track",
       {"title": text("the title"), "artist": text("the artist"), "album": text("the album"),
        "track": {"type": ["integer", "string"], "description": "track number, e.g. 3 or "
                  "'3/12'"},
        "genre": text("the genre"),
        "year": {"type": ["integer", "string"], "description": "the year, e.g. 2025"},
        "lyrics": text("unsynchronised lyrics")},
       LOCAL_AUDIO_OUT, required=("audio",), support=dict(LOCAL_EVERYWHERE)),
]}

TAG_FIELDS = ("title", "artist", "album", "track", "genre", "year", "lyrics")

# The names a provider block's `prices` may set: each type's, then each input value that a
# type prices apart (`price_by`: separate's split_stem), in that order.
PRICE_KEYS: tuple[str, ...] = (*sorted(TYPES), *(v for t in TYPES.values() if t.price_by
                                                 for v in t.price_by[2] if v not in TYPES))

PROVIDER_KINDS = ("local", "sunoapi", "newapi")

# Fields whose literal or rendered value `defaults:` may supply.
DEFAULTABLE = ("model", "vocal_gender", "negative_tags", "style_weight", "weirdness_constraint",
               "audio_weight", "persona_id", "persona_model", "instrumental", "bitrate",
               "format", "lufs", "author", "domain_name")
