"""How long a step waits for its remote task before it gives up (issue 15 §6).

Every remote operation has a default, so no status word a host invents and no task that
never ends can keep a run waiting without end. The defaults follow REFERENCE 1.3 (a song's
downloadable file in 2-3 minutes; api.box's own client gives up after 10) with room for a
busy service: several times the usual duration. A recipe overrides them per provider
(`provider.timeouts: {generate: 30m}`, `"*"` for every operation) and per step (`timeout:`),
the step winning.

A step that times out fails, but its task id stays in the journal ("submitted"): the next
run polls that task again and pays nothing for it (engine rule 2).
"""

from __future__ import annotations

from typing import Any

MINUTE = 60.0

DEFAULTS: dict[str, float] = {
    # The music family: 2-3 minutes usually (REFERENCE 1.3).
    "generate": 15 * MINUTE, "extend": 15 * MINUTE, "upload_cover": 15 * MINUTE,
    "upload_extend": 15 * MINUTE, "add_vocals": 15 * MINUTE, "add_instrumental": 15 * MINUTE,
    # Seconds usually; derived products a minute or two.
    "lyrics": 5 * MINUTE, "cover": 10 * MINUTE, "convert": 10 * MINUTE,
    "separate": 15 * MINUTE, "video": 15 * MINUTE, "concat": 10 * MINUTE,
}
FALLBACK = 15 * MINUTE  # an operation not listed above


def timeout_for(op: str, step_timeout: float | None, provider_timeouts: dict[str, Any]
                ) -> float:
    """Seconds a remote `op` may be waited for: the step's `timeout`, else the provider
    block's `timeouts[op]` (or `timeouts["*"]`), else the default."""
    given = _given(op, step_timeout, provider_timeouts)
    return DEFAULTS.get(op, FALLBACK) if given is None else given


def local_timeout(op: str, step_timeout: float | None, provider_timeouts: dict[str, Any]
                  ) -> float | None:
    """Seconds a local step's work (its ffmpeg runs) may take: the step's `timeout`, else
    the provider block's `timeouts[op]` (or `"*"`); None when the recipe sets neither,
    and then each ffmpeg child has the studio's default, proportional to the media it
    handles (runner.studio.ffmpeg.default_limit), since the remote defaults above are
    about a service's queue, not this machine."""
    return _given(op, step_timeout, provider_timeouts)


def _given(op: str, step_timeout: float | None, provider_timeouts: dict[str, Any]
           ) -> float | None:
    """What the recipe says: the step's `timeout`, else `timeouts[op]`, else
    `timeouts["*"]`; None when it says nothing."""
    if step_timeout is not None:
        return step_timeout
    for name in (op, "*"):
        value = provider_timeouts.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None
