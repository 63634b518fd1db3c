"""The fake's configuration: defaults, validation, merging, prices and latency draws.

A configuration is a plain JSON object (from `--config FILE`, from `FakeServer(**options)`
and from `POST /_fake/config`, which merges objects key by key and replaces lists):

    seed                   int, default 0: seeds latency draws, ids and fault probabilities
    latency_scale          wall seconds per model second, default 0 (done on first poll)
    latency                {op: dist}; dist is {"dist": "fixed", "value": s}
                           | {"dist": "uniform", "low": a, "high": b}
                           | {"dist": "lognormal", "median": m | "mu": mu, "sigma": s},
                           each with optional "min"/"max" clamps; "generate" also covers
                           the other music ops, "*" covers every op not listed
    faults                 [{"match": {...}, "action": {...}, "times": N|null,
                             "probability": p}], first matching rule wins
                           match: path (glob), method, op, json (subset of the body)
                           action: envelope_code [+ http_status, message] | http_status
                           [+ after_create] | reset [+ after_create] | delay (s) |
                           fail_task [+ code, message] | truncate_download |
                           slow_download (bytes/s) | expired [+ status]
                           hostile answers (the task is created first, as after_create):
                           patch (an object merged into the JSON answer, lists item
                           by item: wrong types),
                           nest (N: a key "deep" holding N nested lists), escape_json (every
                           letter and digit of its strings as \\u00XX), endless (true:
                           the answer's body never ends), drip (bytes/s for any answer)
    rate_limit             {"requests": N, "per_seconds": S} (wall time) or null
    api_key                require "Authorization: Bearer KEY", or null
    credits                starting balance, default 1_000_000
    prices                 {op: credits} overriding PRICES
    clip_duration          seconds of a generated clip, default 30
    continuation_duration  seconds an extend adds, default 30
    upload_duration        seconds assumed for URLs outside the fake (no network)
    clips_per_task         default 2
    lyrics_variants        default 2
    extend_returns         "whole" | "continuation" | null (sunoapi whole, relay continuation)
    relay_extras           relay concat and upload endpoints on (default) or off
    empty_required         "accept" (default) | "refuse": whether an empty negativeTags,
                           documented as required on add-vocals and add-instrumental
                           (REFERENCE 2.5, 2.6), counts as given; the docs do not say
    callbacks              null (default: no callbacks are sent) or {"delay": s,
                           "jitter": s, "duplicate": p, "loss": p, "timeout": s}: sunoapi
                           POSTs each stage (text, first, complete; error for a failed task)
                           to the submit's callBackUrl, `delay` fake seconds after the stage
                           is reached plus a uniform draw from [0, jitter] (so stages and
                           copies may arrive out of order); `duplicate`: probability of a
                           second copy; `loss`: probability a delivery is dropped; `timeout`
                           (default 15): how long it waits for the answer. Only loopback
                           URLs are called; any other counts as a failed delivery, and a
                           failed last stage makes record-info say CALLBACK_EXCEPTION.
                           The relay POSTs its task object to a submit's `notify_hook`
                           when the task ends (same keys).
    record_style           "sunoapi" (default): music record-info lists
                           `response.sunoData[]` camelCase; "apibox": `response.data[]`
                           snake_case, as api.box's page shows (REFERENCE 5)
    running_status         null (default: PENDING, TEXT_SUCCESS, FIRST_SUCCESS) or a word
                           a running music task reports instead (the quick start's
                           GENERATING; any word plays a host's undocumented one)
    relay_fail_status      "FAILURE" (default, new-api's TaskDto) | "FAIL" (the relay page)
    credits_endpoint       "credit" (default: GET /api/v1/generate/credit, data = integer)
                           | "get-credits" (only GET /api/v1/get-credits, data.credits, as
                           the quick start's sample reads it) | "both" | "none"
    unfinished_work        sunoapi: "accept" (default) or "refuse" work on a music task that
                           has reached only its first stage (FIRST_SUCCESS): an extend, WAV,
                           MP4, stems, timestamps or replace-section of its first clip, or
                           cover art of the task. Undocumented (REFERENCE 5), so both
                           readings are played. "refuse" answers with `unfinished_refusal`
                           and, like every refusal, creates no task and costs nothing.
    aligned_words          sunoapi timestamped lyrics, what each `alignedWords[].word`
                           holds (REFERENCE 2.10 does not say): "plain" (default: the sung
                           word alone), "leading" (a word and its space; a line's first
                           word carries the break and the section tags before it:
                           "[Chorus]\\nWe ") or "trailing" (a line's last word ends with
                           the break, "sky\\n"; a section tag is a word of its own)
    unfinished_refusal     how "refuse" answers: {"code": 400, "http_status": null,
                           "message": "task {task_id} has not finished"}; code is the
                           envelope code (an int or a string), http_status the HTTP status
                           (null: 200, as the service's own envelopes), message a text in
                           which {task_id} names the unfinished task
    record_lag             sunoapi: model seconds (x latency_scale, like latencies; default
                           0) for which the work endpoints' record of a music task lags its
                           end: record-info already says SUCCESS and the callbacks are sent,
                           but an extend, WAV, MP4, stems, timestamps, replace-section or
                           cover art request that reads the task is refused with
                           `unfinished_refusal` (whatever `unfinished_work` says), creating
                           no task and costing nothing, as a host whose work endpoints read
                           a replica that has not caught up would
    record_lag_answer      how that lag refuses (nothing documents it, so each plausible
                           reading is played): "unfinished" (default: `unfinished_refusal`,
                           words saying the task has not finished), or a bare envelope code
                           that does not say why, as REFERENCE 1.2's table words it: "404"
                           (`not found`: the replica does not know the clip yet), "400"
                           (`validation error`) or "422" (`validation error`)
    record_lag_refusals    null (default) or N: the lag also ends once it has refused N
                           requests that read the task (counted per task), whatever the
                           clock says. A lag measured in answers rather than time: a test
                           decides how many refusals a run meets, not how fast it runs

`validate` is the one place that checks it; every other module indexes it without checks.
"""

