"""Progress while a run goes: a live table on a terminal, timestamped lines otherwise.

NO_COLOR is honoured; nothing here ever prints the API key (it never reaches this module).
Every line is made safe (runner.terminal): text from recipes and services is printed, and
it must not move the cursor or forge a line. Rich markup is off for the same reason.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

from runner.terminal import safe


class PlainProgress:
    """One timestamped line per event: for CI logs and pipes."""

    def __init__(self, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.t0 = time.monotonic()

    def _line(self, text: str) -> None:
        if not self.quiet:
            stamp = time.strftime("%H:%M:%S")
            print(f"{stamp} {safe(text)}", file=self.stream, flush=True)

    def event(self, iid: str, state: str, detail: str) -> None:
        if state == "running":
            return
        self._line(f"{iid:<16} {state}" + (f"  {detail}" if detail else ""))

    def note(self, text: str) -> None:
        self._line(text)

    def always(self, text: str) -> None:
        """A line that --quiet does not silence: where the callback listener listens, and
        the callbacks it rejects."""
        stamp = time.strftime("%H:%M:%S")
        print(f"{stamp} {safe(text)}", file=self.stream, flush=True)

    def start(self, total: int) -> None:
        self._line(f"running {total} step instances")

    def stop(self) -> None:
        return None


class LiveProgress(PlainProgress):
    """A rich live display: one line per running step with its state and elapsed time,
    and a total bar."""

    def __init__(self) -> None:
        super().__init__()
        from rich.console import Console
        from rich.live import Live

        self.console = Console(stderr=True, no_color=bool(os.environ.get("NO_COLOR")))
        self.live = Live(console=self.console, refresh_per_second=4, transient=True)
        self.running: dict[str, tuple[str, float]] = {}
        self.done = 0
        self.total = 0

    def start(self, total: int) -> None:
        self.total = total
        self.live.start()
        self._refresh()

    def stop(self) -> None:
        self.live.stop()

    def event(self, iid: str, state: str, detail: str) -> None:
        if state in ("succeeded", "cached", "failed", "skipped"):
            self.running.pop(iid, None)
            self.done += 1
            if state in ("failed",) or (state == "skipped" and detail != "if: false"):
                self.console.print(safe(f"{iid} {state}: {detail}"), markup=False,
                                   highlight=False)
        else:
            since = self.running.get(iid, ("", time.monotonic()))[1]
            self.running[iid] = (state + (f" {detail}" if detail else ""), since)
        self._refresh()

    def note(self, text: str) -> None:
        self.console.print(safe(text), markup=False, highlight=False)

    def always(self, text: str) -> None:
        self.console.print(safe(text), markup=False, highlight=False)

    def _refresh(self) -> None:
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        t = Table.grid(padding=(0, 2))
        now = time.monotonic()
        for iid, (state, since) in list(self.running.items())[:20]:
            t.add_row(Text(safe(iid)), Text(safe(state)), f"{now - since:5.0f}s")
        if len(self.running) > 20:
            t.add_row(f"... and {len(self.running) - 20} more", "", "")
        bar = Table.grid(padding=(0, 1))
        bar.add_row(ProgressBar(total=max(1, self.total), completed=self.done, width=40),
                    f"{self.done}/{self.total}")
        outer = Table.grid()
        outer.add_row(t)
        outer.add_row(bar)
        self.live.update(outer)


def make(quiet: bool = False) -> Any:
    if not quiet and sys.stderr.isatty() and os.environ.get("TERM") != "dumb":
        return LiveProgress()
    return PlainProgress(quiet=quiet)
