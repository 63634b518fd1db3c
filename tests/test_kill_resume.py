"""kill -9 at random moments, then resume: nothing recorded is ever paid for twice, and no
file is lost or corrupt.

`sunoflow run` runs as a real process against the sunoapi fake (real HTTP on loopback,
tasks taking a few tenths of a second), and is SIGKILLed again and again at random
moments: between submits, in the middle of a submit, while polling, while downloading,
while writing the album. Then it is run until it succeeds. The fake's request log says
which tasks were created (paid); the journal says which task ids sunoflow recorded.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from runner.fake import FakeServer

KEY = "sk-kill-test-0f3c"
SONGS = 5
KILLS = 22

RECIPE = f"""\
version: 1
name: kill-ep
provider: {{kind: sunoapi, poll_interval: 0.05, max_poll_interval: 0.2,
           rate_limit: {{requests: 1000, per_seconds: 1}}}}
vars:
  n: {list(range(SONGS))}
steps:
  words:
    uses: lyrics
    for_each: "{{{{ vars.n }}}}"
    with: {{prompt: "song number {{{{ item }}}}"}}
  song:
    uses: generate
    for_each: "{{{{ steps.words }}}}"
    with: {{title: "Track {{{{ index }}}}", style: synthwave, prompt: "{{{{ item.text }}}}"}}
  long:
    uses: extend
    for_each: "{{{{ steps.song }}}}"
    with: {{audio: "{{{{ item.tracks[0] }}}}", continue_at: 20, prompt: outro}}
  master:
    uses: convert
    for_each: "{{{{ steps.long }}}}"
    with: {{audio: "{{{{ item.tracks[0] }}}}", format: wav}}
outputs:
  - for_each: "{{{{ steps.master }}}}"
    path: "{{{{ index }}}}.wav"
    from: "{{{{ item.file }}}}"
"""

# The fake has no rate limit, so the recipe lifts the client's (sunoapi's default, 20
# requests per 10 s, made the final run wait a window for nothing: a run killed within
# 1.2 s of starting seldom reached it anyway).

SUBMITS = {"/api/v1/lyrics", "/api/v1/generate", "/api/v1/generate/extend",
           "/api/v1/wav/generate"}


def start(tmp: Path, url: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SUNO_API_KEY": KEY}
    return subprocess.Popen(
        [sys.executable, "-m", "runner", "run", str(tmp / "ep.yaml"), "--base-url", url,
         "--out", str(tmp / "out"), "--state-dir", str(tmp / "state"), "--quiet",
         "--report", str(tmp / "report.json")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def journal(tmp: Path) -> list[dict]:
    events = []
    for raw in (tmp / "state" / "journal.jsonl").read_bytes().split(b"\n"):
        if raw.strip():
            try:
                events.append(json.loads(raw))
            except ValueError:
                pass  # a torn line, which the store ignores too
    return events


def test_kill_9_at_random_moments_never_pays_twice_for_a_recorded_task(tmp_path: Path):
    (tmp_path / "ep.yaml").write_text(RECIPE)
    rng = random.Random(20261123)
    # Each task takes 100 s on the fake's clock, which the test moves 15 s after every
    # kill (plus the second or so of real time a run lives). A song's chain is four tasks,
    # so the album needs over 400 s of fake time and 22 kills give it at most ~370 s: every
    # kill lands while there is work in flight, whatever the speed of the machine.
    config = {"latency": {"*": {"dist": "fixed", "value": 100}}, "latency_scale": 1.0,
              "seed": 7}
    with FakeServer("sunoapi", api_key=KEY, **config) as srv:
        kills = 0
        while kills < KILLS:
            proc = start(tmp_path, srv.url)
            time.sleep(rng.uniform(0.3, 1.2))
            assert proc.poll() is None, "the album finished during the kill phase"
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            srv.advance(15)
        # Let every task finish: those in flight now, and new ones at once.
        srv.configure(latency_scale=0)
        srv.advance(10_000)
        final = None
        for _ in range(5):
            p = start(tmp_path, srv.url)
            final = p.wait(timeout=120)
            if final == 0:
                break
        assert final == 0
        log = srv.log

    created = [e for e in log if e["method"] == "POST" and e["path"] in SUBMITS
               and e.get("task_id")]
    events = journal(tmp_path)
    recorded: dict[str, set[str]] = {}
    for ev in events:
        if ev["e"] == "submitted":
            recorded.setdefault(ev["key"], set()).add(ev["task_id"])
    # 1. Every step key that reached the service has exactly one recorded task: a recorded
    #    task id is polled on resume, never submitted again.
    assert len(recorded) == SONGS * 4
    assert all(len(tasks) == 1 for tasks in recorded.values()), recorded
    # 2. Every created task is either the recorded one, or was lost in the window between
    #    sending a submit and recording its answer (an intent with no task id after it).
    recorded_ids = {t for tasks in recorded.values() for t in tasks}
    orphans = [e["task_id"] for e in created if e["task_id"] not in recorded_ids]
    open_intents = 0
    last: dict[str, str] = {}
    for ev in events:
        if ev["e"] == "intent" and last.get(ev["key"]) == "intent":
            open_intents += 1
        if ev["e"] in ("intent", "submitted", "done"):
            last[ev["key"]] = ev["e"]
    assert len(orphans) <= open_intents, (orphans, open_intents)
    assert Counter(e["task_id"] for e in created).most_common(1)[0][1] == 1
    # 3. No lost or corrupt file: every stored blob hashes to its name, the album is whole.
    for blob in (tmp_path / "state" / "blobs").rglob("*"):
        if blob.is_file():
            assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name[:64]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert sorted(f["path"] for f in manifest["files"]) == [f"{i}.wav" for i in range(SONGS)]
    for f in manifest["files"]:
        data = (tmp_path / "out" / f["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == f["sha256"]
    assert kills == KILLS
    assert len(created) > SONGS  # the kills reached past the first step of the chain


# --- a kill inside a reusable recipe ---------------------------------------------------

CALLEE = """\
version: 1
inputs:
  title: {type: string}
