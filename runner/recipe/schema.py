"""The recipe's JSON Schema (2020-12), built from the step types so the two never drift.

`schemas/recipe.schema.json` is this module's output, committed for editors
(`# yaml-language-server: $schema=...`) and shipped in the wheel; a test keeps it equal
to :func:`published`. The loader validates with the same pieces but dispatches each step's
``with`` to its type's schema directly instead of through 19 ``if``/``then`` branches: the
same verdicts, one validator call per step, and errors that name the step's own fields.
Each schema is asked first through :func:`top_check` / :func:`with_check` (runner.recipe.verdict,
a compiled yes/no); jsonschema's validators run only to explain a "no".
"""

from __future__ import annotations

import copy
import functools
import json
from typing import Any

from jsonschema import Draft202012Validator

from runner.recipe import verdict
from runner.recipe.model import INPUT_TYPES
from runner.steps import outputs_doc
from runner.steps.types import DEFAULTABLE, PRICE_KEYS, PROVIDER_KINDS, TYPES

TEMPLATE = {"type": "string", "pattern": r"\{\{|\{%",
            "description": "a Jinja2 template, e.g. '{{ steps.song[index].tracks[0] }}'"}
STEP_ID = r"^[a-z][a-z0-9_]*$"
HTTP_URL = r"^https?://"  # a service address; `--base-url` is held to it too (plan.build)
RECIPE_PATH = r"^(\.{1,2}/.+\.ya?ml|sunoflow:[a-z0-9][a-z0-9-]*)$"  # a file, or a stock recipe
DURATION = r"^[0-9]+(\.[0-9]+)?(ms|s|m|h)$"


