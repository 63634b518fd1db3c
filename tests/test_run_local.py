"""`sunoflow run` on the local provider, as a user runs it: real processes, real files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runner.studio.probe import probe

SMALL = """\
version: 1
name: small
provider: {kind: local, take_seconds: 6}
vars:
  tracks:
    - {title: "One", style: folk}
    - {title: "../../Two/evil", style: rock}
steps:
  words:
    uses: lyrics
    for_each: "{{ vars.tracks }}"
    with: {prompt: "a song about {{ item.style }}"}
  song:
    uses: generate
    for_each: "{{ vars.tracks }}"
    with: {title: "{{ item.title }}", style: "{{ item.style }}",
           prompt: "{{ steps.words[index].text }}"}
  long:
    uses: extend
    for_each: "{{ steps.song }}"
    with: {audio: "{{ item.tracks[0] }}", continue_at: 4}
  master:
    uses: convert
    for_each: "{{ steps.long }}"
    with: {audio: "{{ item.tracks[0] }}", format: wav}
outputs:
  - for_each: "{{ steps.master }}"
    path: "{{ index + 1 }} - {{ vars.tracks[index].title }}.wav"
    from: "{{ item.file }}"
    tags: {title: "{{ vars.tracks[index].title }}", track: "{{ index + 1 }}"}
