"""Building many small values at once: reading and planning a recipe.

Python's cyclic garbage collector runs a full pass each time the number of live
containers grows by a quarter, so while a 10,000-step recipe is read and planned it scans
the whole growing heap again and again: a third of the time spent. What these phases
build (plain values, frozen dataclasses, compiled templates) is freed by reference
counting, so the collector can wait; any cycle left behind is collected once it resumes.
"""

from __future__ import annotations

import contextlib
import functools
import gc
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic collector inside; it resumes on the way out, also on an error,
    unless it was off already (nested uses and callers that turned it off)."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def building(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorate a function that builds a large value: the collector waits while it runs."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with collector_paused():
            return fn(*args, **kwargs)

    return wrapper
