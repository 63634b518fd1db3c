"""`sunoflow run` against the sunoapi fake, as a user runs it: a subprocess, a recipe file,
the key in an environment variable, the album on disk, and the fake's request log as the
record of what was paid for."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.fake import FakeServer

KEY = "sk-remote-run-Key-9d2"

RECIPE = """\
version: 1
name: remote-ep
provider: {kind: local, poll_interval: 0.05, max_poll_interval: 0.2}
vars:
  tracks:
    - {title: Sunrise, style: indie folk, theme: first light}
    - {title: Noon, style: surf rock, theme: heat}
steps:
  words:
    uses: lyrics
    for_each: "{{ vars.tracks }}"
    with: {prompt: "A song about {{ item.theme }}"}
  song:
    uses: generate
    for_each: "{{ vars.tracks }}"
    with:
      title: "{{ item.title }}"
      style: "{{ item.style }}"
      prompt: "{{ steps.words[index].text }}"
  long:
    uses: extend
    for_each: "{{ steps.song }}"
    with:
      audio: "{{ item.tracks[0] }}"
      continue_at: "{{ item.tracks[0].duration - 10 }}"
      prompt: a final chorus
  master:
    uses: convert
    for_each: "{{ steps.long }}"
    with: {audio: "{{ item.tracks[0] }}", format: wav}
  art:
    uses: cover
    with: {audio: "{{ steps.song[0].tracks[0] }}"}
outputs:
  - for_each: "{{ steps.master }}"
    path: "{{ '%02d' % (index + 1) }} - {{ vars.tracks[index].title }}.wav"
    from: "{{ item.file }}"
    tags: {title: "{{ vars.tracks[index].title }}", album: Remote EP, track: "{{ index + 1 }}"}
  - path: cover.png
    from: "{{ steps.art.images[0].file }}"
"""

# The paid endpoints and how many instances of each step the recipe has.
PAID = {"/api/v1/lyrics": 2, "/api/v1/generate": 2, "/api/v1/generate/extend": 2,
        "/api/v1/wav/generate": 2, "/api/v1/suno/cover/generate": 1}


@pytest.fixture
def srv() -> Iterator[FakeServer]:
    with FakeServer("sunoapi", api_key=KEY) as server:
        yield server


def sunoflow(tmp: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SUNO_API_KEY"}
    env["SUNO_API_KEY"] = KEY
    return subprocess.run(
        [sys.executable, "-m", "runner", "run", str(tmp / "ep.yaml"), "--provider", "sunoapi",
         "--base-url", url, "--out", str(tmp / "out"), "--state-dir", str(tmp / "state"),
         "--report", str(tmp / "report.json"), "--quiet", *args],
        env=env, capture_output=True, text=True, timeout=90, check=False)


def paid_submits(srv: FakeServer) -> Counter[str]:
    return Counter(e["path"] for e in srv.log if e["method"] == "POST")


def test_a_remote_album_pays_once_per_step_and_nothing_on_the_second_run(srv, tmp_path):
    (tmp_path / "ep.yaml").write_text(RECIPE)
    first = sunoflow(tmp_path, srv.url)
    assert first.returncode == 0, first.stderr
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) >= [
        "01 - Sunrise.wav", "02 - Noon.wav", "cover.png"]
    for name in ("01 - Sunrise.wav", "02 - Noon.wav"):
        assert (out / name).read_bytes()[:4] == b"RIFF"
    assert (out / "cover.png").read_bytes()[:4] == b"\x89PNG"
    assert paid_submits(srv) == Counter(PAID)
    assert KEY not in first.stdout + first.stderr
    state_text = "".join(p.read_text(errors="replace") for p in (tmp_path / "state").rglob("*")
                         if p.is_file() and p.suffix in (".jsonl", ".json", ""))
    assert KEY not in state_text + (tmp_path / "report.json").read_text()

    before = len(srv.log)
    second = sunoflow(tmp_path, srv.url)
    assert second.returncode == 0, second.stderr
    assert paid_submits(srv) == Counter(PAID)  # nothing new submitted
    assert [e for e in srv.log[before:] if e["method"] == "POST"] == []


ONE_SONG = """\
version: 1
name: one
provider: {kind: local, poll_interval: 0.05, max_poll_interval: 0.2}
steps:
  song:
    uses: generate
    with: {prompt: "la la", style: pop, title: One}
outputs:
  - path: one.mp3
    from: "{{ steps.song.tracks[0].file }}"
