"""What each step gives back, said from the same data the reference checker uses
(`StepType.outputs` in runner.steps.types): as text for `sunoflow steps [TYPE]` and the README, and
as JSON Schema for `sunoflow schema` (`$defs/outputs_TYPE`, `$defs/track`).

Only the words live here; the shapes are the step types' own, so a field added to a type
shows up in the checker, the listing, the schema and the README at once (a test compares
the README's table with `steps_table()`).
"""

from __future__ import annotations

from typing import Any

from runner.steps.types import STEM_NAMES, TRACK, TYPES, OutType, StepType

# What an output means. Keyed by the output's name; a name used by several types means the
# same thing in each.
OUTPUT_WORDS = {
    "tracks": "the songs made, in order; a music task makes two takes (tracks[0], tracks[1]; "
              "one with `take:`), every other audio step one",
    "task_id": "the service's task id (remote steps)",
    "file": "the audio file in the store (= tracks[0].file)",
    "url": "the service's link to the result (expires after about 15 days)",
    "texts": "every lyrics variant the service wrote",
    "text": "the first variant's lyrics",
    "title": "the first variant's title",
    "images": "the cover images (usually two)",
    "words": "each sung word with its start and end in seconds",
    "lrc": "the lyrics as an LRC file (for players and `outputs: lrc`)",
    "stems": "the separated parts returned, by name (separate_vocal: vocals and "
             "instrumental; split_stem: up to " + str(len(STEM_NAMES)) + ")",
}
TRACK_WORDS = {
    "id": "the service's id of this take (with task_id, what extend and the others need)",
    "task_id": "the task that made it",
    "title": "its title",
    "duration": "its length in seconds",
    "tags": "its style tags",
    "prompt": "the lyrics or prompt it was made from",
    "model": "the recipe's model name, e.g. V4_5",
    "model_name": "the service's internal model name, e.g. chirp-v4-5",
    "audio_url": "the service's link to the audio",
    "stream_url": "the service's stream, playable while the take is made (sunoapi; never "
                  "stored as the result)",
    "image_url": "the service's link to its artwork",
    "file": "the audio file in the store",
    "image_file": "its artwork in the store",
}
FIELD_WORDS = {"url": "the service's link", "file": "the file in the store",
               "title": "the variant's title", "text": "its lyrics", "word": "the word",
               "start": "seconds", "end": "seconds"}
KIND_WORDS = {"str": "text", "num": "number", "bool": "true/false", "file": "file",
              "any": "any value"}


def shape(t: OutType) -> str:
    """A type, said briefly: `list of track`, `{url, file}`, `text`."""
    if t is TRACK:
        return "track"
    if isinstance(t, tuple):
        return f"list of {shape(t[1])}"
    if isinstance(t, dict):
        if set(t) == set(STEM_NAMES):
            return "{vocals, instrumental, ...}: each {url, file}"
        return "{" + ", ".join(t) + "}"
    return KIND_WORDS.get(t, str(t))


def lines_for(t: StepType) -> list[str]:
    """The outputs of one step type: name, shape, meaning."""
    w = max(len(n) for n in t.outputs)
    out = [f"{t.name}: {t.summary}", "  outputs:"]
    for name, typ in t.outputs.items():
        out.append(f"    {name:<{w}}  {shape(typ)}: {OUTPUT_WORDS.get(name, '')}".rstrip(": "))
    if any(_has_track(typ) for typ in t.outputs.values()):
        out += ["  a track has:"] + [f"    {k:<10}  {shape(v)}: {TRACK_WORDS[k]}"
                                     for k, v in TRACK.items()]
    out.append(f"  use as: steps.ID.{next(iter(t.outputs))}"
               + ("[0].file" if "tracks" in t.outputs else ""))
    return out


def _has_track(t: OutType) -> bool:
    return t is TRACK or (isinstance(t, tuple) and _has_track(t[1]))


def listing(name: str | None = None) -> str:
    """`sunoflow steps [TYPE]`: one type in full, or every type's outputs in a line."""
    if name is not None:
        return "\n".join(lines_for(TYPES[name])) + "\n"
    w = max(len(n) for n in TYPES)
    rows = [f"{n:<{w}}  {', '.join(t.outputs)}" for n, t in TYPES.items()]
    return "\n".join([f"{'TYPE':<{w}}  OUTPUTS", *rows, "",
                      "sunoflow steps TYPE shows each output and every field of a track; a "
                      "reusable recipe's step gives the outputs its recipe declares."]) + "\n"


def recipe_listing(file: str, description: str, types: dict[str, Any]) -> str:
    """`sunoflow steps RECIPE`: what a step that uses a reusable recipe gives back."""
    out = [f"{file}: {description}".rstrip(": "), "  outputs (steps.ID.NAME):"]
    w = max((len(n) for n in types), default=0)
    for name, typ in types.items():
        out.append(f"    {name:<{w}}  " + ("any value" if typ == "any" else shape(typ)))
    if not types:
        out.append("    (none declared)")
    if any(_has_track(t) for t in types.values()):
        out.append("  a track has: " + ", ".join(TRACK))
    return "\n".join(out) + "\n"


def steps_table() -> str:
    """The README's table of what each step type gives back (Markdown)."""
    rows = ["| type | outputs |", "|---|---|"]
    for n, t in TYPES.items():
        rows.append(f"| `{n}` | " + ", ".join(f"`{k}` ({shape(v)})" for k, v in
                                              t.outputs.items()) + " |")
    return "\n".join(rows) + "\n"


def track_table() -> str:
    rows = ["| field | what it is |", "|---|---|"]
    rows += [f"| `{k}` | {shape(v)}: {TRACK_WORDS[k]} |" for k, v in TRACK.items()]
    return "\n".join(rows) + "\n"


# --- as JSON Schema ----------------------------------------------------------------------

def _schema(t: OutType) -> dict[str, Any]:
    if t is TRACK:
        return {"$ref": "#/$defs/track"}
    if isinstance(t, tuple):
        return {"type": "array", "items": _schema(t[1])}
    if isinstance(t, dict):
        return {"type": "object", "properties": {k: _schema(v) | _words(k, FIELD_WORDS)
                                                 for k, v in t.items()}}
    return {"str": {"type": "string"}, "num": {"type": "number"},
            "bool": {"type": "boolean"}, "file": {"type": "string",
                                                  "description": "a path in the store"},
            }.get(t, {})


def _words(k: str, words: dict[str, str]) -> dict[str, str]:
    return {"description": words[k]} if k in words else {}


def schema_defs() -> dict[str, Any]:
    """`$defs` entries: `track`, and `outputs_TYPE` for each step type (what a template
    may read from `steps.ID` of that type). Documentation: no recipe is checked against
    them."""
    defs: dict[str, Any] = {"track": {
        "description": "a track object: what a music or audio step gives in `tracks`",
        "type": "object",
        "properties": {k: _schema(v) | {"description": TRACK_WORDS[k]}
                       for k, v in TRACK.items()}}}
    for n, t in TYPES.items():
        defs[f"outputs_{n}"] = {
            "description": f"what a `{n}` step gives back: steps.ID.NAME (steps.ID[i].NAME "
                           "in a for_each)",
            "type": "object",
            "properties": {k: _schema(v) | _words(k, OUTPUT_WORDS)
                           for k, v in t.outputs.items()}}
    return defs
