"""Studio work off the event loop, bounded: the one way a provider runs ffmpeg.

The studio's functions block, so they run in a worker thread; every ffmpeg they start
belongs to one :class:`runner.studio.ffmpeg.Bound`. When the awaiting task is cancelled
(Ctrl-C, a sibling step's failure, a stop) the thread is abandoned and the bound's
children are killed at once, rather than the run waiting for them; the thread then sees
its ffmpeg die, its :func:`runner.studio.ffmpeg.atomic` removes the partial outputs, and it
ends. ``seconds``: the deadline of the whole call, else each child's default limit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import anyio

from runner.studio.ffmpeg import Bound, kill_live

T = TypeVar("T")


async def in_studio(fn: Callable[..., T], *args: Any, seconds: float | None = None) -> T:
    bound = Bound(seconds)
    try:
        return await anyio.to_thread.run_sync(bound.run, fn, *args, abandon_on_cancel=True)
    finally:
        # Finished: nothing to kill. Cancelled: the thread is still in ffmpeg; kill it.
        bound.cancel()


def abandon() -> None:
    """Kill every ffmpeg child of this process at once: for a process about to leave
    without running its exit handlers (a second Ctrl-C's `os._exit`), whose threads would
    otherwise leave their ffmpeg running in sessions of their own."""
    kill_live()