"""


def test_an_expired_link_is_refreshed_without_paying_again(srv, tmp_path):
    (tmp_path / "ep.yaml").write_text(ONE_SONG)
    srv.configure(faults=[{"match": {"path": "/files/audio/*"}, "times": 1,
                           "action": {"expired": True}}])
    done = sunoflow(tmp_path, srv.url)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "one.mp3").stat().st_size > 0
    assert paid_submits(srv) == Counter({"/api/v1/generate": 1})
    polls = [e for e in srv.log if e["path"] == "/api/v1/generate/record-info"]
    assert len(polls) == 2  # the result, then the fresh links


# poll_interval 0.01: the answer echoing the key with envelope 500 is transient, and its
# retries back off from min(1 s, poll_interval) (about 9 s of waiting at 0.05).
ECHOES = """\
version: 1
name: echoes
provider: {kind: local, poll_interval: 0.01, max_poll_interval: 0.2}
steps:
  words:
    uses: lyrics
    with: {prompt: a song about rain}
  song:
    uses: generate
    with: {prompt: "la la", style: pop, title: One}
  boost:
    uses: boost_style
    with: {content: "Pop, Mysterious"}
  demo:
    uses: upload_cover
    with: {audio: demo.mp3, style: jazz, title: Demo, prompt: "la la"}
"""


def every_byte(root: Path) -> list[tuple[str, bytes]]:
    return [(str(p), p.read_bytes()) for p in root.rglob("*") if p.is_file()]


def test_the_key_is_written_nowhere_even_when_the_service_echoes_it(srv, tmp_path):
    """Services quote what they were sent: a key echoed in an envelope message, in a task's
    error, in an upload failure and in a 401 must reach no file, report or output."""
    (tmp_path / "ep.yaml").write_text(ECHOES)
    (tmp_path / "demo.mp3").write_bytes(b"ID3" + bytes(2000))
    echo = f"token {KEY} is not valid for this request (Bearer {KEY})"
    srv.configure(faults=[
        {"match": {"path": "/api/v1/lyrics"}, "action": {"envelope_code": 400,
                                                         "message": echo}},
        {"match": {"path": "/api/v1/generate"}, "action": {"fail_task": "CREATE_TASK_FAILED",
                                                           "message": echo}},
        {"match": {"path": "/api/v1/style/generate"},
         "action": {"envelope_code": 500, "http_status": 400, "message": echo}},
        {"match": {"path": "/api/file-stream-upload"},
         "action": {"envelope_code": 413, "message": echo}},
    ])
    first = sunoflow(tmp_path, srv.url, "--keep-going")
    assert first.returncode == 1
    report = (tmp_path / "report.json").read_text()
    assert "[redacted]" in report  # the echoes were there, and were masked
    srv.configure(faults=[{"match": {"path": "/api/v1/*"},
                           "action": {"envelope_code": 401, "http_status": 401,
                                      "message": echo}}])
    second = sunoflow(tmp_path, srv.url, "--keep-going")
    assert second.returncode == 1
    assert "environment variable SUNO_API_KEY" in (tmp_path / "report.json").read_text()
    for run in (first, second):
        assert KEY not in run.stdout + run.stderr
    files = every_byte(tmp_path)
    assert {"journal.jsonl", "report.json"} <= {Path(f).name for f, _ in files}
    assert [f for f, data in files if KEY.encode() in data] == []


UPLOAD = """\
version: 1
name: upload
provider: {kind: local, poll_interval: 0.05, max_poll_interval: 0.2}
steps:
  cover:
    uses: upload_cover
    with: {audio: take.mp3, prompt: "la la", style: pop, title: Again}
"""


@pytest.mark.parametrize("fault", [
    # The service refused the submit itself: no task.
    {"match": {"method": "POST", "path": "/api/v1/generate/upload-cover"},
     "action": {"envelope_code": 400, "message": "bad request"}},
    # The upload before it failed: the submit was never sent.
    {"match": {"method": "POST", "path": "/api/file-stream-upload"},
     "action": {"http_status": 403}},
], ids=["refused", "upload"])
def test_a_submit_answered_no_is_not_possibly_submitted_on_the_next_run(srv, tmp_path, fault):
    from runner.studio import compose

    compose.synth(tmp_path / "take.mp3", seed="take", duration=2.0, style="folk")
    (tmp_path / "ep.yaml").write_text(UPLOAD)
    srv.configure(faults=[{**fault, "times": 1}])
    failed = sunoflow(tmp_path, srv.url)
    assert failed.returncode == 1, failed.stderr
    journal = (tmp_path / "state" / "journal.jsonl").read_text()
    assert '"e":"failed"' in journal
    assert "not submitted" in journal
    again = sunoflow(tmp_path, srv.url)
    assert again.returncode == 0, again.stderr
    assert "possibly submitted" not in again.stderr
    report = (tmp_path / "report.json").read_text()
    assert '"possibly_submitted": 0' in report
    assert [t["op"] for t in srv.tasks] == ["upload_cover"]  # one task, made by the rerun
