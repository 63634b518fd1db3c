"""Waiting in tests for something another process or thread does: a condition, never a
duration (the timeout only bounds a test that would otherwise hang)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def until(cond: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """Poll `cond` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")