def templated(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema`, or a template that will render to such a value."""
    s = copy.deepcopy(schema)
    desc = s.pop("description", None)
    if s.get("type") == "string" and len(s) == 1:
        out: dict[str, Any] = {"type": "string"}
    else:
        out = {"anyOf": [s, {"$ref": "#/$defs/template"}]}
    if desc:
        out["description"] = desc
    return out


def with_schema(type_name: str, *, required: bool = True) -> dict[str, Any]:
    t = TYPES[type_name]
    s: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {k: templated(v) for k, v in t.fields.items()},
    }
    if required and t.required:
        s["required"] = list(t.required)
    return s


PROVIDER = {
    "anyOf": [
        {"enum": list(PROVIDER_KINDS)},
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["kind"],
            "properties": {
                "kind": {"enum": list(PROVIDER_KINDS)},
                "base_url": {"type": "string", "pattern": HTTP_URL,
                             "description": "the service's address"},
                "upload_base_url": {"type": "string", "pattern": HTTP_URL},
                "api_key_env": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$",
                                "description": "the NAME of the environment variable that "
                                               "holds the key (default SUNO_API_KEY)"},
                "callback_url": {"type": "string", "pattern": HTTP_URL,
                                 "description": "sunoapi with `run --listen`: the public "
                                                "address that forwards to the listener"},
                "release_on_first": {"enum": ["auto", True, False],
                                     "description": "sunoapi: start the steps that use "
                                                    "only a song's first track when that "
                                                    "track is ready, reported by a callback "
                                                    "or found by a poll. auto (default): "
                                                    "unless the host is known to refuse "
                                                    "that operation before the task "
                                                    "finishes; true: always (a refusal "
                                                    "still costs nothing); false: never"},
                "rate_limit": {
                    "type": "object", "additionalProperties": False,
                    "required": ["requests", "per_seconds"],
                    "properties": {"requests": {"type": "integer", "minimum": 1},
                                   "per_seconds": {"type": "number", "exclusiveMinimum": 0}},
                },
                "poll_interval": {"type": "number", "exclusiveMinimum": 0},
                "max_poll_interval": {"type": "number", "exclusiveMinimum": 0},
                "request_timeout": {"type": "number", "exclusiveMinimum": 0},
                "max_download_bytes": {"type": "integer", "minimum": 1024,
                                       "maximum": 8 * 2**30,
                                       "description": "refuse a result file larger than "
                                                      "this (default 512 MiB)"},
                "prices": {"type": "object",
                           "propertyNames": {"enum": list(PRICE_KEYS)},
                           "additionalProperties": {"type": "number", "minimum": 0}},
                "take_seconds": {"type": "number", "minimum": 1, "maximum": 480,
                                 "description": "local provider: length of a generated take"},
                "concat": {"enum": ["remote", "local"],
                           "description": "newapi: whether the relay offers /suno/submit/concat"},
                "cache": {"type": "string", "pattern": "^(s3|gs|az)://[^/?#@]+(/[^?#]*)?$",
                          "description": "a shared cache of stored files and paid work: "
                                         "s3://bucket/prefix, gs://..., az://... (a folder, "
                                         "file:///path, only with --cache or "
                                         "SUNOFLOW_CACHE); credentials come from the "
                                         "environment"},
                "timeouts": {"type": "object",
                             "propertyNames": {"enum": sorted(TYPES) + ["*"]},
                             "additionalProperties": {
                                 "anyOf": [{"type": "number", "exclusiveMinimum": 0},
                                           {"type": "string", "pattern": DURATION}]},
                             "description": "how long a remote task of each step type may "
                                            "be waited for ('*': every type); a step's "
                                            "timeout wins (defaults: README, Timeouts)"},
            },
        },
    ],
}

STEP = {
    "type": "object",
    "additionalProperties": False,
    "required": ["uses"],
    "properties": {
        "uses": {"anyOf": [{"enum": sorted(TYPES)},
                           {"type": "string", "pattern": RECIPE_PATH}],
                 "description": "a step type, ./path/to/recipe.yaml, or sunoflow:NAME "
                                "(a stock recipe shipped with sunoflow)"},
        "name": {"type": "string"},
        "with": {"type": "object"},
        "needs": {"anyOf": [{"type": "string", "pattern": STEP_ID},
                            {"type": "array", "items": {"type": "string", "pattern": STEP_ID},
                             "uniqueItems": True}]},
        "for_each": {"anyOf": [{"type": "array"}, {"$ref": "#/$defs/template"}]},
        "if": {"anyOf": [{"type": "boolean"}, {"$ref": "#/$defs/template"}]},
        "retry": {"type": "integer", "minimum": 0, "maximum": 10,
                  "description": "paid resubmissions allowed when the service fails the task"},
        "timeout": {"anyOf": [{"type": "number", "exclusiveMinimum": 0},
                              {"type": "string", "pattern": DURATION}],
                    "description": "seconds, or '90s', '15m', '1h'"},
        "take": {"anyOf": [{"enum": [0, 1, "both"]}, {"$ref": "#/$defs/template"}],
                 "description": "which of the two takes to keep (default both)"},
    },
}

TAGS = {
    "type": "object", "additionalProperties": False,
    "properties": {k: {"type": ["string", "integer"]}
                   for k in ("title", "artist", "album", "track", "cover", "lyrics", "genre",
                             "year")},
}

OUTPUT_FILE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["path", "from"],
    "properties": {
        "path": {"type": "string", "description": "relative to --out; never escapes it"},
        "from": {"type": "string", "description": "a file output, e.g. '{{ item.file }}'"},
        "for_each": STEP["properties"]["for_each"],  # type: ignore[index]
        "if": STEP["properties"]["if"],  # type: ignore[index]
        "tags": TAGS,
        "lrc": {"type": "string", "description": "an LRC file (timestamped_lyrics' lrc) to "
                "write beside the track, with the track's name"},
    },
}

INPUT = {
    "type": "object", "additionalProperties": False,
    "properties": {"type": {"enum": list(INPUT_TYPES),
                            "description": "checked against the caller's value: literal "
                                           "values before the run, templates once rendered"},
                   "default": {"description": "the value when the caller gives none; an "
                                              "input without one is required"},
                   "description": {"type": "string"},
                   "required": {"type": "boolean",
                                "description": "default: true when there is no default; "
                                               "false with no default gives null"}},
}


def _top(step: dict[str, Any]) -> dict[str, Any]:
    defaults_props: dict[str, Any] = {}
    for t in TYPES.values():
        for k, v in t.fields.items():
            if k in DEFAULTABLE:
                defaults_props.setdefault(k, templated(v))
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "urn:sunoflow:recipe:1",
        "title": "sunoflow recipe",
        "type": "object",
        "additionalProperties": False,
        "required": ["version", "steps"],
        "properties": {
            "version": {"const": 1, "description": "the recipe language version"},
            "name": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._ -]*$"},
            "description": {"type": "string"},
            "provider": PROVIDER,
            "defaults": {"type": "object", "additionalProperties": False,
                         "properties": defaults_props},
            "vars": {"type": "object", "propertyNames": {"pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"}},
            "inputs": {"type": "object", "propertyNames": {"pattern": STEP_ID},
                       "additionalProperties": INPUT,
                       "description": "a reusable recipe's inputs, filled by the `with` of "
                                      "a step that uses it; templates read them as "
                                      "inputs.NAME"},
            "steps": {"type": "object", "minProperties": 1,
                      "propertyNames": {"pattern": STEP_ID}, "additionalProperties": step},
            "outputs": {"anyOf": [
                {"type": "array", "items": OUTPUT_FILE},
                {"type": "object", "propertyNames": {"pattern": STEP_ID},
                 "additionalProperties": {"type": "string"}},
            ], "description": "album files (a list), or a reusable recipe's outputs "
                              "(a mapping of name to a template over its own steps and "
                              "inputs; a caller reads them as steps.CALL.NAME)"},
        },
        "$defs": {"template": TEMPLATE},
    }


@functools.cache
def published() -> dict[str, Any]:
    """The whole language in one schema, for editors and other tools."""
    step = copy.deepcopy(STEP)
    step["allOf"] = [
        {"if": {"properties": {"uses": {"const": name}}, "required": ["uses"]},
         "then": {"properties": {"with": {"$ref": f"#/$defs/with_{name}"}}}}
        for name in sorted(TYPES)
    ]
    top = _top(step)
    for name in sorted(TYPES):
        top["$defs"][f"with_{name}"] = with_schema(name)
    # What each step type gives back, for editors and readers (not checked against).
    top["$defs"].update(outputs_doc.schema_defs())
    return top


def published_text() -> str:
    return json.dumps(published(), indent=2, sort_keys=False) + "\n"


@functools.cache
def top_validator() -> Draft202012Validator:
    return Draft202012Validator(_top(STEP))


@functools.cache
def with_validator(type_name: str) -> Draft202012Validator:
    s = with_schema(type_name, required=False)
    s["$defs"] = {"template": TEMPLATE}
    return Draft202012Validator(s)


def _quick(schema: dict[str, Any]) -> verdict.Check:
    """runner.recipe.verdict's yes/no for `schema`; "no" (ask jsonschema) when it cannot decide."""
    try:
        check = verdict.compile_schema(schema)
    except verdict.Unsupported:
        return lambda v: False

    def safe(v: Any) -> bool:
        try:
            return check(v)
        except Exception:  # noqa: BLE001 - jsonschema then says what it says about it
            return False

    return safe


@functools.cache
def top_check() -> verdict.Check:
    """Whether a document is valid under top_validator's schema, quickly (no reasons)."""
    return _quick(_top(STEP))


@functools.cache
def with_check(type_name: str) -> verdict.Check:
    """Whether a `with` is valid under with_validator(type_name)'s schema, quickly."""
    return _quick(with_validator(type_name).schema)