steps:
  first:
    uses: generate
    with: {title: "{{ inputs.title }}", style: synthwave, prompt: "[Verse] {{ inputs.title }}"}
  whole:
    uses: extend
    with: {audio: "{{ steps.first.tracks[0] }}", continue_at: 20, prompt: outro}
outputs:
  file: "{{ steps.whole.tracks[0].file }}"
"""

CALLER = """\
version: 1
name: kill-calls
provider: {kind: sunoapi, poll_interval: 0.05, max_poll_interval: 0.2}
steps:
  song:
    uses: ./lib/song.yaml
    for_each: [Ash, Elm]
    with: {title: "{{ item }}"}
outputs:
  - for_each: "{{ steps.song }}"
    path: "{{ index }}.mp3"
    from: "{{ item.file }}"
"""


def run_calls(tmp: Path, url: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "runner", "run", str(tmp / "calls.yaml"), "--base-url", url,
         "--out", str(tmp / "out"), "--state-dir", str(tmp / "state"), "--quiet"],
        env={**os.environ, "SUNO_API_KEY": KEY}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)


def wait_for_journal(tmp: Path, proc: subprocess.Popen[bytes], steps: set[str]) -> None:
    """Until the journal records a task id for each of `steps` (each in flight at the fake,
    whose clock the test holds still). The deadline only guards against a hang."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before its tasks were in flight"
        if (tmp / "state" / "journal.jsonl").exists() and steps <= {
                e["step"] for e in journal(tmp) if e["e"] == "submitted"}:
            return
        time.sleep(0.05)
    raise AssertionError(f"no task ids recorded for {steps}")


def test_a_run_killed_inside_a_reusable_recipe_resumes_without_resubmitting(tmp_path: Path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "song.yaml").write_text(CALLEE)
    (tmp_path / "calls.yaml").write_text(CALLER)
    # Every task takes 100 s on the fake's clock (at one fake second per real second) until
    # the test moves it on: a kill always lands while the tasks it waited for are in flight.
    config = {"latency": {"*": {"dist": "fixed", "value": 100}}, "latency_scale": 1.0}
    with FakeServer("sunoapi", api_key=KEY, **config) as srv:
        for inner in ("first", "whole"):
            proc = run_calls(tmp_path, srv.url)
            wait_for_journal(tmp_path, proc, {f"song[0]/{inner}", f"song[1]/{inner}"})
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            srv.advance(150)  # the tasks in flight finish; the next run polls them
        proc = run_calls(tmp_path, srv.url)
        assert proc.wait(timeout=120) == 0
        log = srv.log

    posts = Counter(e["path"] for e in log if e["method"] == "POST" and e.get("task_id"))
    assert posts["/api/v1/generate"] == 2
    assert posts["/api/v1/generate/extend"] == 2
    recorded: dict[str, set[str]] = {}
    steps: dict[str, str] = {}
    for ev in journal(tmp_path):
        if ev["e"] == "submitted":
            recorded.setdefault(ev["key"], set()).add(ev["task_id"])
            steps[ev["key"]] = ev["step"]
    # One key per inner instance, each with exactly the one task the fake created for it.
    assert sorted(steps.values()) == ["song[0]/first", "song[0]/whole", "song[1]/first",
                                      "song[1]/whole"]
    assert all(len(tasks) == 1 for tasks in recorded.values()), recorded
    created = {e["task_id"] for e in log if e["method"] == "POST" and e.get("task_id")}
    assert created == {t for tasks in recorded.values() for t in tasks}
    assert sorted(p.name for p in (tmp_path / "out").glob("*.mp3")) == ["0.mp3", "1.mp3"]
