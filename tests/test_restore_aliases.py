"""A finished song whose stored files and links are gone is given back by the service's
recovery as other bytes (.m4a where the lock recorded an .mp3). The steps that read it were
keyed with the recorded file: they must keep those keys and be restored, never paid again
(runner.store.aliases; engine rule 12). Each test runs the real CLI against the real fake
and counts the paid submissions in the fake's log; each failed before the aliases (a
`run` submitted the WAV again, and `--frozen` exited 3)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from runner.fake import FakeServer

KEY = "sk-aliases-test-31"
HEAD = """\
version: 1
name: aliases
provider: {kind: sunoapi, poll_interval: 0.05, max_poll_interval: 0.2}
steps:
  song:
    uses: generate
    with: {title: Kept, style: dub, prompt: "la la la"}
"""
MASTER = HEAD + """\
  master:
    uses: convert
    with: {audio: "{{ steps.song.tracks[0] }}", format: wav}
outputs:
  - path: kept.wav
    from: "{{ steps.master.file }}"
"""
CHAIN = HEAD + """\
  long:
    uses: extend
    with: {audio: "{{ steps.song.tracks[0] }}", continue_at: 20, prompt: "a last chorus"}
  master:
    uses: convert
    with: {audio: "{{ steps.long.tracks[0] }}", format: wav}
outputs:
  - path: long.wav
    from: "{{ steps.master.file }}"
"""
LOCAL_THEN_PAID = HEAD + """\
  cut:
    uses: trim
    with: {audio: "{{ steps.song.tracks[0] }}", start: 0, end: 12}
  remix:
    uses: upload_cover
    with: {audio: "{{ steps.cut.tracks[0] }}", title: Remix, style: lounge, instrumental: true}
outputs:
  - path: remix.mp3
    from: "{{ steps.remix.file }}"
"""
# Every paid operation of the fake's sunoapi (the recovery and the uploads are free).
PAID = frozenset({"/api/v1/generate", "/api/v1/generate/extend",
                  "/api/v1/generate/upload-cover", "/api/v1/wav/generate"})
# ~15 days on: every song's link is dead for good (fresh or not: only the recovery, which
# gives .m4a, helps), and the WAV's recorded link is dead (record-info gives a fresh one).
EXPIRED = [{"match": {"path": "/files/audio/*"}, "action": {"expired": True}},
           {"match": {"path": "/files/wav/*"}, "times": 1, "action": {"expired": True}}]


def run(tmp: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SUNO_API_KEY": KEY}
    return subprocess.run([sys.executable, "-m", "runner", "run", "r.yaml", "--base-url", url,
                           *extra], cwd=tmp, env=env, text=True, capture_output=True,
                          timeout=120)


def paid(srv: FakeServer, since: int) -> list[str]:
    return [e["path"] for e in srv.log[since:] if e["method"] == "POST" and e["path"] in PAID]


def keys(tmp: Path) -> dict[str, str]:
    return {iid: e["key"] for iid, e in read_lock(tmp)["steps"].items()}


def read_lock(tmp: Path) -> dict[str, Any]:
    data = yaml.safe_load((tmp / "r.lock").read_text())
    assert isinstance(data, dict)
    return data


def made(tmp: Path, srv: FakeServer, recipe: str) -> dict[str, str]:
    """Run `recipe` once (paying), then lose the state directory, the album and every
    link, as a fresh CI runner weeks later; return the lock's keys."""
    (tmp / "r.yaml").write_text(recipe)
    first = run(tmp, srv.url)
    assert first.returncode == 0, first.stdout + first.stderr
    lost(tmp)
    srv.configure(faults=EXPIRED)
    return keys(tmp)


def again(tmp: Path, srv: FakeServer, *extra: str) -> tuple[str, list[dict[str, Any]]]:
    """Run the recipe again; it must succeed and pay for nothing. Its output, and the
    requests it made."""
    before = len(srv.log)
    done = run(tmp, srv.url, *extra)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert paid(srv, before) == []
    return out, srv.log[before:]


