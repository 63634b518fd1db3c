"""`sunoflow run --listen` on the newapi relay: `notify_hook` on music and lyrics submits
(the relay page, REFERENCE 5), the relay's task object read as a fetch would read it, a
reported failure confirmed by a poll, and polling as the slow fallback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from runner.fake import FakeServer

KEY = "relay-callbacks-key-31"

RECIPE = """\
version: 1
name: relaycb
provider: {kind: newapi, poll_interval: 0.05, max_poll_interval: %(max)s}
steps:
  words:
    uses: lyrics
    with: {prompt: "A song about rain"}
  song:
    uses: generate
    with: {title: Rain, style: pop, prompt: "{{ steps.words.text }}"}
outputs:
  - path: rain.mp3
    from: "{{ steps.song.file }}"
"""
POLL = "/suno/fetch"


def sunoflow(tmp: Path, url: str, name: str, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SUNO_API_KEY": KEY}
    return subprocess.run(
        [sys.executable, "-m", "runner", "run", str(tmp / "r.yaml"), "--base-url", url,
         "--out", str(tmp / f"out-{name}"), "--state-dir", str(tmp / f"state-{name}"),
         "--report", str(tmp / f"report-{name}.json"), *extra],
        env=env, capture_output=True, text=True, timeout=90, check=False)


def report(tmp: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((tmp / f"report-{name}.json").read_text())
    return data


def submits(log: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in log if e["method"] == "POST" and e["path"].startswith("/suno/submit/")]


def test_notify_hook_callbacks_finish_a_relay_run_without_polls(tmp_path):
    (tmp_path / "r.yaml").write_text(RECIPE % {"max": 20})
    with FakeServer("newapi", api_key=KEY, callbacks={}) as srv:
        run = sunoflow(tmp_path, srv.url, "cb", "--listen", "127.0.0.1:0")
        assert run.returncode == 0, run.stderr
        log = srv.log
    sent = submits(log)
    assert Counter(e["path"] for e in sent) == Counter({"/suno/submit/lyrics": 1,
                                                        "/suno/submit/music": 1})
    hooks = [e["json"].get("notify_hook") for e in sent]
    assert all(isinstance(h, str) and "/cb/" in h for h in hooks)
    counts = report(tmp_path, "cb")["counts"]
    assert counts["callbacks"] == 2
    assert counts["polls"] == 0
    assert sum(1 for e in log if e["path"] == POLL) == 0
    assert (tmp_path / "out-cb" / "rain.mp3").read_bytes()[:3] in (b"ID3", b"\xff\xfb")


def test_lost_relay_callbacks_fall_back_to_polls(tmp_path):
    # Fallback polls come soon (max_poll_interval 0.2): every callback is lost.
    (tmp_path / "r.yaml").write_text(RECIPE % {"max": 0.2})
    with FakeServer("newapi", api_key=KEY, callbacks={"loss": 1.0}) as srv:
        run = sunoflow(tmp_path, srv.url, "lost", "--listen", "127.0.0.1:0")
        assert run.returncode == 0, run.stderr
        log = srv.log
    assert len(submits(log)) == 2
    assert report(tmp_path, "lost")["counts"]["callbacks"] == 0
    assert sum(1 for e in log if e["path"] == POLL) >= 2


@pytest.mark.parametrize("word", ["FAIL", "FAILURE"])
def test_a_failed_relay_task_is_confirmed_by_a_poll_and_its_reason_shown(tmp_path, word):
    (tmp_path / "r.yaml").write_text(RECIPE % {"max": 20})
    fault = {"match": {"path": "/suno/submit/music"},
             "action": {"fail_task": "GENERATE_AUDIO_FAILED", "message": "the muse left"}}
    with FakeServer("newapi", api_key=KEY, callbacks={}, faults=[fault],
                    relay_fail_status=word) as srv:
        run = sunoflow(tmp_path, srv.url, "fail", "--listen", "127.0.0.1:0")
        log = srv.log
    assert run.returncode == 1, run.stderr
    assert f"{word}: the muse left" in run.stdout + run.stderr
    # The callback said "failed"; only a poll of the relay's own record decided it.
    assert sum(1 for e in log if e["path"] == POLL) >= 1
    # new-api refunds a failed task, so it is submitted again for free, twice at most
    # (engine rule 5), and never once more on the word of a callback alone.
    assert Counter(e["path"] for e in submits(log))["/suno/submit/music"] == 3
    assert "refunded" in run.stdout + run.stderr
