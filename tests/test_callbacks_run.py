"""`sunoflow run --listen` against the sunoapi fake with callbacks on: the callbacks finish
the run with fewer polls than polling; lost ones fall back to polls; duplicates, reordered
stages, an error callback and forged callbacks change nothing they should not."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from waiting import until

from runner.fake import FakeServer

KEY = "sk-callbacks-run-Key-77a"

RECIPE = """\
version: 1
name: cb
provider: {kind: sunoapi, poll_interval: 0.05, max_poll_interval: %(max)s}
steps:
  words:
    uses: lyrics
    with: {prompt: "A song about rain"}
  song:
    uses: generate
    with: {title: Rain, style: pop, prompt: "{{ steps.words.text }}"}
  master:
    uses: convert
    with: {audio: "{{ steps.song.tracks[0] }}", format: wav}
  art:
    uses: cover
    with: {audio: "{{ steps.song.tracks[0] }}"}
outputs:
  - path: rain.wav
    from: "{{ steps.master.file }}"
  - path: cover.png
    from: "{{ steps.art.images[0].file }}"
"""
PAID = {"/api/v1/lyrics": 1, "/api/v1/generate": 1, "/api/v1/wav/generate": 1,
        "/api/v1/suno/cover/generate": 1}
POLLS = ("/api/v1/lyrics/record-info", "/api/v1/generate/record-info",
         "/api/v1/wav/record-info", "/api/v1/suno/cover/record-info")


@pytest.fixture
def srv() -> Iterator[FakeServer]:
    with FakeServer("sunoapi", api_key=KEY, callbacks={}) as server:
        yield server


def command(tmp: Path, url: str, name: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "runner", "run", str(tmp / "cb.yaml"), "--base-url", url,
            "--out", str(tmp / f"out-{name}"), "--state-dir", str(tmp / f"state-{name}"),
            "--report", str(tmp / f"report-{name}.json"), "--quiet", *extra]


def env() -> dict[str, str]:
    return {**os.environ, "SUNO_API_KEY": KEY}


def sunoflow(tmp: Path, url: str, name: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command(tmp, url, name, *extra), env=env(), capture_output=True,
                          text=True, timeout=90, check=False)


def write(tmp: Path, max_poll: float) -> None:
    (tmp / "cb.yaml").write_text(RECIPE % {"max": max_poll})


def report(tmp: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((tmp / f"report-{name}.json").read_text())
    return data


def paid(log: list[dict[str, Any]]) -> Counter[str]:
    return Counter(e["path"] for e in log if e["method"] == "POST")


def polls(log: list[dict[str, Any]]) -> int:
    return sum(1 for e in log if e["path"] in POLLS)


def token_of(srv: FakeServer) -> str:
    url = next(e["json"]["callBackUrl"] for e in srv.log if e["method"] == "POST")
    return str(url.rsplit("/cb/", 1)[1])


def everything_written(tmp: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in tmp.rglob("*")
                   if p.is_file() and p.suffix in (".jsonl", ".json", ".lock", ""))


def test_callbacks_finish_the_run_with_fewer_polls_than_polling(srv, tmp_path):
    # Fallback polls would start 3 x 20 s after a submit: every result here comes by callback.
    write(tmp_path, 20)
    polled = sunoflow(tmp_path, srv.url, "poll")
    assert polled.returncode == 0, polled.stderr
    first = srv.log
    srv.reset()
    # A fresh start: without the lock too, which would otherwise restore every step.
    (tmp_path / "cb.lock").unlink()
    called = sunoflow(tmp_path, srv.url, "cb", "--listen", "127.0.0.1:0")
    assert called.returncode == 0, called.stderr
    second = srv.log

    assert paid(first) == paid(second) == Counter(PAID)
    assert polls(first) >= 4
    assert polls(second) == 0 < polls(first)
    counts = report(tmp_path, "cb")["counts"]
    assert counts["callbacks"] == 4
    assert counts["polls"] == 0
    assert report(tmp_path, "cb")["callbacks"]["used"] == 4
    assert all(d["status"] == 200 for d in srv.callbacks)
    assert re.search(r"listening for callbacks on http://127\.0\.0\.1:\d+", called.stderr)
    # The same album either way.
    for name in ("rain.wav", "cover.png"):
        assert (tmp_path / "out-cb" / name).read_bytes() == \
            (tmp_path / "out-poll" / name).read_bytes()
    # The token is a secret: in no output, report, journal or lock.
    token = token_of(srv)
    assert token not in called.stdout + called.stderr
    assert token not in everything_written(tmp_path)


def test_lost_callbacks_fall_back_to_polls(srv, tmp_path):
    srv.configure(callbacks={"loss": 1.0})
    write(tmp_path, 0.1)
    run = sunoflow(tmp_path, srv.url, "lost", "--listen", "127.0.0.1:0")
    assert run.returncode == 0, run.stderr
    assert paid(srv.log) == Counter(PAID)
    assert report(tmp_path, "lost")["counts"]["callbacks"] == 0
    assert polls(srv.log) >= 4
    # The service reported CALLBACK_EXCEPTION for every task; the work was there to take.
    assert all(t["callback_failed"] for t in srv.tasks)
    assert (tmp_path / "out-lost" / "rain.wav").read_bytes()[:4] == b"RIFF"


def test_duplicate_and_reordered_callbacks_are_harmless(srv, tmp_path):
    srv.configure(callbacks={"duplicate": 1.0, "jitter": 0.3})
    write(tmp_path, 20)
    run = sunoflow(tmp_path, srv.url, "dup", "--listen", "127.0.0.1:0")
    assert run.returncode == 0, run.stderr
    assert paid(srv.log) == Counter(PAID)
    rep = report(tmp_path, "dup")
    assert rep["counts"]["callbacks"] == 4
    assert rep["callbacks"]["rejected"] == {}
    until(lambda: len(srv.callbacks) == 12, "every copy to be sent")  # 2 x (3 + 1 + 1 + 1)
    # A copy that came while the run lived was answered 200; one that came as it ended
    # found the listener gone: refused, or reset or left unanswered by a process on its way
    # out (a transport error, no HTTP status; which one is a race with the exit). None was
    # answered with a refusal.
    refused = [(d["status"], d["error"]) for d in srv.callbacks
               if d["status"] not in (200, None)]
    assert refused == [], refused
    assert all(d["error"] and d["error"] != "lost" for d in srv.callbacks
               if d["status"] is None), srv.callbacks
    assert {s["status"] for s in rep["steps"]} == {"succeeded"}


def test_an_error_callback_is_confirmed_by_a_poll_and_classified_like_one(srv, tmp_path):
    srv.configure(faults=[{"match": {"op": "generate"}, "times": 1, "action": {
        "fail_task": "GENERATE_AUDIO_FAILED", "code": 531, "message": "refunded"}}])
    write(tmp_path, 20)
    run = sunoflow(tmp_path, srv.url, "err", "--listen", "127.0.0.1:0")
    assert run.returncode == 0, run.stderr
    # 531: refunded, so resubmitted once for free (engine rule 5), and only once.
    assert paid(srv.log)["/api/v1/generate"] == 2
    assert [d["stage"] for d in srv.callbacks].count("error") == 1
    generate_polls = [e for e in srv.log if e["path"] == "/api/v1/generate/record-info"]
    assert len(generate_polls) == 1  # the confirmation of the error; the retry came by callback
    counts = report(tmp_path, "err")["counts"]
    assert counts["callbacks"] == 4
    assert counts["polls"] == 1


ONE = """\
version: 1
name: one
provider: {kind: sunoapi, poll_interval: 0.05, max_poll_interval: 0.2}
steps:
  song:
    uses: generate
    with: {title: Rain, style: pop, prompt: "la la"}
