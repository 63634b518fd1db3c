"""The service's models and the limits each imposes (shared/api/REFERENCE.md section 1.4).

Where sources disagree the sunoapi.org documentation wins: a non-custom prompt is at most
500 characters and a lyrics prompt at most 200 words. These limits are checked before any
request is sent: a 413 found after paying is a bug.
"""

from __future__ import annotations

import math
from typing import Any

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
LYRICS_WORDS = 200
SHORT_TEXT = {"author": 50, "domain_name": 50, "content": 500}
ADD_MODELS = ("V4_5PLUS", "V5", "V5_5")  # add_vocals and add_instrumental


def custom_mode(inputs: dict[str, Any]) -> bool:
    explicit = inputs.get("custom_mode")
    if isinstance(explicit, bool):
        return explicit
    return bool(inputs.get("style") or inputs.get("title"))


WEIGHT_FIELDS = ("style_weight", "weirdness_constraint", "audio_weight")

def check(step_type: str, inputs: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """Problems with rendered inputs: (field, message, hint). Non-string values that are still
    templates are skipped by the caller."""
    out: list[tuple[str, str, str | None]] = []
    model = inputs.get("model") if isinstance(inputs.get("model"), str) else None
    m = model or DEFAULT_MODEL

    def too_long(fld: str, limit: int, why: str, hint: str | None = None) -> None:
        v = inputs.get(fld)
        if isinstance(v, str) and len(v) > limit:
            out.append((fld, f"'{fld}' is {len(v)} characters; {why} allows at most {limit}",
                        hint or "shorten it" + ("" if model else f" (model {m} assumed)")))

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
        if step_type in ("generate", "upload_cover") and not custom_mode(inputs):
            too_long("prompt", PROMPT_NON_CUSTOM, "a non-custom-mode prompt",
                     "shorten the idea, or use custom mode (give a style and a title) with "
                     "the lyrics as the prompt")
            for fld in ("style", "title"):
                if inputs.get(fld):
                    out.append((fld, f"'{fld}' is only used in custom mode",
                                "drop custom_mode: false, or drop this field"))
        else:
            too_long("prompt", PROMPT_CUSTOM.get(m, 5000), f"model {m}")
        too_long("style", STYLE.get(m, 1000), f"model {m}")
        too_long("title", TITLE.get(m, 100), f"model {m}")
        if step_type in ("generate", "upload_cover") and custom_mode(inputs):
            if not inputs.get("style") and "style" in inputs:
                out.append(("style", "custom mode needs a non-empty 'style'", None))
    if step_type == "add_instrumental":
        too_long("tags", STYLE.get(m, 1000), f"model {m}")
        too_long("title", TITLE.get(m, 100), f"model {m}")
    if step_type in ("add_vocals", "add_instrumental") and model and model not in ADD_MODELS:
        out.append(("model", f"{step_type} accepts models {', '.join(ADD_MODELS)}; got {model}",
                    None))
    for fld, limit in SHORT_TEXT.items():
        too_long(fld, limit, step_type)
    if step_type == "trim":
        s, e = inputs.get("start"), inputs.get("end")
        if isinstance(s, (int, float)) and isinstance(e, (int, float)) and e <= s:
            out.append(("end", f"'end' ({e}) must be after 'start' ({s})", None))
    return out
