"""Progress while a run goes: a live view on a terminal, timestamped lines otherwise.

The live view (rich) shows, per running instance, its state and an elapsed time that
ticks, and for a task being polled when the next poll is due; below them done/total, an
estimate of the time left (from the durations the run has learned, or said to be a guess
while it has learned none) and the credits spent so far. Every instance that finishes,
fails, is cached or skipped leaves one compact line above the live area, so nothing
vanishes when the run ends.

A terminal is what rich says it is: a TTY, or `TTY_COMPATIBLE=1` / `FORCE_COLOR` with
`TTY_INTERACTIVE=1` (how the tests drive the live view through a pipe); `TERM=dumb` and
`--quiet` give the plain lines. `NO_COLOR` (any non-empty value, no-color.org) removes
every style, bold included. Nothing here ever prints the API key (it never reaches this
module). Every line is made safe (runner.terminal): text from recipes and services is
printed, and it must not move the cursor or forge a line. Rich markup is off for the same
reason.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from runner.terminal import plural, safe, safe_message

FINAL = ("succeeded", "cached", "failed", "skipped")
# How a finished instance is recorded: a word that reads without colour, and a style.
RECORD = {"succeeded": ("done", "green"), "cached": ("cached", "cyan"),
          "failed": ("FAILED", "bold red"), "skipped": ("skipped", "yellow")}


def duration(seconds: float) -> str:
    """`7s`, `2m05s`, `1h02m`."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class PlainProgress:
    """One timestamped line per event: for CI logs and pipes."""

    def __init__(self, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.t0 = time.monotonic()
        # Set by the run: credits spent so far, and the time left as (seconds, learned).
        self.spent: Callable[[], float] = lambda: 0.0
        self.time_left: Callable[[], tuple[float, bool] | None] = lambda: None

    def _line(self, text: str) -> None:
        if not self.quiet:
            stamp = time.strftime("%H:%M:%S")
            print(f"{stamp} {safe_message(text)}", file=self.stream, flush=True)

    def event(self, iid: str, state: str, detail: str) -> None:
        if state == "running":
            return
        if state == "failed":
            detail = ""  # the reason is in the summary, once (it may be several lines)
        self._line(f"{iid:<16} {state}" + (f"  {detail}" if detail else ""))

    def poll_due(self, iid: str, seconds: float) -> None:
        """Task `iid` is polled next in `seconds`."""

    def note(self, text: str) -> None:
        self._line(text)

    def always(self, text: str) -> None:
        """A line that --quiet does not silence: where the callback listener listens, and
        the callbacks it rejects."""
        stamp = time.strftime("%H:%M:%S")
        print(f"{stamp} {safe_message(text)}", file=self.stream, flush=True)

    def start(self, total: int, credits: float | None = None) -> None:
        self._line(f"running {plural(total, 'step instance')}"
                   + (f"; the plan estimates {credits:g} credits" if credits else ""))

    def stop(self) -> None:
        return None


class LiveProgress(PlainProgress):
    """The rich live view (see the module's docstring)."""

    MAX_ROWS = 20

    def __init__(self, console: Any) -> None:
        super().__init__()
        from rich.live import Live

        self.console = console
        # The renderable is this object: rich asks it for a fresh view at every refresh, so
        # the elapsed times tick while nothing happens.
        self.live = Live(self, console=console, refresh_per_second=4, transient=True,
                         redirect_stderr=False, redirect_stdout=False)
        self.running: dict[str, list[Any]] = {}  # iid -> [state, since, poll due or None]
        self.done = 0
        self.total = 0
        self.credits: float | None = None
        self.started = time.monotonic()

    def start(self, total: int, credits: float | None = None) -> None:
        self.total, self.credits = total, credits
        self.console.print(f"running {plural(total, 'step instance')}"
                           + (f"; the plan estimates {credits:g} credits" if credits else ""),
                           highlight=False)
        self.live.start()

    def stop(self) -> None:
        self.live.stop()

    def event(self, iid: str, state: str, detail: str) -> None:
        now = time.monotonic()
        if state in FINAL:
            row = self.running.pop(iid, None)
            self.done += 1
            word, style = RECORD[state]
            took = f"  {duration(now - row[1])}" if row is not None and state != "cached" \
                else ""
            text = f"{word:<7} {iid}{took}" + (f"  {detail}" if detail and state != "failed"
                                               else "")
            self.console.print(safe(text), style=style, highlight=False, markup=False)
        else:
            row = self.running.get(iid)
            label = state + (f" {detail}" if detail else "")
            if row is None:
                self.running[iid] = [label, now, None]
            else:
                row[0], row[2] = label, None
        self.live.refresh()

    def poll_due(self, iid: str, seconds: float) -> None:
        row = self.running.get(iid)
        if row is not None:
            row[2] = time.monotonic() + seconds

    def note(self, text: str) -> None:
        self.console.print(safe_message(text), markup=False, highlight=False)

    def always(self, text: str) -> None:
        self.console.print(safe_message(text), markup=False, highlight=False)

    def __rich__(self) -> Any:
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        now = time.monotonic()
        t = Table.grid(padding=(0, 2))
        rows = list(self.running.items())
        for iid, (state, since, due) in rows[:self.MAX_ROWS]:
            poll = "" if due is None else (f"next poll in {duration(due - now)}"
                                           if due > now else "polling")
            t.add_row(Text(safe(iid), style="bold"), Text(safe(state)),
                      duration(now - since), poll)
        if len(rows) > self.MAX_ROWS:
            t.add_row(f"... and {len(rows) - self.MAX_ROWS} more", "", "", "")
        foot = Table.grid(padding=(0, 1))
        foot.add_row(ProgressBar(total=max(1, self.total), completed=self.done, width=20),
                     self.status_line(now))
        outer = Table.grid()
        outer.add_row(t)
        outer.add_row(foot)
        spent = self.spent()
        if self.credits or spent:
            outer.add_row(f"credits: {spent:g} spent"
                          + (f" of ~{self.credits:g} estimated" if self.credits else ""))
        return outer

    def status_line(self, now: float) -> str:
        parts = [f"{self.done}/{self.total} done", f"{duration(now - self.started)} elapsed"]
        left = self.time_left() if self.done < self.total else None
        if left is not None:
            seconds, learned = left
            parts.append(f"about {duration(seconds)} left"
                         + ("" if learned else " (a guess: nothing measured yet)"))
        return " · ".join(parts)


def make(quiet: bool = False) -> Any:
    if quiet:
        return PlainProgress(quiet=True)
    from rich.console import Console

    # NO_COLOR: no colour system at all, so bold and dim go too (rich's own `no_color`
    # keeps them).
    plain = bool(os.environ.get("NO_COLOR"))
    console = Console(stderr=True, highlight=False, color_system=None, no_color=True) \
        if plain else Console(stderr=True, highlight=False)
    if console.is_interactive and os.environ.get("TERM") != "dumb":
        return LiveProgress(console)
    return PlainProgress()
