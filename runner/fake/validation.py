"""Request checks of the sunoapi.org protocol: required fields, types, enums and the
per-model length limits of REFERENCE 1.4. A failed check raises ApiError with the
documented code: 400 for a missing or invalid field, 413 for a too-long text.
"""

from __future__ import annotations

import math
import re
from typing import Any

from runner.fake import content
from runner.fake.server import ApiError, Request

MODELS = ("V3_5", "V4", "V4_5", "V4_5PLUS", "V4_5ALL", "V5", "V5_5")
ADD_MODELS = ("V4_5PLUS", "V5", "V5_5")  # add-vocals / add-instrumental
MODEL_NAMES = {
    "V3_5": "chirp-v3-5",
    "V4": "chirp-v4",
    "V4_5": "chirp-v4-5",
    "V4_5PLUS": "chirp-v4-5-plus",
    "V4_5ALL": "chirp-v4-5-all",
    "V5": "chirp-v5",
    "V5_5": "chirp-v5-5",
}
NON_CUSTOM_PROMPT_LIMIT = 500
LYRICS_PROMPT_WORDS = 200


def prompt_limit(model: str) -> int:
    return 3000 if model in ("V3_5", "V4") else 5000


def style_limit(model: str) -> int:
    return 200 if model in ("V3_5", "V4") else 1000


def title_limit(model: str) -> int:
    return 80 if model in ("V3_5", "V4", "V4_5ALL") else 100


def source_limit(model: str) -> float:
    """Longest uploaded source in seconds: 8 min, 1 min for V4_5ALL."""
    return 60.0 if model == "V4_5ALL" else 480.0


def json_object(req: Request) -> dict[str, Any]:
    if not isinstance(req.json, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return req.json


def string(
    body: dict[str, Any], key: str, *, required: bool = True, allow_empty: bool = False
) -> str | None:
    value = body.get(key)
    if value is None or (value == "" and not allow_empty):
        if required:
            raise ApiError(400, f"{key} is required")
        return None
    if not isinstance(value, str):
        raise ApiError(400, f"{key} must be a string")
    if required and not allow_empty and not value.strip():
        raise ApiError(400, f"{key} is required")
    return value


def required_string(body: dict[str, Any], key: str, *, allow_empty: bool = False) -> str:
    value = string(body, key, allow_empty=allow_empty)
    assert value is not None
    return value


def boolean(body: dict[str, Any], key: str, *, required: bool = True) -> bool | None:
    value = body.get(key)
    if value is None:
        if required:
            raise ApiError(400, f"{key} is required")
        return None
    if not isinstance(value, bool):
        raise ApiError(400, f"{key} must be true or false")
    return value


def number(body: dict[str, Any], key: str, *, required: bool = True) -> float | None:
    value = body.get(key)
    if value is None:
        if required:
            raise ApiError(400, f"{key} is required")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ApiError(400, f"{key} must be a number")
    return float(value)


def model_field(
    body: dict[str, Any], allowed: tuple[str, ...] = MODELS, default: str | None = None
) -> str:
    model = body.get("model", default)
    if model is None:
        raise ApiError(400, "model is required")
    if model not in allowed:
        raise ApiError(400, f"model must be one of {', '.join(allowed)}; got {model!r}")
    return str(model)


def callback(body: dict[str, Any], *, required: bool = True) -> None:
    url = string(body, "callBackUrl", required=required)
    if url is not None and not re.match(r"^https?://[^\s/]+", url):
        raise ApiError(400, "callBackUrl must be an http(s) URL")


def check_length(key: str, value: str | None, limit: int, model: str | None = None) -> None:
    if value is not None and len(value) > limit:
        scope = f" for model {model}" if model else ""
        raise ApiError(
            413, f"{key} is too long: {len(value)} characters, the limit{scope} is {limit}"
        )


def optional_fields(body: dict[str, Any]) -> None:
    """The optional fields shared by the music family."""
    gender = body.get("vocalGender")
    if gender is not None and gender not in ("m", "f"):
        raise ApiError(400, "vocalGender must be 'm' or 'f'")
    for key in ("styleWeight", "weirdnessConstraint", "audioWeight"):
        value = number(body, key, required=False)
        if value is None:
            continue
        if not 0.0 <= value <= 1.0:
            raise ApiError(400, f"{key} must be between 0 and 1")
        if abs(value * 100 - round(value * 100)) > 1e-6:
            raise ApiError(400, f"{key} must be a multiple of 0.01")
    persona_model = body.get("personaModel")
    if persona_model is not None and persona_model not in ("style_persona", "voice_persona"):
        raise ApiError(400, "personaModel must be style_persona or voice_persona")
    for key in ("negativeTags", "personaId"):
        string(body, key, required=False, allow_empty=True)


def song_fields(
    body: dict[str, Any], custom: bool, instrumental: bool, model: str
) -> tuple[str, str, str]:
    """(title, tags, lyrics) of a generate-like request, checked against 2.1's rules."""
    if custom:
        style = required_string(body, "style")
        title = required_string(body, "title")
        prompt = string(body, "prompt", required=not instrumental)
        check_length("prompt", prompt, prompt_limit(model), model)
        check_length("style", style, style_limit(model), model)
        check_length("title", title, title_limit(model), model)
        return title, style, "" if instrumental else (prompt or "")
    prompt = required_string(body, "prompt")
    check_length("prompt", prompt, NON_CUSTOM_PROMPT_LIMIT)
    lyrics = "" if instrumental else content.lyrics_from(prompt)
    return content.title_from(prompt), content.tags_from(prompt), lyrics
