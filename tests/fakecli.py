"""The fake's command line as a user starts it: `python -m runner.fake FLAGS`, and the
configuration it reports (`GET /_fake/config`), for the tests of its switches."""

from __future__ import annotations

import signal
import subprocess
import sys
from typing import Any

import httpx


def config_of(*flags: str) -> dict[str, Any]:
    """Start the fake with `flags`, read the URL it prints and the configuration it serves,
    and stop it (SIGTERM, as Ctrl-C would)."""
    proc = subprocess.Popen([sys.executable, "-m", "runner.fake", *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        return dict(httpx.get(f"{url}/_fake/config", timeout=10).json())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