outputs:
  - path: rain.mp3
    from: "{{ steps.song.file }}"
"""


def test_forged_callbacks_change_nothing(tmp_path):
    config = {"latency_scale": 1.0, "latency": {"*": {"dist": "fixed", "value": 60}},
              "callbacks": {}}
    (tmp_path / "cb.yaml").write_text(ONE)
    with FakeServer("sunoapi", api_key=KEY, **config) as srv:
        with subprocess.Popen(command(tmp_path, srv.url, "forged", "--listen", "127.0.0.1:0"),
                              env=env(), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                              text=True) as proc:
            try:
                assert proc.stderr is not None
                line = proc.stderr.readline()
                base = re.search(r"listening for callbacks on (http://\S+)", line)
                assert base, line
                tid = until(lambda: next((e["task_id"] for e in srv.log if e.get("task_id")), None),
                            "the submit")
                token = token_of(srv)
                evil = "http://127.0.0.1:9/evil.mp3"
                done = {"code": 200, "msg": "ok", "data": {"callbackType": "complete",
                        "task_id": tid, "data": [{"id": "x", "audio_url": evil}] * 2}}
                with httpx.Client(trust_env=False, timeout=10) as http:
                    good = f"{base[1]}/cb/{token}"
                    answers = [
                        http.post(f"{base[1]}/cb/{'A' * len(token)}", json=done).status_code,
                        http.post(f"{base[1]}/cb/{token}x", json=done).status_code,
                        http.post(good, json={**done, "data": {**done["data"], "task_id": "nope"}}
                                  ).status_code,
                        http.post(good, content=b"{" * 10 + b"not json").status_code,
                        http.post(good, content=b" " * (1024 * 1024 + 1)).status_code,
                        # The right token and task, but a failure the service never reported:
                        # confirmed by a poll (still running), so the task is not given up.
                        http.post(good, json={"code": 531, "msg": "refunded", "data": {
                            "callbackType": "error", "task_id": tid, "data": None}}).status_code,
                    ]
                assert answers == [404, 404, 404, 400, 413, 200]
                srv.advance(120)  # now the task is done and the real callbacks go out
                err = proc.stderr.read()
                assert proc.wait(timeout=60) == 0, err
            finally:
                if proc.poll() is None:
                    proc.kill()  # a failed assertion must not wait for the run
        log = srv.log
    assert paid(log) == Counter({"/api/v1/generate": 1})
    written = everything_written(tmp_path)
    assert "evil.mp3" not in written
    assert token not in written + err
    assert "callback rejected (wrong path or token)" in err
    rep = report(tmp_path, "forged")
    assert rep["callbacks"]["rejected"] == {
        "wrong path or token": 2, "unknown task": 1, "malformed JSON": 1, "body too large": 1}
    assert (tmp_path / "out-forged" / "rain.mp3").read_bytes()[:3] in (b"ID3", b"\xff\xfb")


@pytest.mark.parametrize(("args", "message"), [
    (["--provider", "local", "--listen", "127.0.0.1:0"],
     "callbacks need provider sunoapi or newapi"),
    (["--listen", "0.0.0.0:8787"], "set callback_url in the provider block"),
    (["--listen", "8787"], "expected HOST:PORT"),
])
def test_listen_usage_errors_exit_2(tmp_path, args, message):
    (tmp_path / "cb.yaml").write_text(ONE)
    run = subprocess.run([sys.executable, "-m", "runner", "run", str(tmp_path / "cb.yaml"),
                          "--state-dir", str(tmp_path / "state"), *args], env=env(),
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 2, run.stderr
    assert message in run.stderr
    assert "Traceback" not in run.stderr


def test_a_resumed_task_is_polled_and_new_ones_are_called_back(tmp_path):
    config = {"latency_scale": 1.0, "latency": {"*": {"dist": "fixed", "value": 60}},
              "callbacks": {}}
    write(tmp_path, 0.2)
    with FakeServer("sunoapi", api_key=KEY, **config) as srv:
        with subprocess.Popen(command(tmp_path, srv.url, "resume", "--listen", "127.0.0.1:0"),
                              env=env(), stderr=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL) as proc:
            try:
                # Interrupted once the lyrics task id is journaled (were it not, the next run
                # would rightly count it as possibly submitted and pay again).
                journal = tmp_path / "state-resume" / "journal.jsonl"
                until(lambda: journal.exists() and '"e":"submitted"' in journal.read_text(),
                      "the first submit to be journaled")
                proc.send_signal(signal.SIGINT)
                assert proc.wait(timeout=30) == 130
            finally:
                if proc.poll() is None:
                    proc.kill()
        srv.configure(latency_scale=0)  # the lyrics task is done; new tasks finish at once
        srv.advance(120)
        again = sunoflow(tmp_path, srv.url, "resume", "--listen", "127.0.0.1:0")
        assert again.returncode == 0, again.stderr
        log = srv.log
    assert paid(log) == Counter(PAID)  # the recorded lyrics task was not submitted again
    counts = report(tmp_path, "resume")["counts"]
    # Its callback went to the first run's token: the resumed task is polled, the three
    # new ones are called back.
    assert counts["callbacks"] == 3
    assert sum(1 for e in log if e["path"] == "/api/v1/lyrics/record-info") >= 1
    assert polls(log) == sum(1 for e in log if e["path"] == "/api/v1/lyrics/record-info")


def test_a_listen_address_in_use_is_a_usage_error(tmp_path):
    (tmp_path / "cb.yaml").write_text(ONE)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run(command(tmp_path, "http://127.0.0.1:9", "busy", "--listen",
                                     f"127.0.0.1:{port}"), env=env(), capture_output=True,
                             text=True, timeout=60, check=False)
    assert run.returncode == 2, run.stderr
    assert f"--listen 127.0.0.1:{port}: cannot listen there" in run.stderr