"""


def sunoflow(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runner", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=timeout)


@pytest.fixture
def small(tmp_path: Path) -> Path:
    (tmp_path / "small.yaml").write_text(SMALL)
    return tmp_path


def report(path: Path) -> dict:
    return json.loads(path.read_text())


def test_run_makes_the_album_and_a_rerun_reuses_everything(small: Path):
    r = sunoflow("run", "small.yaml", "--report", "r1.json", cwd=small)
    assert r.returncode == 0, r.stderr
    out = small / "out" / "small"
    wavs = sorted(p.name for p in out.glob("*.wav"))
    # The title '../../Two/evil' becomes part of one file name: no folders, no escape.
    assert wavs == ["1 - One.wav", "2 - .._.._Two_evil.wav"]
    assert not (small.parent / "Two").exists()
    info = probe(out / "1 - One.wav")
    assert info.format == "wav"
    assert info.sample_rate == 44100
    # extend at 4 s of a 6 s take, plus a 6 s continuation: 10 s, within one MP3 frame.
    assert abs(info.duration - 10.0) <= 1152 / 44100
    rep = report(small / "r1.json")
    assert rep["status"] == "succeeded"
    assert {s["status"] for s in rep["steps"]} == {"succeeded"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert {f["path"] for f in manifest["files"]} == {"1 - One.wav", "2 - .._.._Two_evil.wav"}
    blobs = sorted((small / ".sunoflow" / "blobs").rglob("*"))

    r2 = sunoflow("run", "small.yaml", "--report", "r2.json", cwd=small)
    assert r2.returncode == 0, r2.stderr
    assert {s["status"] for s in report(small / "r2.json")["steps"]} == {"cached"}
    assert sorted((small / ".sunoflow" / "blobs").rglob("*")) == blobs

    plan = sunoflow("plan", "small.yaml", "--json", cwd=small)
    assert {i["status"] for i in json.loads(plan.stdout)["instances"]} == {"done"}


def test_two_runs_in_different_folders_give_identical_bytes(tmp_path: Path):
    digests = []
    for name in ("a", "b"):
        d = tmp_path / name
        d.mkdir()
        (d / "small.yaml").write_text(SMALL)
        assert sunoflow("run", "small.yaml", "-q", cwd=d).returncode == 0
        digests.append(json.loads((d / "out" / "small" / "manifest.json").read_text())["files"])
    assert digests[0] == digests[1]


def test_editing_one_step_reruns_it_and_its_dependents_only(small: Path):
    assert sunoflow("run", "small.yaml", "-q", cwd=small).returncode == 0
    (small / "small.yaml").write_text(SMALL.replace("continue_at: 4", "continue_at: 3"))
    r = sunoflow("run", "small.yaml", "--report", "r.json", cwd=small)
    assert r.returncode == 0, r.stderr
    status = {s["id"]: s["status"] for s in report(small / "r.json")["steps"]}
    assert {k for k, v in status.items() if v == "succeeded"} == {
        "long[0]", "long[1]", "master[0]", "master[1]"}
    assert {k for k, v in status.items() if v == "cached"} == {
        "words[0]", "words[1]", "song[0]", "song[1]"}


def test_force_reruns_a_step_and_downstream(small: Path):
    assert sunoflow("run", "small.yaml", "-q", cwd=small).returncode == 0
    r = sunoflow("run", "small.yaml", "--force", "long", "--report", "r.json", cwd=small)
    assert r.returncode == 0, r.stderr
    status = {s["id"]: s["status"] for s in report(small / "r.json")["steps"]}
    assert status["long[0]"] == status["master[1]"] == "succeeded"
    assert status["song[0]"] == status["words[1]"] == "cached"


def test_only_runs_the_step_and_what_it_needs(small: Path):
    r = sunoflow("run", "small.yaml", "--only", "song", "--report", "r.json", cwd=small)
    assert r.returncode == 0, r.stderr
    ids = {s["id"] for s in report(small / "r.json")["steps"]}
    assert ids == {"words[0]", "words[1]", "song[0]", "song[1]"}
    assert not (small / "out").exists()  # a partial run does not write the album


@pytest.mark.parametrize(("args", "message"), [
    (["--only", "sng"], "no step 'sng' in small.yaml; did you mean 'song'?"),
    (["--var", "trakcs=[]"], "the recipe has no var 'trakcs'; did you mean 'tracks'?"),
    (["--concurrency", "0"], "--concurrency must be at least 1"),
])
def test_usage_errors_exit_2_with_a_message(small: Path, args: list[str], message: str):
    r = sunoflow("run", "small.yaml", *args, cwd=small)
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    assert not (small / ".sunoflow" / "journal.jsonl").exists()


def test_var_override_changes_the_plan(small: Path):
    r = sunoflow("plan", "small.yaml", "--var", "tracks=[{title: A, style: x}]", cwd=small)
    assert r.returncode == 0, r.stderr
    assert "song[0]" in r.stdout
    assert "song[1]" not in r.stdout


def test_a_failing_local_step_fails_the_run_and_names_the_step(small: Path):
    bad = SMALL.replace("continue_at: 4", "continue_at: 60")  # beyond the 6 s take
    (small / "small.yaml").write_text(bad)
    r = sunoflow("run", "small.yaml", "--report", "r.json", cwd=small)
    assert r.returncode == 1
    status = {s["id"]: s["status"] for s in report(small / "r.json")["steps"]}
    failed = [i for i in ("long[0]", "long[1]") if status[i] == "failed"]
    assert failed  # which one fails first depends on scheduling; at least one must
    for iid in failed:
        assert f"{iid}: continue_at must be inside the source track" in r.stderr
        assert status[iid.replace("long", "master")] == "skipped"
    assert report(small / "r.json")["status"] == "failed"


def test_sigterm_stops_with_130_and_the_next_run_resumes(tmp_path: Path):
    # Five tracks: when the first song is done, a dozen ffmpeg steps (seconds of work on
    # two cores) are still to come, so the signal always lands mid-run.
    many = SMALL.replace('''    - {title: "One", style: folk}''',
                         "\n".join(f'    - {{title: "T{i}", style: s{i}}}' for i in range(4)))
    (tmp_path / "small.yaml").write_text(many)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen([sys.executable, "-m", "runner", "run", "small.yaml"],
                          cwd=tmp_path, stderr=subprocess.PIPE, text=True, env=env) as proc:
        assert proc.stderr is not None
        for line in proc.stderr:  # wait until real work has finished at least once
            if "song[" in line and "succeeded" in line:
                break
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        rest = proc.stderr.read()
        code = proc.wait(timeout=30)
        elapsed = time.monotonic() - t0
    assert code == 130, rest
    assert "interrupted" in rest
    assert elapsed < 10  # generous: the promise is "within a second"; CI machines are noisy
    r = sunoflow("run", "small.yaml", "--report", "r.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    statuses = [s["status"] for s in report(tmp_path / "r.json")["steps"]]
    assert "cached" in statuses  # what finished before the signal was kept


def test_an_output_cannot_copy_a_file_that_no_step_made(tmp_path: Path):
    secret = tmp_path / "secret.txt"
    secret.write_text("the runner's private key")
    (tmp_path / "r.yaml").write_text(f"""\
version: 1
name: sneaky
vars: {{where: "{secret}"}}
steps:
  w: {{uses: lyrics, with: {{prompt: hi}}}}
outputs:
  - path: "stolen.txt"
    from: "{{{{ vars.where }}}}"
""")
    r = sunoflow("run", "r.yaml", cwd=tmp_path)
    # Known before the run, so refused before it (runner.plan.unit._static_album_paths).
    assert r.returncode == 2
    assert "outputs[0].from: " in r.stderr
    assert "is not a step's file output (it is known before the run)" in r.stderr
    assert not (tmp_path / "out" / "r" / "stolen.txt").exists()
