"""What every documented status word and code means to a run: one table, read by both
remote providers and printed in the README ("Service codes").

Status words (REFERENCE 2.7, 2.22, 3.3, 5). A task's status is one of:

- running: the documented running words (PENDING, TEXT_SUCCESS, FIRST_SUCCESS, the quick
  start's GENERATING, the relay's NOT_START, SUBMITTED, QUEUED, IN_PROGRESS): poll again;
- failed: every documented failure word (CREATE_TASK_FAILED, GENERATE_*_FAILED,
  SENSITIVE_WORD_ERROR, the quick start's FAILED, the relay's FAIL and FAILURE) and, as
  api.box's own client does, any word containing FAIL or ERROR: the task ends;
- anything else: read as running, and bounded by the step's timeout (runner.engine.deadlines),
  so no status word a host invents can keep a run waiting without end.

Codes. A code reaches us in two places, and each documented value has one outcome:

- the envelope of an answer to a request (REFERENCE 1.1, 1.2): did the request create a
  task, and may it be sent again;
- a finished task's code (record-info `errorCode`, a callback's `code`; REFERENCE 1.2):
  was the failed task paid for.

Outcomes: REFUNDED (resubmitted automatically: it costs nothing), FAILED (the credits are
spent: only the step's `retry:` pays for another try), NOT_CREATED (no task exists: retried
with backoff, free), REJECTED (no task exists, and the same request would be refused
again: the step fails, fix the recipe), STOP (no new submission in this run), EXISTING
(409: the record exists; its task is polled instead of paying again).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger("sunoflow")

REFUNDED, FAILED, NOT_CREATED, REJECTED, STOP, EXISTING = (
    "refunded", "failed", "not created", "rejected", "stop the run", "existing")

RUNNING = frozenset({"PENDING", "TEXT_SUCCESS", "FIRST_SUCCESS", "GENERATING", "NOT_START",
                     "SUBMITTED", "QUEUED", "IN_PROGRESS"})
FAILURE_WORDS = frozenset({"CREATE_TASK_FAILED", "GENERATE_AUDIO_FAILED",
                           "GENERATE_LYRICS_FAILED", "GENERATE_WAV_FAILED",
                           "GENERATE_MP4_FAILED", "SENSITIVE_WORD_ERROR", "FAILED", "FAIL",
                           "FAILURE"})


def failed(status: str) -> bool:
    """Whether a status word ends its task as failed. CALLBACK_EXCEPTION is not read here:
    it says only that the callback to us failed (the work may exist), and each reader
    decides on what the record holds."""
    word = status.upper()
    return word in FAILURE_WORDS or "FAIL" in word or "ERROR" in word


def known(status: str) -> bool:
    """Whether a status word is documented (running, success or failure)."""
    word = status.upper()
    return word in RUNNING or word in ("SUCCESS", "CALLBACK_EXCEPTION") or failed(word)


_told: set[str] = set()


def note_unknown(status: str, provider: str) -> None:
    """Say once per run and word that a host answered a status no page documents: it is
    polled as running, and the step's timeout ends the wait (runner.engine.deadlines)."""
    word = status.upper()
    if word and not known(word) and word not in _told:
        _told.add(word)
        log.warning("%s: the service reports the task status %r, which its documentation "
                    "does not name; polling on as if running, until the step's timeout",
                    provider, word[:40])


@dataclass(frozen=True)
class Meaning:
    outcome: str
    text: str  # the documented wording, shortened


# A finished task's code: record-info `errorCode` and the music-family callbacks' `code`
# (REFERENCE 1.2); 451 is the MP4 callback's. Only 531 says the credits came back: every
# other failure is taken as paid, so nothing is resubmitted on a guess.
TASK: dict[int, Meaning] = {
    400: Meaning(FAILED, "the lyrics contain copyrighted content"),
    408: Meaning(FAILED, "the generation timed out"),
    413: Meaning(FAILED, "the uploaded audio matches existing artwork"),
    451: Meaning(FAILED, "the service could not download the source audio"),
    500: Meaning(FAILED, "server error"),
    501: Meaning(FAILED, "audio generation failed"),
    531: Meaning(REFUNDED, "generation failed, credits refunded"),
}

# The envelope `code` of an answer, per code table: "classic" (generate, extend, upload-*,
# add-*, lyrics, style, credits; REFERENCE 1.1) and "newer" (WAV, MP4, cover art, stems,
# recovery, uploads; 1.2). They differ only in 429.
ENVELOPE: dict[int, Meaning] = {
    400: Meaning(REJECTED, "invalid parameters"),
    401: Meaning(STOP, "unauthorized: the key is wrong"),
    402: Meaning(STOP, "insufficient credits"),
    404: Meaning(REJECTED, "invalid request method or path"),
    405: Meaning(NOT_CREATED, "rate limit exceeded"),
    409: Meaning(EXISTING, "the record exists (WAV, MP4, cover art)"),
    413: Meaning(REJECTED, "theme or prompt too long"),
    422: Meaning(REJECTED, "validation error"),
    429: Meaning(STOP, "insufficient credits (classic table)"),
    430: Meaning(NOT_CREATED, "call frequency too high"),
    451: Meaning(REJECTED, "failed to fetch the source file"),
    455: Meaning(NOT_CREATED, "system maintenance"),
    500: Meaning(NOT_CREATED, "server error (the service's own answer: no task)"),
}
NEWER_429 = Meaning(NOT_CREATED, "rate limited (newer table)")


def envelope(code: int, *, newer: bool) -> Meaning:
    """What an answer's envelope code means. An undocumented 5xx is the service's own error
    answer (no task, DESIGN 4); any other undocumented code is a refusal."""
    if code == 429 and newer:
        return NEWER_429
    if code in ENVELOPE:
        return ENVELOPE[code]
    if code >= 500:
        return Meaning(NOT_CREATED, "server error")
    return Meaning(REJECTED, "refused")


def task(code: object, message: str = "") -> Meaning:
    """What a failed task's code (and message) means: refunded only when the service says
    so (531, or a message saying the credits were refunded)."""
    text = message.lower()
    if "refunded" in text and "not refunded" not in text:
        return TASK[531]
    try:
        number = int(str(code))
    except ValueError:
        return Meaning(FAILED, "failed")
    return TASK.get(number, Meaning(FAILED, "failed"))


def table() -> list[str]:
    """The README's table, from the dicts above (a test keeps the two the same)."""
    rows = ["| where | code | meaning | what sunoflow does |", "|---|---|---|---|"]
    does = {REFUNDED: "submits again automatically (free)",
            FAILED: "the step fails; `retry:` pays for another try",
            NOT_CREATED: "retries with backoff (free: no task exists)",
            REJECTED: "the step fails, nothing was created; fix the recipe",
            STOP: "stops every new submission in this run",
            EXISTING: "polls the existing task (never pays twice)"}
    for code, m in sorted(ENVELOPE.items()):
        rows.append(f"| answer | {code} | {m.text} | {does[m.outcome]} |")
    rows.append(f"| answer | 429 (newer) | {NEWER_429.text} | {does[NEWER_429.outcome]} |")
    for code, m in sorted(TASK.items()):
        rows.append(f"| task | {code} | {m.text} | {does[m.outcome]} |")
    return rows
