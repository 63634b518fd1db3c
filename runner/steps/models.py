"""The service's models, the limits each imposes (shared/api/REFERENCE.md section 1.4) and
the rules each provider states about a request (sections 2.1-2.6, 3.2 and 5).

Where sources disagree the sunoapi.org documentation wins: a non-custom prompt is at most
500 characters and a lyrics prompt at most 200 words. These limits and rules are checked
before any request is sent (a 400 or 413 found after paying is a bug), by one function,
`check`, twice: by `sunoflow validate` and `run` on every value known before the run (the
others are UNKNOWN there), and by the engine on the rendered inputs of each instance,
before its request. Each rule is written once, here: `NEEDS` (a field a provider requires
when a condition holds) and `RULES` (a value a provider refuses).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

# V3_5 is on sunoapi.org's overview page (REFERENCE 5) and is a relay `mv` (chirp-v3-5).
MODELS = ("V3_5", "V4", "V4_5", "V4_5PLUS", "V4_5ALL", "V5", "V5_5")
DEFAULT_MODEL = "V4_5"

# The service's internal model names, as record-info reports them in `modelName`.
MODEL_NAMES = {
    "V3_5": "chirp-v3-5", "V4": "chirp-v4", "V4_5": "chirp-v4-5", "V4_5PLUS": "chirp-v4-5-plus",
    "V4_5ALL": "chirp-v4-5-all", "V5": "chirp-v5", "V5_5": "chirp-v5-5",
}

# V3_5 is older than V4 and no page gives it larger limits: it takes V4's (up to 4 min).
PROMPT_CUSTOM = {"V3_5": 3000, "V4": 3000}  # others 5000
PROMPT_NON_CUSTOM = 500
STYLE = {"V3_5": 200, "V4": 200}  # others 1000
TITLE = {"V3_5": 80, "V4": 80, "V4_5ALL": 80}  # others 100
UPLOAD_SECONDS = {"V4_5ALL": 60}  # others 480
UPLOAD_DEFAULT_SECONDS = 480
SONG_SECONDS = {"V3_5": 240, "V4": 240}  # the longest song each model makes: 4 min, others 8
SONG_DEFAULT_SECONDS = 480
LYRICS_WORDS = 200
SHORT_TEXT = {"author": 50, "domain_name": 50, "content": 500}
ADD_MODELS = ("V4_5PLUS", "V5", "V5_5")  # add_vocals and add_instrumental
MUSIC_TAKES = 2  # a music task answers with exactly two songs (REFERENCE 1.3)
REMOTE = ("sunoapi", "newapi")


class _Unknown:
    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Any = _Unknown()  # a value only the run will know (a template over step outputs)


def custom_mode(inputs: Mapping[str, Any]) -> bool:
    """Whether a generate-like request is in custom mode (rendered inputs)."""
    explicit = inputs.get("custom_mode")
    if isinstance(explicit, bool):
        return explicit
    return bool(inputs.get("style") or inputs.get("title"))


# --- three-valued views of inputs that may be UNKNOWN: True, False or None (unknown) ----

Tri = bool | None


def given(i: Mapping[str, Any], name: str) -> Tri:
    """Whether a field has a value the request will carry (not absent, null or empty). A
    template counts as given before the run (it almost always renders a value, and a rule
    it triggers must be known before anything is paid); rendered, it is checked again."""
    v = i.get(name)
    if v is UNKNOWN:
        return True
    return v is not None and v != "" and v != [] and v != {}


def is_true(i: Mapping[str, Any], name: str) -> Tri:
    v = i.get(name)
    return None if v is UNKNOWN else bool(v)


def _any(*vals: Tri) -> Tri:
    if any(v is True for v in vals):
        return True
    return None if any(v is None for v in vals) else False


def _all(*vals: Tri) -> Tri:
    if any(v is False for v in vals):
        return False
    return None if any(v is None for v in vals) else True


def _not(v: Tri) -> Tri:
    return None if v is None else not v


def custom(i: Mapping[str, Any]) -> Tri:
    """custom_mode, three-valued: explicit, else whether style or title is given."""
    explicit = i.get("custom_mode")
    if isinstance(explicit, bool):
        return explicit
    if explicit is UNKNOWN:
        return None
    return _any(given(i, "style"), given(i, "title"))


def extend_custom(i: Mapping[str, Any]) -> Tri:
    """An extend sends its own parameters (defaultParamFlag true) when any is given."""
    return _any(*(given(i, k) for k in ("continue_at", "prompt", "style", "title")))


def _source(i: Mapping[str, Any], name: str) -> Any:
    """A field of the `audio` track (the source of an extend), UNKNOWN before the run, None
    when `audio` is not a track (a path or URL has no title or style)."""
    audio = i.get("audio")
    if audio is UNKNOWN:
        return UNKNOWN
    return audio.get(name) if isinstance(audio, dict) else None


def _number(v: Any) -> TypeGuard[float]:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# --- the rules, as data -------------------------------------------------------------------

Problem = tuple[str, str, str | None]  # (field, message, hint)


@dataclass(frozen=True)
class Need:
    """A field that `providers` require in a `types` request whenever `when` holds (None:
    not known before the run, checked when rendered). `default` is what the provider sends
    when the recipe gives none (the source track's style and title for an extend)."""

    types: tuple[str, ...]
    providers: tuple[str, ...]
    field: str
    when: Callable[[Mapping[str, Any]], Tri]
    why: str
    hint: str | None = None
    default: Callable[[Mapping[str, Any]], Any] | None = None


def _always(_i: Mapping[str, Any]) -> Tri:
    return True


GENERATE_LIKE = ("generate", "upload_cover")
EXTEND_LIKE = ("extend", "upload_extend")
SA = ("sunoapi",)
NA = ("newapi",)

NEEDS: tuple[Need, ...] = (
    # REFERENCE 2.1 and 2.3: custom mode sends style and title, and the lyrics unless
    # instrumental; without custom mode the prompt is the idea and is always required.
    Need(GENERATE_LIKE, SA, "style", custom, "in custom mode",
         "give a style, or drop title and custom_mode to let the service choose"),
    Need(GENERATE_LIKE, SA, "title", custom, "in custom mode",
         "give a title, or drop style and custom_mode to let the service choose"),
    Need(GENERATE_LIKE, SA, "prompt",
         lambda i: _all(custom(i), _not(is_true(i, "instrumental"))),
         "in custom mode unless instrumental (the prompt is the lyrics)",
         "give the lyrics as prompt, or set instrumental: true"),
    Need(GENERATE_LIKE, SA, "prompt", lambda i: _not(custom(i)),
         "without custom mode (the prompt describes the song)",
         "describe the song in prompt, or give a style and a title (custom mode)"),
    # The relay refuses a music request without any text ("prompt_empty", REFERENCE 3.2).
    Need(("generate",), NA, "prompt", _always, "(the relay refuses a request with no text)",
         "describe the song in prompt, or give a style", default=lambda i: i.get("style")
         if custom(i) is not False else None),
    # REFERENCE 2.2: defaultParamFlag true (any own parameter given) needs continueAt, style
    # and title, and the prompt unless instrumental; style and title default to the
    # source track's.
    Need(("extend",), SA, "continue_at", extend_custom,
         "when it gives prompt, style or title (the service then needs all of its own "
         "parameters)", "say where the extension starts, e.g. continue_at: "
         "\"{{ steps.song.tracks[0].duration - 30 }}\""),
    Need(("extend",), SA, "style", extend_custom, "when it gives its own parameters, and "
         "the source track has no style", default=lambda i: _source(i, "tags")),
    Need(("extend",), SA, "title", extend_custom, "when it gives its own parameters, and "
         "the source track has no title", default=lambda i: _source(i, "title")),
    Need(("extend",), SA, "prompt",
         lambda i: _all(extend_custom(i), _not(is_true(i, "instrumental"))),
         "when it gives continue_at, style or title, unless instrumental (the service "
         "answers 400 'prompt is required')",
         "give the lyrics of the extension as prompt, or set instrumental: true"),
    # REFERENCE 2.4: the page text and the schema disagree on what an upload-extend
    # without its own parameters needs (the prompt, or nothing): sunoflow always sends
    # them, so every reading accepts the request.
    Need(("upload_extend",), SA, "continue_at", _always,
         "(where the extension of the uploaded audio starts)", "e.g. continue_at: 60"),
    Need(("upload_extend",), SA, "style", _always, "unless audio is a track that has one",
         default=lambda i: _source(i, "tags")),
    Need(("upload_extend",), SA, "title", _always, "unless audio is a track that has one",
         default=lambda i: _source(i, "title")),
    Need(("upload_extend",), SA, "prompt", lambda i: _not(is_true(i, "instrumental")),
         "unless instrumental (the lyrics of the extension)",
         "give the lyrics as prompt, or set instrumental: true"),
    # The relay's continuation needs continue_at (REFERENCE 3.2, new-api).
    Need(EXTEND_LIKE, NA, "continue_at", _always, "(the relay's continuation needs it)",
         "e.g. continue_at: \"{{ steps.song.tracks[0].duration - 30 }}\""),
    # REFERENCE 2.6 and 2.5: required, and an empty value is not a value. negativeTags is
    # documented as required too; whether the service takes an empty one is not, so it
    # must be given (a recipe that validates is accepted under either reading).
    *(Need(("add_vocals",), SA, f, _always, "(the service requires it)")
      for f in ("prompt", "style", "title")),
    *(Need(("add_instrumental",), SA, f, _always, "(the service requires it)")
      for f in ("tags", "title")),
    Need(("add_vocals", "add_instrumental"), SA, "negative_tags", _always,
         "(the service requires negativeTags, and does not say that an empty one will do)",
         "name styles to avoid, e.g. negative_tags: heavy metal (or set it once in "
         "defaults:)"),
    Need(("lyrics",), (*SA, *NA), "prompt", _always, "(the service requires it)"),
    Need(("boost_style",), SA, "content", _always, "(the service requires it)"),
)


@dataclass(frozen=True)
class Rule:
    """A value `providers` refuse in a `types` request: `test` returns the problems it
    finds among values that are known (it ignores UNKNOWN ones)."""

    types: tuple[str, ...]
    providers: tuple[str, ...]
    test: Callable[[str, Mapping[str, Any]], list[Problem]]


def _continue_at(kind: str, i: Mapping[str, Any]) -> list[Problem]:
    """continueAt > 0 and < the source's duration (REFERENCE 2.2, 2.4, 3.2); an upload is
    at most 8 minutes (1 for V4_5ALL), so nothing past that can be a start."""
    at = i.get("continue_at")
    if not _number(at):
        return []
    if at <= 0:
        return [("continue_at", f"'continue_at' must be more than 0; got {at}",
                 "the extension starts that many seconds into the source")]
    duration = _source(i, "duration")
    if _number(duration):
        if at >= duration:
            return [("continue_at", f"'continue_at' ({at}) must be before the end of the "
                     f"source track ({duration} s)", "e.g. a few seconds before its end")]
    elif duration is None and kind == "upload_extend" and isinstance(i.get("audio"), str):
        limit = upload_seconds(i)
        if at >= limit:
            return [("continue_at", f"'continue_at' ({at}) is past the end of any upload: "
                     f"the service takes at most {limit} s of audio" + _model_note(i),
                     None)]
    elif kind == "extend":
        # The source's length is known only once it exists, but no model makes a song
        # longer than SONG_SECONDS (REFERENCE 1.4): a start past that is past any end.
        model = i.get("model")
        limit = SONG_SECONDS.get(model, SONG_DEFAULT_SECONDS) if isinstance(model, str) \
            else SONG_DEFAULT_SECONDS
        if at >= limit:
            return [("continue_at", f"'continue_at' ({at}) is past the end of any song "
                     + (f"model {model} makes" if isinstance(model, str) else "the service "
                        "makes") + f" (at most {limit} s)", None)]
    return []


def upload_seconds(i: Mapping[str, Any]) -> int:
    model = i.get("model")
    return UPLOAD_SECONDS.get(model, UPLOAD_DEFAULT_SECONDS) if isinstance(model, str) \
        else UPLOAD_DEFAULT_SECONDS


def _model_note(i: Mapping[str, Any]) -> str:
    model = i.get("model")
    return f" with model {model}" if isinstance(model, str) and model in UPLOAD_SECONDS else ""


def _upload_length(kind: str, i: Mapping[str, Any]) -> list[Problem]:
    """An uploaded source is at most 8 minutes, 1 minute with V4_5ALL (REFERENCE 1.4)."""
    duration = _source(i, "duration")
    limit = upload_seconds(i)
    if _number(duration) and duration > limit:
        return [("audio", f"the audio is {duration} s long; {kind} takes at most {limit} s"
                 + _model_note(i), "trim it first (uses: trim)")]
    return []


def _same_model(kind: str, i: Mapping[str, Any]) -> list[Problem]:
    """An extend's model must match the source track's (REFERENCE 2.2)."""
    model, source = i.get("model"), _source(i, "model")
    if isinstance(model, str) and isinstance(source, str) and source in MODELS \
            and model != source:
        return [("model", f"'model' ({model}) must match the source track's model "
                 f"({source})", "drop model: an extend uses the source's model")]
    return []


def _persona(kind: str, i: Mapping[str, Any]) -> list[Problem]:
    """personaId is for custom mode only (REFERENCE 2.1)."""
    if given(i, "persona_id") is True and custom(i) is False:
        return [("persona_id", "'persona_id' is used in custom mode only",
                 "give a style and a title (custom mode), or drop persona_id")]
    return []


def _relay_audio(kind: str, i: Mapping[str, Any]) -> list[Problem]:
    """The relay imports audio by URL only (/suno/uploads/audio-url, REFERENCE 3.2)."""
    audio = i.get("audio")
    if isinstance(audio, str) and audio and not audio.startswith(("http://", "https://")):
        return [("audio", f"{kind} on newapi takes audio by URL; {audio!r} is a local file "
                 "(the relay has no file upload)",
                 "give an http(s) URL or a track the relay made")]
    return []


RULES: tuple[Rule, ...] = (
    Rule(EXTEND_LIKE, REMOTE, _continue_at),
    Rule(("upload_cover", "upload_extend"), SA, _upload_length),
    Rule(("extend",), SA, _same_model),
    Rule(GENERATE_LIKE, SA, _persona),
    Rule(("upload_extend",), NA, _relay_audio),
)


def takes(step_type: Any, take: Any) -> int | None:
    """How many tracks a step's `tracks` output holds: two for a music task (one when
    `take` keeps one), one for the others; None for a step type without tracks."""
    outputs = getattr(step_type, "outputs", None)
    if not isinstance(outputs, dict) or "tracks" not in outputs:
        return None
    if getattr(step_type, "pace", "") == "music":
        return 1 if take in (0, 1) and not isinstance(take, bool) else MUSIC_TAKES
    return 1


WEIGHT_FIELDS = ("style_weight", "weirdness_constraint", "audio_weight")


def check(step_type: str, inputs: Mapping[str, Any], provider: str = "local"
          ) -> list[Problem]:
    """Problems with a request's inputs, for the provider that will send it: (field,
    message, hint). A value that only the run will know is UNKNOWN: what depends on it is
    checked when it is rendered (the engine calls this again then)."""
    out: list[Problem] = []
    model = inputs.get("model") if isinstance(inputs.get("model"), str) else None
    m = model or DEFAULT_MODEL

    def too_long(fld: str, limit: int, why: str, hint: str | None = None) -> None:
        v = inputs.get(fld)
        if isinstance(v, str) and len(v) > limit:
            out.append((fld, f"'{fld}' is {len(v)} characters; {why} allows at most {limit}",
                        hint or "shorten it" + ("" if model else f" (model {m} assumed)")))

    for need in NEEDS:
        if step_type not in need.types or provider not in need.providers:
            continue
        if need.when(inputs) is not True or given(inputs, need.field) is not False:
            continue
        fallback = need.default(inputs) if need.default is not None else None
        if fallback is UNKNOWN or (fallback is not None and fallback != ""):
            continue
        out.append((need.field, f"{step_type} on {provider} needs '{need.field}' {need.why}",
                    need.hint))
    for rule in RULES:
        if step_type in rule.types and provider in rule.providers:
            out.extend(rule.test(step_type, inputs))
    for fld in WEIGHT_FIELDS:
        w = inputs.get(fld)
        if isinstance(w, (int, float)) and not isinstance(w, bool):
            if not math.isfinite(w) or not 0 <= w <= 1:
                out.append((fld, f"'{fld}' must be a number from 0 to 1; got {w}", None))
            elif abs(w * 100 - round(w * 100)) > 1e-6:
                out.append((fld, f"'{fld}' takes at most two decimals; got {w}",
                            f"e.g. {round(w, 2)}"))
    if step_type == "lyrics":
        p = inputs.get("prompt")
        if isinstance(p, str) and len(p.split()) > LYRICS_WORDS:
            out.append(("prompt", f"'prompt' is {len(p.split())} words; lyrics allows at most "
                        f"{LYRICS_WORDS}", "describe the song in fewer words"))
    if step_type in ("generate", "upload_cover", "extend", "upload_extend", "add_vocals"):
        mode = custom(inputs) if step_type in GENERATE_LIKE else True
        if mode is False:
            too_long("prompt", PROMPT_NON_CUSTOM, "a non-custom-mode prompt",
                     "shorten the idea, or use custom mode (give a style and a title) with "
                     "the lyrics as the prompt")
            for fld in ("style", "title"):
                if given(inputs, fld):
                    out.append((fld, f"'{fld}' is only used in custom mode",
                                "drop custom_mode: false, or drop this field"))
        elif mode is True:
            too_long("prompt", PROMPT_CUSTOM.get(m, 5000), f"model {m}")
        too_long("style", STYLE.get(m, 1000), f"model {m}")
        too_long("title", TITLE.get(m, 100), f"model {m}")
    if step_type == "add_instrumental":
        too_long("tags", STYLE.get(m, 1000), f"model {m}")
        too_long("title", TITLE.get(m, 100), f"model {m}")
        too_long("negative_tags", 200, "add_instrumental")
    if step_type in ("add_vocals", "add_instrumental") and model and model not in ADD_MODELS:
        out.append(("model", f"{step_type} accepts models {', '.join(ADD_MODELS)}; got {model}",
                    None))
    for fld, limit in SHORT_TEXT.items():
        too_long(fld, limit, step_type)
    if step_type == "trim":
        s, e = inputs.get("start"), inputs.get("end")
        if _number(s) and _number(e) and e <= s:
            out.append(("end", f"'end' ({e}) must be after 'start' ({s})", None))
    return out
