"""The committed lock is the ledger: with the state directory gone (a fresh CI runner, a
bandmate's clone), a plain `run` pays for nothing the lock records; it restores every
result from the recorded links, or the service's fresh links for the same task when those
have expired, and the album comes out byte for byte the same."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from runner.fake import FakeServer
from runner.plan.scopes import instance_key
from runner.recipe.model import Provider

KEY = "sk-ledger-test-31"
RECIPE = """\
version: 1
name: ledger-ep
provider: {kind: sunoapi, poll_interval: 0.05, max_poll_interval: 0.2}
vars:
  titles: [Ash, Birch]
steps:
  words:
    uses: lyrics
    for_each: "{{ vars.titles }}"
    with: {prompt: "a tree called {{ item }}"}
  song:
    uses: generate
    for_each: "{{ vars.titles }}"
    with: {title: "{{ item }}", style: folk, prompt: "{{ steps.words[index].text }}"}
  master:
    uses: convert
    for_each: "{{ steps.song }}"
    with: {audio: "{{ item.tracks[0] }}", format: wav}
  short:
    uses: trim
    for_each: "{{ steps.song }}"
    with: {audio: "{{ item.tracks[1] }}", start: 0, end: 5}
outputs:
  - for_each: "{{ steps.master }}"
    path: "{{ index + 1 }} - {{ vars.titles[index] }}.wav"
    from: "{{ item.file }}"
  - for_each: "{{ steps.short }}"
    path: "{{ index + 1 }} - {{ vars.titles[index] }} (short).mp3"
    from: "{{ item.file }}"
    tags: {title: "{{ vars.titles[index] }}", cover: "{{ steps.song[index].tracks[1].image_file }}"}
