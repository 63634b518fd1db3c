"""The identity of a piece of paid work (DESIGN: never pay twice). A key is a hash of the
step type, its rendered inputs, the provider and its host; it is written to the journal
and the lock, so the way it is computed never changes without a new KEY_VERSION.
"""

from __future__ import annotations

import hashlib
import json
import sys
from typing import Any

KEY_VERSION = "sunoflow-key-1"


def key(step_type: str, inputs: dict[str, Any], provider_kind: str, base_url: str | None,
        extra: dict[str, Any] | None = None) -> str:
    """The identity of a piece of paid work. Equal keys are the same work and are never run
    twice. Volatile fields (result URLs, which expire and are refreshed) are left out, and
    store paths appear as their content hash, so moving the state directory changes
    nothing."""
    blob = json.dumps([KEY_VERSION, step_type, canonical(inputs), provider_kind, base_url,
                       extra or {}], sort_keys=True, separators=(",", ":"), default=str)
    # Interned: the engine, the store and the journal's reader hold one string per key.
    return sys.intern(hashlib.sha256(blob.encode()).hexdigest()[:32])


VOLATILE = frozenset({"audio_url", "image_url", "url", "stream_audio_url", "stream_url",
                      "video_url"})


def canonical(value: Any) -> Any:
    if isinstance(value, dict):
        drop = VOLATILE if ("file" in value or "id" in value) else frozenset()
        return {k: canonical(v) for k, v in value.items() if k not in drop}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    if isinstance(value, str) and "/blobs/sha256/" in value:
        return "blob:" + value.rsplit("/", 1)[-1]
    return value