from __future__ import annotations

import copy
import math
import random
from typing import Any

# Integer credits per operation. The real services publish prices only on billing pages;
# these follow third-party figures (REFERENCE 1.3) rounded to integers.
PRICES: dict[str, int] = {
    "generate": 12,
    "extend": 12,
    "upload_cover": 12,
    "upload_extend": 12,
    "add_vocals": 12,
    "add_instrumental": 12,
    "replace_section": 5,
    "lyrics": 1,
    "separate_vocal": 10,
    "split_stem": 50,
    "split_stem_advanced": 20,
    "wav": 1,
    "mp4": 2,
    "cover": 1,
    "style": 1,
    "persona": 0,
    "timestamped_lyrics": 0,
    "recovery": 0,
    "concat": 0,
    "upload": 0,
}

# Model time in seconds; `latency_scale` turns it into wall time. Music takes 2-3 minutes
# (REFERENCE 1.3), the derived products less.
LATENCY: dict[str, dict[str, Any]] = {
    "generate": {"dist": "lognormal", "median": 150.0, "sigma": 0.25, "min": 60.0, "max": 400.0},
    "lyrics": {"dist": "uniform", "low": 5.0, "high": 15.0},
    "separate_vocal": {"dist": "uniform", "low": 30.0, "high": 90.0},
    "split_stem": {"dist": "uniform", "low": 60.0, "high": 180.0},
    "split_stem_advanced": {"dist": "uniform", "low": 60.0, "high": 180.0},
    "wav": {"dist": "uniform", "low": 10.0, "high": 40.0},
    "mp4": {"dist": "uniform", "low": 30.0, "high": 90.0},
    "cover": {"dist": "uniform", "low": 10.0, "high": 30.0},
    "recovery": {"dist": "fixed", "value": 4.0},
    "concat": {"dist": "uniform", "low": 10.0, "high": 30.0},
    "upload": {"dist": "uniform", "low": 5.0, "high": 15.0},
}
# Operations that default to the music latency when not configured.
MUSIC_OPS = frozenset(
    {
        "generate",
        "extend",
        "upload_cover",
        "upload_extend",
        "add_vocals",
        "add_instrumental",
        "replace_section",
    }
)

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "latency_scale": 0.0,
    "latency": {},
    "faults": [],
    "rate_limit": None,
    "api_key": None,
    "credits": 1_000_000,
    "prices": {},
    "clip_duration": 30.0,
    "continuation_duration": 30.0,
    "upload_duration": None,
    "clips_per_task": 2,
    "lyrics_variants": 2,
    "extend_returns": None,
    "relay_extras": True,
    "empty_required": "accept",
    "callbacks": None,
    "record_style": "sunoapi",
    "running_status": None,
    "relay_fail_status": "FAILURE",
    "credits_endpoint": "credit",
    "unfinished_work": "accept",
    "unfinished_refusal": {},
    "record_lag": 0.0,
    "record_lag_answer": "unfinished",
    "record_lag_refusals": None,
    "aligned_words": "plain",
}
CHOICES: dict[str, tuple[Any, ...]] = {
    "record_style": ("sunoapi", "apibox"),
    "relay_fail_status": ("FAILURE", "FAIL"),
    "credits_endpoint": ("credit", "get-credits", "both", "none"),
    "unfinished_work": ("accept", "refuse"),
    "empty_required": ("accept", "refuse"),
    "aligned_words": ("plain", "leading", "trailing"),
    "record_lag_answer": ("unfinished", "404", "400", "422"),
}
# The bare answers of `record_lag_answer`: envelope code -> message, words from REFERENCE
# 1.2's table that say nothing of why.
BARE_REFUSALS: dict[str, tuple[int, str]] = {"404": (404, "not found"),
                                             "400": (400, "validation error"),
                                             "422": (422, "validation error")}
