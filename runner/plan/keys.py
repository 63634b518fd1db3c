"""The identity of a piece of paid work (DESIGN: never pay twice). A key is a hash of the
step type, its rendered inputs, the provider and its host; it is written to the journal
and the lock, so the way it is computed never changes without a new KEY_VERSION.

A stored file enters a key by its stored name (``blob:<sha256><ext>``), read through the
store's aliases: a file re-obtained as other bytes for a recorded result stands for the
file that result recorded (runner.store.aliases), so the steps that read it keep the keys
the journal and lock recorded. With no alias, a key is what it always was.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Mapping
from typing import Any

KEY_VERSION = "sunoflow-key-1"


NO_ALIASES: Mapping[str, str] = {}


def key(step_type: str, inputs: dict[str, Any], provider_kind: str, base_url: str | None,
        extra: dict[str, Any] | None = None, aliases: Mapping[str, str] = NO_ALIASES) -> str:
    """The identity of a piece of paid work. Equal keys are the same work and are never run
    twice. Volatile fields (result URLs, which expire and are refreshed) are left out, and
    store paths appear as their content hash, so moving the state directory changes
    nothing. `aliases`: stored name -> the recorded stored name it stands for."""
    blob = json.dumps([KEY_VERSION, step_type, canonical(inputs, aliases), provider_kind,
                       base_url, extra or {}], sort_keys=True, separators=(",", ":"),
                      default=str)
    # Interned: the engine, the store and the journal's reader hold one string per key.
    return sys.intern(hashlib.sha256(blob.encode()).hexdigest()[:32])


VOLATILE = frozenset({"audio_url", "image_url", "url", "stream_audio_url", "stream_url",
                      "video_url"})


def canonical(value: Any, aliases: Mapping[str, str] = NO_ALIASES) -> Any:
    if isinstance(value, dict):
        drop = VOLATILE if ("file" in value or "id" in value) else frozenset()
        return {k: canonical(v, aliases) for k, v in value.items() if k not in drop}
    if isinstance(value, list):
        return [canonical(v, aliases) for v in value]
    if isinstance(value, str) and "/blobs/sha256/" in value:
        name = value.rsplit("/", 1)[-1]
        return "blob:" + aliases.get(name, name)
    return value