def lost(tmp: Path) -> None:
    shutil.rmtree(tmp / ".sunoflow")
    shutil.rmtree(tmp / "out", ignore_errors=True)


def test_a_song_recovered_as_other_bytes_does_not_pay_for_its_wav_again(tmp_path: Path):
    with FakeServer("sunoapi", api_key=KEY) as srv:
        recorded = made(tmp_path, srv, MASTER)
        out, sent = again(tmp_path, srv)
        assert any(e["path"] == "/api/v1/suno/recovery" for e in sent)
        assert "song: the service gave task" in out
        assert "(.mp3 -> .m4a)" in out
        assert (tmp_path / "out" / "r" / "kept.wav").stat().st_size > 0
        assert keys(tmp_path) == recorded
        # Again, with the state directory kept: nothing to fetch, nothing to pay.
        out, _ = again(tmp_path, srv)
        assert "master           cached" in out
    assert keys(tmp_path) == recorded


def test_the_rewritten_lock_alone_carries_the_alias(tmp_path: Path):
    with FakeServer("sunoapi", api_key=KEY) as srv:
        recorded = made(tmp_path, srv, MASTER)
        again(tmp_path, srv)
        lock = read_lock(tmp_path)
        assert lock["version"] == 2
        song = lock["steps"]["song"]["files"]
        assert {f["ext"] for f in song if f.get("stands_for")} == {".m4a"}
        assert all(f["stands_for"].endswith(".mp3") for f in song if f.get("stands_for"))
        # `clean` keeps the file that stands for the recorded one: the next run finds
        # every step done, with nothing to fetch and nothing to pay.
        cleaned = subprocess.run([sys.executable, "-m", "runner", "clean", "r.yaml"],
                                 cwd=tmp_path, text=True, capture_output=True, timeout=60)
        assert cleaned.returncode == 0, cleaned.stderr
        _, sent = again(tmp_path, srv)
        assert [e["path"] for e in sent] == ["/api/v1/generate/credit"]
        # The state directory goes again: only the lock, rewritten by the restore, is left
        # to seed the next run.
        lost(tmp_path)
        again(tmp_path, srv)
        assert (tmp_path / "out" / "r" / "kept.wav").stat().st_size > 0
    assert keys(tmp_path) == recorded


def test_a_chain_of_paid_steps_after_a_recovered_song_is_not_paid_again(tmp_path: Path):
    # song (recovered as .m4a) -> long (extend: paid, itself recovered as .m4a) -> master
    # (WAV of long: paid). Both keep their recorded keys.
    with FakeServer("sunoapi", api_key=KEY) as srv:
        recorded = made(tmp_path, srv, CHAIN)
        out, _ = again(tmp_path, srv)
        assert "long: the service gave task" in out
        assert (tmp_path / "out" / "r" / "long.wav").stat().st_size > 0
        again(tmp_path, srv)
    assert keys(tmp_path) == recorded


def test_frozen_rebuilds_from_a_recovered_song_without_paying(tmp_path: Path):
    with FakeServer("sunoapi", api_key=KEY) as srv:
        recorded = made(tmp_path, srv, MASTER)
        again(tmp_path, srv, "--frozen")
        assert (tmp_path / "out" / "r" / "kept.wav").stat().st_size > 0
    assert keys(tmp_path) == recorded


def test_a_local_step_made_again_from_other_bytes_keeps_its_paid_reader(tmp_path: Path):
    # The trim is made again from the .m4a (other bytes again); the upload_cover that
    # reads it (paid) keeps its recorded key and is restored.
    with FakeServer("sunoapi", api_key=KEY) as srv:
        recorded = made(tmp_path, srv, LOCAL_THEN_PAID)
        out, _ = again(tmp_path, srv)
        assert "cut: made again as other bytes than recorded" in out
        assert (tmp_path / "out" / "r" / "remix.mp3").stat().st_size > 0
        cut = read_lock(tmp_path)["steps"]["cut"]["files"]
        assert any(f.get("stands_for") for f in cut)
    assert keys(tmp_path) == recorded
