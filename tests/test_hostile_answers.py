"""A hostile or broken service, as `sunoflow run` meets it: answers without end, dripping a
byte at a time, nested a hundred thousand levels, of the wrong types, or echoing the key as
JSON escapes. Each run is the real CLI against the fake, under a memory cap, and counts
what was paid for: an answer sunoflow cannot read must never make it pay twice."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakecli import config_of

from runner.fake import FakeServer

KEY = "sk-hostile-answers-Key-77"
MEMORY = 1 << 30  # bytes of address space a run may use (an endless answer read whole: GBs)

ONE_SONG = """\
version: 1
name: one
provider: {kind: local, poll_interval: 0.05, max_poll_interval: 0.2, request_timeout: 1}
steps:
  song:
    uses: generate
    with: {prompt: "la la", style: pop, title: One}
outputs:
  - path: one.mp3
    from: "{{ steps.song.tracks[0].file }}"
"""

LYRICS = """\
version: 1
name: words
provider: {kind: local, poll_interval: 0.05, max_poll_interval: 0.2}
steps:
  words:
    uses: lyrics
    with: {prompt: "a song about rain"}
"""


DRIP = {"drip": 60, "patch": {"zpad": "x" * 20_000}}


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


def sunoflow(tmp: Path, url: str, kind: str = "sunoapi", recipe: str = "r.yaml",
             quiet: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SUNO_API_KEY"}
    env["SUNO_API_KEY"] = KEY
    return subprocess.run(
        [sys.executable, "-m", "runner", "run", str(tmp / recipe), "--provider", kind,
         "--base-url", url, "--out", str(tmp / "out"), "--state-dir", str(tmp / "state"),
         "--report", str(tmp / "report.json"), *(["--quiet"] if quiet else [])],
        env=env, capture_output=True, text=True, timeout=120, check=False,
        preexec_fn=_cap_memory)


def paid(srv: FakeServer) -> Counter[str]:
    return Counter(t["op"] for t in srv.tasks)


@pytest.fixture
def suno() -> Iterator[FakeServer]:
    with FakeServer("sunoapi", api_key=KEY) as server:
        yield server


@pytest.fixture
def relay() -> Iterator[FakeServer]:
    with FakeServer("newapi", api_key=KEY) as server:
        yield server


def once(path: str, action: dict[str, Any], method: str = "POST") -> dict[str, Any]:
    return {"match": {"path": path, "method": method}, "action": action, "times": 1}


def ok(run: subprocess.CompletedProcess[str]) -> None:
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert "internal error" not in run.stderr


@pytest.mark.parametrize("action", [
    {"endless": True},  # 8 MiB later: the answer is refused, its task id kept
    # 60 bytes a second, each read in time, 20 kB in all (5 minutes): the total deadline
    # (2 s) strikes after the task id came.
    DRIP,
    {"nest": 100_000},  # json's RecursionError
], ids=["endless", "drip", "nest"])
def test_an_unreadable_answer_to_a_submit_that_names_its_task_is_polled_not_paid_again(
        suno, tmp_path, action):
    (tmp_path / "r.yaml").write_text(ONE_SONG)
    suno.configure(faults=[once("/api/v1/generate", action)])
    run = sunoflow(tmp_path, suno.url)
    ok(run)
    assert paid(suno) == {"generate": 1}
    assert (tmp_path / "out" / "one.mp3").stat().st_size > 0
    assert "possibly submitted" not in run.stderr
    again = sunoflow(tmp_path, suno.url)
    ok(again)
    assert paid(suno) == {"generate": 1}


@pytest.mark.parametrize("action", [{"endless": True}, DRIP, {"nest": 100_000}],
                         ids=["endless", "drip", "nest"])
def test_an_unreadable_poll_answer_is_polled_again(suno, tmp_path, action):
    (tmp_path / "r.yaml").write_text(ONE_SONG)
    suno.configure(faults=[once("/api/v1/generate/record-info", action, method="GET")])
    run = sunoflow(tmp_path, suno.url)
    ok(run)
    assert paid(suno) == {"generate": 1}


def test_a_nesting_bomb_in_the_relays_submit_answer_keeps_the_task_id(relay, tmp_path):
    (tmp_path / "r.yaml").write_text(ONE_SONG)
    relay.configure(faults=[once("/suno/submit/music", {"nest": 100_000})])
    run = sunoflow(tmp_path, relay.url, "newapi")
    ok(run)
    assert len(relay.tasks) == 1


def test_wrong_types_in_a_finished_song_are_read_as_absent(suno, tmp_path):
    """`imageUrl: 123` and a 4000-digit duration: the song is fine, the artwork and the
    length are not known."""
    (tmp_path / "r.yaml").write_text(ONE_SONG)
    spoiled = {"imageUrl": 123, "duration": 10 ** 3999, "title": ["x"], "tags": {"a": 1}}
    suno.configure(faults=[once("/api/v1/generate/record-info",
                                {"patch": {"data": {"response": {"sunoData": [spoiled] * 2}}}},
                                method="GET")])
    run = sunoflow(tmp_path, suno.url)
    ok(run)
    assert paid(suno) == {"generate": 1}
    report = (tmp_path / "report.json").read_text()
    assert '"image_url": null' in report
    assert '"duration": null' in report


@pytest.mark.parametrize(("fake", "recipe", "kind", "path", "patch"), [
    ("suno", LYRICS, "sunoapi", "/api/v1/lyrics/record-info", {"data": {"response": "abc"}}),
    ("relay", ONE_SONG, "newapi", "/suno/fetch", {"data": [{"data": [1, 2]}]}),
], ids=["lyrics-response-text", "relay-clips-numbers"])
def test_a_malformed_record_fails_the_step_and_the_next_run_polls_it(
        request, tmp_path, fake, recipe, kind, path, patch):
    srv: FakeServer = request.getfixturevalue(fake)
    (tmp_path / "r.yaml").write_text(recipe)
    method = "GET" if kind == "sunoapi" else "POST"
    srv.configure(faults=[once(path, {"patch": patch}, method=method)])
    first = sunoflow(tmp_path, srv.url, kind)
    assert first.returncode == 1, first.stderr
    assert "unexpected shape" in (tmp_path / "report.json").read_text()
    assert "Traceback" not in first.stderr
    assert "internal error" not in first.stderr
    second = sunoflow(tmp_path, srv.url, kind)
    ok(second)
    assert len(srv.tasks) == 1  # the recorded task was polled, not paid for again


def test_the_key_echoed_as_json_escapes_is_redacted_everywhere(suno, tmp_path):
    (tmp_path / "r.yaml").write_text(LYRICS)
    echo = f"token {KEY} is not valid"
    suno.configure(faults=[once("/api/v1/lyrics", {"envelope_code": 400, "message": echo,
                                                   "escape_json": True})])
    run = sunoflow(tmp_path, suno.url, quiet=False)
    assert run.returncode == 1
    assert KEY not in run.stdout + run.stderr
    assert "[redacted]" in run.stderr
    leaks = [p for p in tmp_path.rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]
    assert leaks == []
    assert "[redacted]" in (tmp_path / "report.json").read_text()


def test_the_fakes_command_line_takes_hostile_faults() -> None:
    import json

    rule = {"match": {"path": "/api/v1/generate"}, "action": {"nest": 50, "drip": 100}}
    assert config_of("--fault", json.dumps(rule))["faults"] == [rule]
    bad = subprocess.run([sys.executable, "-m", "runner.fake", "--fault",
                          '{"match": {}, "action": {"nest": 0}}'],
                         capture_output=True, text=True, timeout=30, check=False)
    assert bad.returncode == 2
    assert "action.nest: expected a positive integer" in bad.stderr


UPLOAD = """\
version: 1
name: upload
provider: {kind: local, poll_interval: 0.05, max_poll_interval: 0.2}
steps:
  cover:
    uses: upload_cover
    with: {audio: take.mp3, prompt: "la la", style: pop, title: Again}
"""


def test_a_malformed_upload_answer_fails_before_anything_is_paid(suno, tmp_path):
    from runner.studio import compose

    compose.synth(tmp_path / "take.mp3", seed="take", duration=2.0, style="folk")
    (tmp_path / "r.yaml").write_text(UPLOAD)
    suno.configure(faults=[once("/api/file-stream-upload", {"patch": {"data": [1, 2]}})])
    first = sunoflow(tmp_path, suno.url)
    assert first.returncode == 1, first.stderr
    assert "Traceback" not in first.stderr
    assert "internal error" not in first.stderr
    assert "nothing was submitted" in (tmp_path / "report.json").read_text()
    assert paid(suno) == {}
    again = sunoflow(tmp_path, suno.url)
    ok(again)
    assert '"possibly_submitted": 0' in (tmp_path / "report.json").read_text()
    assert paid(suno) == {"upload_cover": 1}
