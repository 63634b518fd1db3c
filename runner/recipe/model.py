"""The recipe as the rest of sunoflow sees it: frozen records, made once by the loader
(runner.recipe.load) and never changed after. The declared input types of a reusable
recipe, and the modes of `release_on_first`, are part of the language and live here too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.paths import Roots
from runner.recipe.source import Document
from runner.steps.types import StepType

DEFAULT_MAX_DOWNLOAD = 512 * 2**20  # bytes of one result file

# `release_on_first` (runner.engine.early): auto (default), always (`true`) or never (`false`).
AUTO, ALWAYS, NEVER = "auto", "always", "never"
# What the recipe may write: `auto`, or the booleans that older recipes hold.
MODES: dict[Any, str] = {"auto": AUTO, True: ALWAYS, False: NEVER}


def mode_of(value: Any) -> str:
    """The mode a provider block's `release_on_first` value names (the loader has checked
    it against the schema)."""
    return MODES.get(value, AUTO)


# Declared input type -> (what it accepts, for messages).
INPUT_TYPES: dict[str, str] = {
    "string": "a string", "integer": "a whole number", "number": "a number",
    "boolean": "true or false", "array": "a list", "object": "a mapping",
    "track": "a track (a step's track object, a URL or a local path)",
    "file": "a path to a local file (relative to the recipe that is run)", "any": "any value",
}


def fits(kind: str, value: Any) -> bool:
    """Whether `value` is of the declared input type `kind` (checked for the loader's
    defaults, the plan's literal values and the run's rendered values alike)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        return number and float(value).is_integer()
    if kind == "number":
        return number
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "array":
        return isinstance(value, list)
    if kind == "object":
        return isinstance(value, dict)
    if kind == "track":
        return isinstance(value, str) or (isinstance(value, dict) and bool(value.get("file")
                                                                           or value.get("id")))
    if kind == "file":
        return isinstance(value, str) and bool(value) and "://" not in value
    return True


@dataclass(frozen=True)
class Provider:
    kind: str = "local"
    base_url: str | None = None
    upload_base_url: str | None = None
    api_key_env: str = "SUNO_API_KEY"
    callback_url: str | None = None
    # Whether a song's `first` stage starts its tracks[0] users (runner.engine.early): auto
    # (default), always (`true` in the recipe) or never (`false`).
    release_on_first: str = "auto"
    rate_limit: tuple[int, float] | None = None
    poll_interval: float = 10.0
    max_poll_interval: float = 60.0
    request_timeout: float = 30.0
    max_download_bytes: int = DEFAULT_MAX_DOWNLOAD
    prices: dict[str, float] = field(default_factory=dict)
    take_seconds: float = 30.0
    concat: str = "remote"
    # The shared cache (runner.store.cache); --cache and $SUNOFLOW_CACHE win.
    cache: str | None = None
    # Seconds a remote operation may be waited for, per step type or "*" (runner.engine.deadlines).
    timeouts: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    id: str
    uses: str
    type: StepType | None  # None for a reusable recipe (`uses: ./x.yaml`)
    with_: dict[str, Any]
    needs: tuple[str, ...] = ()
    for_each: Any = None
    if_: Any = True
    retry: int = 0
    timeout: float | None = None
    take: Any = "both"
    name: str | None = None
    callee: Recipe | None = None  # the recipe `uses` names, once it loaded without error


class _Missing:
    def __repr__(self) -> str:
        return "NO_DEFAULT"


NO_DEFAULT: Any = _Missing()  # "no default" differs from `default: null`


@dataclass(frozen=True)
class Input:
    """One declared input of a reusable recipe."""

    name: str
    type: str = "any"
    default: Any = NO_DEFAULT
    description: str | None = None
    required: bool = True  # without a default, unless the recipe says `required: false`


@dataclass(frozen=True)
class OutputFile:
    index: int
    path: str
    from_: str
    for_each: Any = None
    if_: Any = True
    tags: dict[str, Any] = field(default_factory=dict)
    lrc: str | None = None


@dataclass(frozen=True)
class Recipe:
    path: Path
    file: str
    name: str
    provider: Provider
    defaults: dict[str, Any]
    vars: dict[str, Any]
    steps: dict[str, Step]
    outputs: tuple[OutputFile, ...]
    doc: Document
    inputs: dict[str, Input] = field(default_factory=dict)
    exposed: dict[str, str] = field(default_factory=dict)  # a reusable recipe's outputs
    allow_paths: tuple[Path, ...] = ()  # --allow-path: folders beside its own it may read
    # NAME.takes.yaml beside it (runner.recipe.takes): step instance -> the take kept. Read for the
    # recipe that is run only; the plan applies each to its instance.
    takes: dict[str, int] = field(default_factory=dict)
    takes_doc: Document | None = None

    def input_defaults(self) -> dict[str, Any]:
        """Each input's value when the caller gives none (null for an optional one)."""
        return {k: (None if i.default is NO_DEFAULT else i.default)
                for k, i in self.inputs.items() if not (i.required and i.default is NO_DEFAULT)}

    @property
    def roots(self) -> Roots:
        """The folders its local paths may name (runner.paths)."""
        return Roots.of(self.path, self.allow_paths)
