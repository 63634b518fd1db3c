"""Early release: with callbacks, a music task's `first` stage starts the steps that read
only its first track (engine rule 7), and that never makes anyone pay twice.

The fake runs on a clock the test moves (`advance`), with a song that takes 600 fake
seconds, so "before the song finished" is a fact of the fake's log, not of timing."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from waiting import until

from runner import recipe as recipes
from runner.engine import pin_first
from runner.fake import FakeServer
from runner.plan import build

KEY = "sk-early-release-Key-31c"
SONG = 600.0  # fake seconds a song takes; its first track is ready at three quarters

RECIPE = """\
version: 1
name: early
provider: {kind: sunoapi, poll_interval: 0.05, max_poll_interval: 0.2%(extra)s}
steps:
  song:
    uses: generate
    with: {title: Rain, style: pop, prompt: "la la"}
  first:
    uses: convert
    with: {audio: "{{ steps.song.tracks[0] }}", format: wav}
  second:
    uses: convert
    with: {audio: "{{ steps.song.tracks[1] }}", format: %(fmt)s}
outputs:
  - path: first.wav
    from: "{{ steps.first.file }}"
  - path: second.%(fmt)s
    from: "{{ steps.second.file }}"
"""
CONFIG = {"latency_scale": 1.0, "callbacks": {},
          "latency": {"generate": {"dist": "fixed", "value": SONG},
                      "*": {"dist": "fixed", "value": 0}}}


@pytest.fixture
def srv() -> Iterator[FakeServer]:
    with FakeServer("sunoapi", api_key=KEY, **CONFIG) as server:
        yield server


def write(tmp: Path, extra: str = "", fmt: str = "wav") -> Path:
    path = tmp / "early.yaml"
    path.write_text(RECIPE % {"extra": extra, "fmt": fmt})
    return path


def command(tmp: Path, url: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "runner", "run", str(tmp / "early.yaml"), "--base-url", url,
            "--out", str(tmp / "out"), "--state-dir", str(tmp / "state"),
            "--report", str(tmp / "report.json"), "--quiet", *extra]


def env() -> dict[str, str]:
    return {**os.environ, "SUNO_API_KEY": KEY}


def wav_posts(srv: FakeServer) -> list[dict[str, Any]]:
    return [e for e in srv.log if e["method"] == "POST" and e["path"] == "/api/v1/wav/generate"]


def paid(srv: FakeServer) -> Counter[str]:
    return Counter(e["path"] for e in srv.log if e["method"] == "POST")


def journal(tmp: Path) -> list[dict[str, Any]]:
    lines = (tmp / "state" / "journal.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def song_task(srv: FakeServer) -> dict[str, Any]:
    return until(lambda: next((t for t in srv.tasks if t["op"] == "generate"), None),
                 "the song's submit")


@contextmanager
def running(tmp: Path, srv: FakeServer, *extra: str) -> Iterator[subprocess.Popen[str]]:
    """`sunoflow run --listen` in the background; killed if the test leaves early."""
    proc = subprocess.Popen(command(tmp, srv.url, "--listen", "127.0.0.1:0", *extra),
                            env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()  # a failed assertion must not wait for the run
        proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def assert_next_run_pays_nothing(tmp: Path, srv: FakeServer) -> None:
    """The next run (no --listen) asks for nothing paid: every key renders as recorded."""
    srv.reset()
    again = subprocess.run(command(tmp, srv.url), env=env(), capture_output=True, text=True,
                           timeout=60, check=False)
    assert again.returncode == 0, again.stderr
    assert paid(srv) == Counter()


def finish(proc: subprocess.Popen[str]) -> None:
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 0, err


def test_the_first_stage_starts_what_needs_only_the_first_track(srv, tmp_path):
    write(tmp_path)
    with running(tmp_path, srv) as proc:
        task = song_task(srv)
        srv.advance(0.8 * SONG)  # past the first stage, well before the end
        post = until(lambda: wav_posts(srv), "the first track's WAV")[0]
        assert post["json"]["audioId"] == task["clips"][0]
        # Made while the song was still running, and the other take's WAV waits.
        assert post["t"] < task["t_ready"]
        assert len(wav_posts(srv)) == 1
        srv.advance(SONG)
        finish(proc)
    second = wav_posts(srv)[1]
    assert second["json"]["audioId"] == task["clips"][1]
    assert second["t"] >= task["t_ready"]
    assert paid(srv) == Counter({"/api/v1/generate": 1, "/api/v1/wav/generate": 2})
    events = journal(tmp_path)
    first = next(e for e in events if e["e"] == "first")
    done = next(e for e in events if e["e"] == "done" and e["key"] == first["key"])
    assert first["v"] == 2  # an older sunoflow stops on it rather than ignore it
    assert first["task_id"] == task["task_id"]
    assert done["outputs"]["tracks"][0] == first["outputs"]["tracks"][0]
    assert [t["id"] for t in done["outputs"]["tracks"]] == task["clips"]
    for name in ("first.wav", "second.wav"):
        assert (tmp_path / "out" / name).read_bytes()[:4] == b"RIFF"
    assert_next_run_pays_nothing(tmp_path, srv)


def test_release_on_first_false_waits_for_the_whole_song(srv, tmp_path):
    write(tmp_path, ", release_on_first: false")
    with running(tmp_path, srv) as proc:
        task = song_task(srv)
        srv.advance(0.8 * SONG)
        until(lambda: any(d["stage"] == "first" for d in srv.callbacks), "the first stage")
        srv.advance(SONG)
        finish(proc)
    assert [p["t"] >= task["t_ready"] for p in wav_posts(srv)] == [True, True]
    assert not any(e["e"] == "first" for e in journal(tmp_path))


def test_a_complete_result_in_another_order_keeps_the_released_track_first(srv, tmp_path):
    """The complete callback lists the clips the other way round. The WAV made early is of
    clip A; were B put first, the next run would render `tracks[0]` as B and pay for a WAV
    of it. The recorded first track stays first (`pin_first`), so nothing is paid again.
    (The second track is made an MP3 here, locally: the fake's song is still running.)"""
    write(tmp_path, fmt="mp3")
    with running(tmp_path, srv) as proc:
        assert proc.stderr is not None
        base = re.search(r"listening for callbacks on (http://\S+)", proc.stderr.readline())
        assert base
        task = song_task(srv)
        srv.advance(0.8 * SONG)
        until(lambda: wav_posts(srv), "the first track's WAV")
        submit = next(e for e in srv.log if e["path"] == "/api/v1/generate")
        token = submit["json"]["callBackUrl"].rsplit("/cb/", 1)[1]
        a, b = task["clips"]
        items = [{"id": c, "audio_url": f"{srv.url}/files/audio/{c}.mp3?v=1",
                  "title": "Rain", "duration": 30.0} for c in (b, a)]
        body = {"code": 200, "msg": "All generated successfully.",
                "data": {"callbackType": "complete", "task_id": task["task_id"],
                         "data": items}}
        with httpx.Client(trust_env=False, timeout=10) as http:
            assert http.post(f"{base[1]}/cb/{token}", json=body).status_code == 200
        finish(proc)
    assert [p["json"]["audioId"] for p in wav_posts(srv)] == [a]
    done = next(e for e in journal(tmp_path) if e["e"] == "done" and e["step"] == "song")
    assert [t["id"] for t in done["outputs"]["tracks"]] == [a, b]
    assert_next_run_pays_nothing(tmp_path, srv)


def test_kill_after_an_early_step_was_paid_then_resume_pays_nothing_twice(srv, tmp_path):
    write(tmp_path)
    with running(tmp_path, srv) as proc:
        song_task(srv)
        srv.advance(0.8 * SONG)
        wav_id = until(lambda: [p["task_id"] for p in wav_posts(srv) if p["task_id"]],
                       "the first track's WAV")[0]
        # Killed once the WAV's task id is journaled, with the song still running.
        until(lambda: wav_id in (tmp_path / "state" / "journal.jsonl").read_text(),
              "the journal")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    srv.advance(SONG)  # the song finishes while nobody watches
    again = subprocess.run(command(tmp_path, srv.url, "--listen", "127.0.0.1:0"), env=env(),
                           capture_output=True, text=True, timeout=60, check=False)
    assert again.returncode == 0, again.stderr
    # The song and the first WAV were polled, not paid again; only the second WAV is new.
    assert paid(srv) == Counter({"/api/v1/generate": 1, "/api/v1/wav/generate": 2})
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["counts"]["possibly_submitted"] == 0
    assert (tmp_path / "out" / "first.wav").read_bytes()[:4] == b"RIFF"


# --- what the plan releases early ------------------------------------------------------

PLAN = """\
version: 1
name: shapes
provider: {kind: sunoapi, base_url: "http://127.0.0.1:9", api_key_env: K}
vars: {songs: [a, b]}
steps:
  song:
    uses: generate
    for_each: "{{ vars.songs }}"
    with: {prompt: "{{ item }}"}
  picked:
    uses: generate
    take: 1
    with: {prompt: x}
  words:
    uses: lyrics
    with: {prompt: x}
  long:
    uses: extend
    for_each: "{{ steps.song }}"
    with: {audio: "{{ item.tracks[0] }}", continue_at: 30}
  title:
    uses: tag
    for_each: "{{ steps.song }}"
    with: {audio: "{{ item.tracks[0] }}", title: "{{ item.tracks[0].title | upper }}"}
  whole:
    uses: tag
    for_each: "{{ steps.song }}"
    with: {audio: "{{ item.tracks[0] }}", title: "{{ item.tracks | length }}"}
  other:
    uses: convert
    with: {audio: "{{ steps.song[1].tracks[1] }}", format: wav}
  file:
    uses: convert
    with: {audio: "{{ steps.long[1].file }}", format: mp3}
  after_take:
    uses: convert
    with: {audio: "{{ steps.picked.tracks[0] }}", format: wav}
  needs_all:
    uses: convert
    needs: [long]
    with: {audio: "{{ steps.long[0].tracks[0] }}", format: wav}
  text:
    uses: generate
    with: {prompt: "{{ steps.words.text }}"}
"""


def test_the_plan_releases_early_only_steps_that_read_just_the_first_track(tmp_path):
    (tmp_path / "shapes.yaml").write_text(PLAN)
    plan = build(recipes.load(tmp_path / "shapes.yaml"))
    early = {i.id: i.early for i in plan.instances.values() if i.early}
    assert early == {
        "long[0]": ("song[0]",), "long[1]": ("song[1]",),
        "title[0]": ("song[0]",), "title[1]": ("song[1]",),
        "file": ("long[1]",),
    }
    # Not early: another track (`other`), every track (`whole`), a step that keeps its
    # second take (`after_take`), `needs` (`needs_all`), and a lyrics step (`text`).
    assert plan.instances["whole[0]"].deps == ("song[0]",)
    assert plan.instances["needs_all"].deps == ("long[0]", "long[1]")


def test_pin_first_keeps_the_recorded_track_first():
    a = {"id": "A", "file": "blobs/a.mp3"}
    first = {"tracks": [a], "task_id": "t", "file": "blobs/a.mp3"}
    b_then_a = {"tracks": [{"id": "B", "file": "b"}, {"id": "A", "file": "a2"}],
                "task_id": "t", "file": "b"}
    assert pin_first(b_then_a, first) == {
        "tracks": [a, {"id": "B", "file": "b"}], "task_id": "t", "file": "blobs/a.mp3"}
    # The service renamed the clip: the recorded one still comes first, in its place.
    renamed = {"tracks": [{"id": "C", "file": "c"}, {"id": "B", "file": "b"}], "file": "c"}
    assert pin_first(renamed, first)["tracks"] == [a, {"id": "B", "file": "b"}]