"""
# Every request that asks the service for paid work.
SUBMITS = ("/api/v1/lyrics", "/api/v1/generate", "/api/v1/wav/generate")


def run(cwd: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SUNO_API_KEY": KEY}
    return subprocess.run([sys.executable, "-m", "runner", "run", "ep.yaml", "--base-url", url,
                           "--report", "report.json", *extra], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=300)


def submits(log: list[dict]) -> list[str]:
    return [e["path"] for e in log if e["method"] == "POST" and e["path"] in SUBMITS]


def album(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def statuses(folder: Path) -> set[str]:
    """How the paid steps ended (the free local `short` is simply made again)."""
    return {s["status"] for s in json.loads((folder / "report.json").read_text())["steps"]
            if not s["id"].startswith("short")}


def test_a_deleted_state_directory_pays_for_nothing_the_lock_records(tmp_path: Path):
    (tmp_path / "ep.yaml").write_text(RECIPE)
    with FakeServer("sunoapi", api_key=KEY) as srv:
        first = run(tmp_path, srv.url)
        assert first.returncode == 0, first.stderr
        assert sorted(submits(srv.log)) == sorted(SUBMITS[:2] * 2 + SUBMITS[2:] * 2)
        made = album(tmp_path / "out" / "ep")
        assert len([n for n in made if n.endswith((".wav", ".mp3"))]) == 4
        lock = (tmp_path / "ep.lock").read_bytes()

        # Only the recipe and its lock are left (a fresh checkout): the recorded links
        # still work.
        shutil.rmtree(tmp_path / ".sunoflow")
        shutil.rmtree(tmp_path / "out")
        # `status` says so too: nothing is "to run"; files are missing, texts are done.
        status = subprocess.run([sys.executable, "-m", "runner", "status", "ep.yaml",
                                 "--base-url", srv.url],
                                cwd=tmp_path, text=True, capture_output=True, timeout=60)
        assert status.stdout.splitlines()[-1] == "2 done, 6 missing", status.stdout
        assert not (tmp_path / ".sunoflow").exists()
        before = len(srv.log)
        again = run(tmp_path, srv.url)
        assert again.returncode == 0, again.stderr
        assert submits(srv.log[before:]) == []
        assert album(tmp_path / "out" / "ep") == made
        assert statuses(tmp_path) == {"cached"}
        assert (tmp_path / "ep.lock").read_bytes() == lock

        # Again, with every recorded link expired: the service's fresh links for the same
        # task ids bring the same files back.
        shutil.rmtree(tmp_path / ".sunoflow")
        shutil.rmtree(tmp_path / "out")
        assert srv.expire_links() > 0
        before = len(srv.log)
        late = run(tmp_path, srv.url)
        assert late.returncode == 0, late.stderr
        after = srv.log[before:]
        assert submits(after) == []
        assert any(e["path"] == "/api/v1/generate/record-info" for e in after)
        assert any(e["path"].startswith("/files/") and e["status"] == 403 for e in after)
        assert album(tmp_path / "out" / "ep") == made
        assert statuses(tmp_path) == {"cached"}
        assert (tmp_path / "ep.lock").read_bytes() == lock


def test_an_edited_step_is_the_only_one_paid_again_from_the_lock(tmp_path: Path):
    (tmp_path / "ep.yaml").write_text(RECIPE)
    with FakeServer("sunoapi", api_key=KEY) as srv:
        assert run(tmp_path, srv.url).returncode == 0
        shutil.rmtree(tmp_path / ".sunoflow")
        (tmp_path / "ep.yaml").write_text(RECIPE.replace("style: folk", "style: blues"))
        before = len(srv.log)
        edited = run(tmp_path, srv.url)
        assert edited.returncode == 0, edited.stderr
        # The lyrics are restored from the lock; the songs (edited) and their WAVs are new.
        assert sorted(submits(srv.log[before:])) == ["/api/v1/generate"] * 2 + \
            ["/api/v1/wav/generate"] * 2


def test_a_lock_that_cannot_be_read_stops_the_run_before_anything_is_paid(tmp_path: Path):
    (tmp_path / "ep.yaml").write_text(RECIPE)
    (tmp_path / "ep.lock").write_text("<<<<<<< HEAD\nsteps: {}\n=======\n")
    with FakeServer("sunoapi", api_key=KEY) as srv:
        res = run(tmp_path, srv.url)
        assert res.returncode == 1
        assert "ep.lock: cannot read the lock file" in res.stderr
        assert "Traceback" not in res.stderr
        assert submits(srv.log) == []


def test_keys_of_steps_that_read_no_local_file_are_unchanged():
    # Computed by the previous release: journals and locks written before local files
    # entered keys still match.
    p = Provider(kind="sunoapi", base_url="https://api.sunoapi.org")
    assert instance_key(p, "generate", {"title": "Kept", "style": "dub",
                                        "prompt": "la la la"}, "remote") == \
        "178be5fd41de2af7b92dad03aafc400a"
    track = {"id": "a", "task_id": "t", "file": "/x/blobs/sha256/ab/abcd.mp3",
             "audio_url": "http://u"}
    assert instance_key(p, "convert", {"audio": track, "format": "wav"}, "local", {}) == \
        "a22449a4679cba22291412b0401fa6a3"


def test_a_failed_force_rerun_falls_back_to_the_locked_result(tmp_path: Path):
    # The journal then says `failed` for a key the lock records as paid: the next plain run
    # must read the lock again (the journal changed since the lock was written) and take
    # the locked result, not pay for the step.
    (tmp_path / "ep.yaml").write_text(RECIPE)
    with FakeServer("sunoapi", api_key=KEY) as srv:
        assert run(tmp_path, srv.url).returncode == 0
        made = album(tmp_path / "out" / "ep")
        srv.configure(faults=[{"match": {"method": "POST", "path": "/api/v1/generate"},
                               "action": {"fail_task": "GENERATE_AUDIO_FAILED"}}])
        forced = run(tmp_path, srv.url, "--force", "song")
        assert forced.returncode == 1
        srv.configure(faults=[])
        before = len(srv.log)
        plain = run(tmp_path, srv.url)
        assert plain.returncode == 0, plain.stderr
        assert submits(srv.log[before:]) == []
        assert album(tmp_path / "out" / "ep") == made


RELAY = """\
version: 1
name: relay-ep
provider: {kind: newapi, poll_interval: 0.05, max_poll_interval: 0.2}
steps:
  words:
    uses: lyrics
    with: {prompt: "a tree"}
  song:
    uses: generate
    with: {title: Ash, style: folk, prompt: "{{ steps.words.text }}"}
outputs:
  - path: ash.mp3
    from: "{{ steps.song.file }}"
"""


def relay_submits(log: list[dict]) -> list[str]:
    return [e["path"] for e in log if e["method"] == "POST" and
            e["path"].startswith("/suno/submit/")]


def test_the_lock_is_the_ledger_on_a_relay_too(tmp_path: Path):
    (tmp_path / "ep.yaml").write_text(RELAY)
    with FakeServer("newapi", api_key=KEY) as srv:
        assert run(tmp_path, srv.url).returncode == 0
        made = album(tmp_path / "out" / "ep")
        assert relay_submits(srv.log) == ["/suno/submit/lyrics", "/suno/submit/music"]
        shutil.rmtree(tmp_path / ".sunoflow")
        shutil.rmtree(tmp_path / "out")
        before = len(srv.log)
        again = run(tmp_path, srv.url)
        assert again.returncode == 0, again.stderr
        assert relay_submits(srv.log[before:]) == []
        assert album(tmp_path / "out" / "ep") == made


def test_a_tracks_stream_link_is_not_part_of_any_key():
    # The stream link expires like the other links and a fresh result may carry another:
    # in a key it would make every step that reads the track a new, paid piece of work.
    p = Provider(kind="sunoapi", base_url="https://api.sunoapi.org")
    track = {"id": "a", "task_id": "t", "file": "/x/blobs/sha256/ab/abcd.mp3",
             "audio_url": "http://u"}
    keys = {instance_key(p, "extend", {"audio": {**track, "stream_url": s},
                                       "continue_at": 30}, "remote")
            for s in (None, "http://s/1.mp3", "http://s/2.mp3")}
    assert len(keys) == 1
