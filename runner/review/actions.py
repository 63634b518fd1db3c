"""The page's only two writes: keep a take, and (confirmed) reroll one song.

Never paying twice from the page. A reroll pays for one fresh result of one instance, and
a click, a double click, a resent form or a second tab can never make it pay again:

1. Every form carries the card's freshness (`model.Card.form`): a hash of the instance,
   the kept take, the step's key and how many results and paid attempts the journal
   holds for that key. A reroll that submitted anything adds an ``intent`` (a paid
   attempt) and then a ``done``, so a form made before it no longer matches: 409.
2. While a reroll this server started is running, every other reroll is refused (409);
   the check and the start happen under one lock, so two requests cannot both pass it.
3. The reroll is `sunoflow reroll RECIPE INSTANCE --yes`, a run like any other: it takes
   the state directory's lock, so it cannot run beside a `sunoflow run` (it stops with
   "another sunoflow run is using ..." before paying), and the engine's never-pay-twice
   rules hold inside it (a task it submitted and did not finish is polled by the next
   run, never paid again: runner.engine.scheduler, `_work`).
4. It is refused when anything else would be paid for (a paid step of the album not done
   yet), so the run pays for exactly the steps the confirmation page listed.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from runner.recipe import takes as takes_file
from runner.review.model import Album, Card


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Actions:
    def __init__(self, recipe: Path, state_dir: Path, out_dir: Path,
                 overrides: dict[str, Any], cli_args: list[str]) -> None:
        self.recipe, self.state_dir, self.out_dir = recipe, state_dir, out_dir
        self.cli_args = cli_args  # --provider, --base-url, --var, --allow-path as given
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._what = ""
        self._log = state_dir / "tmp" / "review-reroll.log"

    def _fresh(self, card: Card, form: str) -> None:
        if form != card.form:
            raise Refused(409, f"this form is out of date: {card.title} changed since the "
                          "page was loaded (a take was kept or a result arrived); reload "
                          "the page and choose again")

    def keep(self, album: Album, card: Card, take: int, form: str) -> None:
        with self._lock:
            self._fresh(card, form)
            if take >= len(card.takes) or card.takes[take].preview:
                raise Refused(409, f"{card.title} has no finished take {take} to keep")
            kept, _doc = takes_file.read(self.recipe)
            kept[card.id] = take
            takes_file.write(self.recipe, kept)

    def reroll(self, album: Album, card: Card, form: str) -> None:
        with self._lock:  # rule 2: the check and the start under one lock
            if self._proc is not None and self._proc.poll() is None:
                raise Refused(409, f"a reroll ({self._what}) is still running; wait for it")
            self._fresh(card, form)  # rule 1
            others = [n.id for n in album.nodes if n.paid and n.id not in card.reroll_steps
                      and n.state in ("to run", "running", "failed")]
            if others:  # rule 4 (free local steps left to run, after a kept take, are fine)
                raise Refused(409, f"the album is not finished ({len(others)} paid steps "
                              f"still to run or running, e.g. {others[0]}): a reroll now "
                              "would pay for those too; let `sunoflow run` finish first")
            self._log.parent.mkdir(parents=True, exist_ok=True)
            cmd = [sys.executable, "-m", "runner", "reroll", str(self.recipe), card.id,
                   "--yes", "-q", "--state-dir", str(self.state_dir), "--out",
                   str(self.out_dir), *self.cli_args]
            with self._log.open("wb") as log:
                self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                              stderr=subprocess.STDOUT)
            self._what = card.id

    def reroll_status(self) -> str | None:
        """A line about the last reroll this server started, for the page."""
        with self._lock:
            if self._proc is None:
                return None
            rc = self._proc.poll()
            if rc is None:
                return f"Reroll of {self._what} running…"
            if rc == 0:
                return f"Reroll of {self._what} finished."
            try:
                tail = self._log.read_text(errors="replace").strip().splitlines()[-1:]
            except OSError:
                tail = []
            return f"Reroll of {self._what} failed (exit {rc})" + \
                (f": {tail[0][:300]}" if tail else "")

    def wait(self) -> None:
        """On the way out: a reroll already paid for finishes its run (it journals as it
        goes; stopping it early would only leave a task for the next run to poll)."""
        if self._proc is not None:
            self._proc.wait()