REFUSAL_KEYS: dict[str, Any] = {"code": 400, "http_status": None,
                                "message": "task {task_id} has not finished"}
CALLBACK_KEYS = {"delay": 0.0, "jitter": 0.0, "duplicate": 0.0, "loss": 0.0, "timeout": 15.0}

MATCH_KEYS = frozenset({"path", "method", "op", "json"})
ACTION_KEYS = frozenset(
    {
        "envelope_code",
        "http_status",
        "after_create",
        "delay",
        "reset",
        "fail_task",
        "code",
        "message",
        "truncate_download",
        "slow_download",
        "expired",
        "status",
        "patch",
        "nest",
        "endless",
        "drip",
        "escape_json",
    }
)
# At least one of these makes an action do something.
MAIN_ACTIONS = ACTION_KEYS - {"after_create", "code", "message", "status"}


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key."""


def _number(value: Any, where: str, *, low: float | None = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if low is not None and value < low:
        raise ConfigError(f"{where}: must be >= {low}, got {value!r}")
    return float(value)


def _validate_dist(spec: Any, where: str) -> None:
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected an object like {{'dist': 'fixed', 'value': 1}}")
    dist = spec.get("dist")
    allowed = {"dist", "min", "max"}
    if dist == "fixed":
        allowed |= {"value"}
        _number(spec.get("value"), f"{where}.value")
    elif dist == "uniform":
        allowed |= {"low", "high"}
        low = _number(spec.get("low"), f"{where}.low")
        if _number(spec.get("high"), f"{where}.high") < low:
            raise ConfigError(f"{where}: high must be >= low")
    elif dist == "lognormal":
        allowed |= {"mu", "median", "sigma"}
        if ("mu" in spec) == ("median" in spec):
            raise ConfigError(f"{where}: lognormal takes exactly one of 'mu' or 'median'")
        if "mu" in spec:
            _number(spec["mu"], f"{where}.mu", low=None)
        else:
            if _number(spec["median"], f"{where}.median") <= 0:
                raise ConfigError(f"{where}.median: must be > 0")
        _number(spec.get("sigma"), f"{where}.sigma")
    else:
        raise ConfigError(f"{where}.dist: expected fixed, uniform or lognormal, got {dist!r}")
    for key in ("min", "max"):
        if key in spec:
            _number(spec[key], f"{where}.{key}")
    unknown = set(spec) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)} for dist {dist!r}")


def _validate_fault(rule: Any, where: str) -> None:
    if not isinstance(rule, dict):
        raise ConfigError(f"{where}: expected an object with 'match' and 'action'")
    unknown = set(rule) - {"match", "action", "times", "probability"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}")
    match = rule.get("match", {})
    if not isinstance(match, dict) or set(match) - MATCH_KEYS:
        raise ConfigError(f"{where}.match: expected an object with keys from {sorted(MATCH_KEYS)}")
    for key in ("path", "method", "op"):
        if key in match and not isinstance(match[key], str):
            raise ConfigError(f"{where}.match.{key}: expected a string")
    if "json" in match and not isinstance(match["json"], dict):
        raise ConfigError(f"{where}.match.json: expected an object (a subset of the body)")
    action = rule.get("action")
    if not isinstance(action, dict) or not action:
        raise ConfigError(f"{where}.action: expected an object")
    unknown = set(action) - ACTION_KEYS
    if unknown:
        raise ConfigError(f"{where}.action: unknown key(s) {sorted(unknown)}")
    if not set(action) & MAIN_ACTIONS:
        raise ConfigError(f"{where}.action: needs one of {sorted(MAIN_ACTIONS)}")
    if "http_status" in action and not (
        isinstance(action["http_status"], int) and 100 <= action["http_status"] < 600
    ):
        raise ConfigError(f"{where}.action.http_status: expected an HTTP status code")
    if "envelope_code" in action and not isinstance(action["envelope_code"], int | str):
        raise ConfigError(f"{where}.action.envelope_code: expected an integer or a string")
    if "fail_task" in action and not isinstance(action["fail_task"], str):
        raise ConfigError(f"{where}.action.fail_task: expected a status name")
    for key in ("delay", "slow_download", "drip"):
        if key in action:
            _number(action[key], f"{where}.action.{key}")
    for key in ("slow_download", "drip"):
        if action.get(key) == 0:
            raise ConfigError(f"{where}.action.{key}: must be > 0 bytes per second")
    if "patch" in action and not isinstance(action["patch"], dict):
        raise ConfigError(f"{where}.action.patch: expected an object (merged into the answer)")
    if "nest" in action and (isinstance(action["nest"], bool)
                             or not isinstance(action["nest"], int) or action["nest"] < 1):
        raise ConfigError(f"{where}.action.nest: expected a positive integer (a depth)")
    for key in ("endless", "escape_json"):
        if key in action and not isinstance(action[key], bool):
            raise ConfigError(f"{where}.action.{key}: expected true or false")
    times = rule.get("times")
    if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 0):
        raise ConfigError(f"{where}.times: expected a non-negative integer or null")
    if "probability" in rule:
        p = _number(rule["probability"], f"{where}.probability")
        if p > 1:
            raise ConfigError(f"{where}.probability: must be between 0 and 1")


def validate(config: dict[str, Any]) -> dict[str, Any]:
    """Return `config` completed with defaults, or raise ConfigError naming the bad key."""
    if not isinstance(config, dict):
        raise ConfigError("the configuration must be a JSON object")
    unknown = set(config) - set(DEFAULTS)
    if unknown:
        raise ConfigError(
            f"unknown configuration key(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}"
        )
    full = copy.deepcopy(DEFAULTS)
    full.update(copy.deepcopy(config))
    if isinstance(full["seed"], bool) or not isinstance(full["seed"], int):
        raise ConfigError("seed: expected an integer")
    _number(full["latency_scale"], "latency_scale")
    if not isinstance(full["latency"], dict):
        raise ConfigError("latency: expected an object mapping operation to distribution")
    for op, spec in full["latency"].items():
        _validate_dist(spec, f"latency.{op}")
    if not isinstance(full["faults"], list):
        raise ConfigError("faults: expected a list of rules")
    for i, rule in enumerate(full["faults"]):
        _validate_fault(rule, f"faults[{i}]")
    rate = full["rate_limit"]
    if rate is not None:
        if not isinstance(rate, dict) or set(rate) != {"requests", "per_seconds"}:
            raise ConfigError("rate_limit: expected {'requests': N, 'per_seconds': S} or null")
        if _number(rate["requests"], "rate_limit.requests") < 1:
            raise ConfigError("rate_limit.requests: must be >= 1")
        if _number(rate["per_seconds"], "rate_limit.per_seconds") <= 0:
            raise ConfigError("rate_limit.per_seconds: must be > 0")
    if full["api_key"] is not None and not (isinstance(full["api_key"], str) and full["api_key"]):
        raise ConfigError("api_key: expected a non-empty string or null")
    if isinstance(full["credits"], bool) or not isinstance(full["credits"], int):
        raise ConfigError("credits: expected an integer")
    if not isinstance(full["prices"], dict):
        raise ConfigError("prices: expected an object mapping operation to credits")
    for op, price in full["prices"].items():
        if isinstance(price, bool) or not isinstance(price, int) or price < 0:
            raise ConfigError(f"prices.{op}: expected a non-negative integer")
    for key in ("clip_duration", "continuation_duration"):
        if _number(full[key], key) <= 0:
            raise ConfigError(f"{key}: must be > 0")
    if (
        full["upload_duration"] is not None
        and _number(full["upload_duration"], "upload_duration") <= 0
    ):
        raise ConfigError("upload_duration: must be > 0")
    for key in ("clips_per_task", "lyrics_variants"):
        if isinstance(full[key], bool) or not isinstance(full[key], int) or full[key] < 1:
            raise ConfigError(f"{key}: expected a positive integer")
    if full["extend_returns"] not in (None, "whole", "continuation"):
        raise ConfigError("extend_returns: expected 'whole', 'continuation' or null")
    if not isinstance(full["relay_extras"], bool):
        raise ConfigError("relay_extras: expected true or false")
    if full["callbacks"] is not None:
        full["callbacks"] = _validate_callbacks(full["callbacks"])
    for key, allowed in CHOICES.items():
        if full[key] not in allowed:
            raise ConfigError(f"{key}: expected one of {list(allowed)}, got {full[key]!r}")
    word = full["running_status"]
    if word is not None and not (isinstance(word, str) and word.strip()):
        raise ConfigError("running_status: expected a status word or null")
    full["unfinished_refusal"] = _validate_refusal(full["unfinished_refusal"])
    full["record_lag"] = _number(full["record_lag"], "record_lag")
    count = full["record_lag_refusals"]
    if count is not None and (isinstance(count, bool) or not isinstance(count, int)
                              or count < 1):
        raise ConfigError("record_lag_refusals: expected a positive integer or null")
    return full


def _validate_refusal(spec: Any) -> dict[str, Any]:
    where = "unfinished_refusal"
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected an object like {{'code': 422}}")
    unknown = set(spec) - set(REFUSAL_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; known: "
                          f"{sorted(REFUSAL_KEYS)}")
    out = {**REFUSAL_KEYS, **spec}
    code = out["code"]
    if isinstance(code, bool) or not isinstance(code, int | str) or code in ("", 200):
        raise ConfigError(f"{where}.code: expected an error code (an integer or a string)")
    status = out["http_status"]
    if status is not None and (isinstance(status, bool) or not isinstance(status, int)
                               or not 200 <= status < 600):
        raise ConfigError(f"{where}.http_status: expected an HTTP status code or null")
    if not isinstance(out["message"], str):
        raise ConfigError(f"{where}.message: expected a string")
    return out


def _validate_callbacks(spec: Any) -> dict[str, float]:
    if not isinstance(spec, dict):
        raise ConfigError("callbacks: expected null or an object like {'delay': 1}")
    unknown = set(spec) - set(CALLBACK_KEYS)
    if unknown:
        raise ConfigError(f"callbacks: unknown key(s) {sorted(unknown)}; known: "
                          f"{sorted(CALLBACK_KEYS)}")
    out = {**CALLBACK_KEYS, **spec}
    for key in CALLBACK_KEYS:
        out[key] = _number(out[key], f"callbacks.{key}")
    for key in ("duplicate", "loss"):
        if out[key] > 1:
            raise ConfigError(f"callbacks.{key}: must be between 0 and 1")
    if out["timeout"] <= 0:
        raise ConfigError("callbacks.timeout: must be > 0")
    return out


def merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Merge `patch` into a copy of `base`: objects merge key by key, anything else replaces.

    So `{"latency": {"wav": ...}}` keeps the other operations' latencies, while `faults`
    (a list) is replaced as a whole.
    """
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def price(config: dict[str, Any], op: str) -> int:
    prices: dict[str, int] = config["prices"]
    return prices.get(op, PRICES.get(op, 0))


def latency_spec(config: dict[str, Any], op: str) -> dict[str, Any]:
    configured: dict[str, Any] = config["latency"]
    if op in configured:
        return dict(configured[op])
    if op in MUSIC_OPS and "generate" in configured:
        return dict(configured["generate"])
    if "*" in configured:
        return dict(configured["*"])
    if op in LATENCY:
        return dict(LATENCY[op])
    return dict(LATENCY["generate"] if op in MUSIC_OPS else LATENCY["lyrics"])


def draw_latency(rng: random.Random, spec: dict[str, Any]) -> float:
    """Draw model seconds from a validated distribution, clamped to its min/max."""
    dist = spec["dist"]
    if dist == "fixed":
        value = float(spec["value"])
    elif dist == "uniform":
        value = rng.uniform(spec["low"], spec["high"])
    else:
        mu = spec["mu"] if "mu" in spec else math.log(spec["median"])
        value = rng.lognormvariate(mu, spec["sigma"])
    if "min" in spec:
        value = max(value, float(spec["min"]))
    if "max" in spec:
        value = min(value, float(spec["max"]))
    return round(value, 3)
