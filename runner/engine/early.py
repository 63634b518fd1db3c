"""Early release as a speculation: whether a step may start from a task's first stage,
how an answer to such an early request is read, and what the state directory remembers of
the hosts that refuse it.

REFERENCE (section 5) does not say whether a service accepts an extend, WAV, MP4, stems or
cover request for a take whose task has reached only its first stage (FIRST_SUCCESS, the
`first` callback). Every reading is built for; the engine's rule 8 says why none can
make anyone pay twice:

- accepted: the step ran early, and the speed-up stays;
- refused, by an answer that created no task: the step waits for the whole task and is
  submitted once more. The refusal is remembered per host (the provider's base URL) and
  operation (the step type), for the rest of the run and, in ``early.json`` in the state
  directory, for later runs, so that `release_on_first: auto` sends no more early requests
  of that operation to that host;
- accepted, then failed for being early: learned the same way; paying again stays the
  engine's rule 5 (refunded, or the step's `retry`).

`release_on_first` (the provider block): ``auto`` (default) speculates unless the host is
known to refuse the operation; ``true`` always does (a refusal still costs nothing);
``false`` never does.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from runner import paths
from runner.errors import ProviderError, StepError, TransientError

# The modes are the recipe language's (`release_on_first`); the engine reads them here.
from runner.recipe.model import ALWAYS as ALWAYS
from runner.recipe.model import NEVER as NEVER

FILE = "early.json"
VERSION = 1

# How an answer to an early request reads (`refusal`).
SAYS = "says"  # a definite "no task" answer that says the source has not finished
MAYBE = "maybe"  # a definite 4xx refusal that does not say why: perhaps the same

# Words a service uses for "the task you name is not done yet": in English, and in the
# Chinese some of sunoapi.org's messages are written in (REFERENCE 1.1 quotes one):
# 未完成 "not finished", 生成中 / 处理中 "generating" / "processing", 尚未 "not yet".
NOT_FINISHED = re.compile(
    r"\bnot\s+(?:yet\s+)?(?:been\s+)?(?:finish|complet|succe|ready|done|generated)"
    r"|\bunfinished\b|\bincomplete\b|\bin\s+progress\b|\btoo\s+early\b"
    r"|\bstill\s+(?:being\s+)?(?:generat|process|running|pending)"
    r"|\b(?:FIRST|TEXT)_SUCCESS\b|未完成|生成中|处理中|尚未",
    re.IGNORECASE)

# 4xx codes with which a refusal for being early is plausible (a 425 is literally "Too
# Early"; 404 and 451: the clip or its file is not there yet). 401, 402 and 429 are read
# as what they are before this (AuthError, CreditsError, rate limits); 413 is about the
# request's own text and never about time.
TIMING_CODES = frozenset({400, 403, 404, 409, 412, 422, 425, 451})
# 409, "record already exists" (REFERENCE 1.2: WAV, MP4, cover art, persona): plausible
# from a host that refuses early work (a conflict with the task's state), but never the
# lag of a record (engine rule 8): a record that has not caught up can fail to know a
# finished task, not make up a record that exists, and the same request would be answered
# the same way. (A 409 naming the existing task never reaches the engine: the provider
# polls that task.)
EXISTS = 409


def refusal(exc: ProviderError) -> str | None:
    """How the answer to an early request reads: SAYS, MAYBE, or None when it is no
    refusal for being early (a genuine failure, or an answer that may hide a task).

    Only a definite answer counts: the service answered, and created no task. A 4xx (or
    an envelope code of the 4xx table) is that by DESIGN section 4; so is the service's
    own 5xx envelope ("not created", a TransientError with a code), but only when its
    message says the source is unfinished, as it is otherwise retried as usual. Never a
    gateway 5xx, a timeout or a lost answer (PossiblySubmitted): those may hide a task.
    A StepError without a code came from this machine (a bad input), not the service."""
    code = exc.code
    if code is None:
        return None
    says = bool(NOT_FINISHED.search(str(exc)))
    if isinstance(exc, TransientError):
        return SAYS if says and code >= 500 else None
    if type(exc) is not StepError or not 400 <= code < 500:
        return None
    if says:
        return SAYS
    return MAYBE if code in TIMING_CODES else None


def host_of(base_url: str | None) -> str:
    """The key a host is remembered by: its base URL, scheme and host in lower case,
    without a trailing slash."""
    if not base_url:
        return ""
    parts = urlsplit(base_url.strip())
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path.rstrip('/')}"


@dataclass
class Memory:
    """What the state directory remembers: host -> operation -> the refusal that taught
    it ({"at": unix time, "message": the service's words}). A speed-up's record, not a
    ledger: a damaged or unreadable file costs at most one refused request per operation
    (free), so it is read leniently; a file from a newer sunoflow is read by nobody here
    and never overwritten."""

    path: Path | None
    refused: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    writable: bool = True

    @classmethod
    def load(cls, state_dir: Path | None) -> Memory:
        path = state_dir / FILE if state_dir is not None else None
        if path is None or not path.is_file():
            return cls(path)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return cls(path)
        if not isinstance(doc, dict) or not isinstance(doc.get("version"), int):
            return cls(path)
        if doc["version"] > VERSION:
            return cls(path, writable=False)
        hosts = doc.get("refused") if doc["version"] == VERSION else None
        refused: dict[str, dict[str, dict[str, Any]]] = {}
        if isinstance(hosts, dict):
            for host, ops in hosts.items():
                if isinstance(host, str) and isinstance(ops, dict):
                    refused[host] = {op: dict(v) if isinstance(v, dict) else {}
                                     for op, v in ops.items() if isinstance(op, str)}
        return cls(path, refused)

    def refuses(self, host: str, op: str) -> bool:
        return op in self.refused.get(host, {})

    def learn(self, host: str, op: str, message: str) -> bool:
        """Remember that `host` refused `op` on an unfinished task; True when that is new."""
        if self.refuses(host, op):
            return False
        self.refused.setdefault(host, {})[op] = {"at": round(time.time(), 3),
                                                 "message": message[:300]}
        return True

    def save(self) -> None:
        """Write the file whole, atomically (temporary file, fsync, rename): a kill -9
        leaves the old file or the new one, never half of one. Blocking: the engine calls
        it from a worker thread."""
        if self.path is None or not self.writable:
            return
        text = json.dumps({"version": VERSION, "refused": self.refused}, indent=1,
                          sort_keys=True, ensure_ascii=False) + "\n"
        paths.replace_text(self.path, text, fsync=True)


@dataclass
class Speculation:
    """The run's policy: `mode` (AUTO, ALWAYS, NEVER) for the provider's host."""

    mode: str
    host: str
    memory: Memory
    learned: list[dict[str, str]] = field(default_factory=list)  # this run's, for the report

    def allows(self, op: str) -> bool:
        """May a request of `op` go to the host before the task it reads has finished?"""
        if self.mode == NEVER:
            return False
        return self.mode == ALWAYS or not self.memory.refuses(self.host, op)

    def learn(self, op: str, step: str, message: str) -> bool:
        """The host refused `op` early: remember it (True when that is new)."""
        if not self.memory.learn(self.host, op, message):
            return False
        self.learned.append({"host": self.host, "op": op, "step": step, "message": message})
        return True

    def refusing(self) -> list[str]:
        """The operations this host is known to refuse early (for the report)."""
        return sorted(self.memory.refused.get(self.host, {}))
