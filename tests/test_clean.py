"""`clean` never deletes a file another recipe using the same state directory needs, says
per file why it goes or stays, and never runs beside a live `sunoflow run`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from runner.fake import FakeServer
from tests.waiting import until

RECIPE = """\
version: 1
name: {name}
provider: {{kind: local, take_seconds: 5}}
steps:
  song:
    uses: generate
    with: {{title: {name}, style: ambient, prompt: "la la {name}"}}
  short:
    uses: trim
    with: {{audio: "{{{{ steps.song.tracks[0] }}}}", start: 1, end: {end}}}
outputs:
  - path: "{name}.mp3"
    from: "{{{{ steps.short.file }}}}"
"""


def sunoflow(*args: str, cwd: Path, env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runner", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=120, env=env)


def blobs(folder: Path) -> set[Path]:
    return {p for p in (folder / ".sunoflow" / "blobs").rglob("*") if p.is_file()}


def write(folder: Path, name: str, end: int = 4) -> None:
    (folder / f"{name}.yaml").write_text(RECIPE.format(name=name, end=end))


def test_clean_keeps_every_file_another_recipe_in_the_folder_needs(tmp_path: Path):
    for name in ("a", "b", "c"):
        write(tmp_path, name)
        assert sunoflow("run", f"{name}.yaml", cwd=tmp_path).returncode == 0
    write(tmp_path, "a", end=3)  # a's first `short` is superseded
    assert sunoflow("run", "a.yaml", cwd=tmp_path).returncode == 0
    before = blobs(tmp_path)

    dry = sunoflow("clean", "a.yaml", "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert "would delete 1 files" in dry.stdout
    going = [line for line in dry.stdout.splitlines() if line.startswith("would delete /")]
    assert len(going) == 1
    assert "not referenced by any of 3 recipes' locks (last recorded for step short" in going[0]
    assert sum("referenced by b.lock" in line for line in dry.stdout.splitlines()) >= 2
    assert sum("referenced by c.lock" in line for line in dry.stdout.splitlines()) >= 2
    assert blobs(tmp_path) == before

    done = sunoflow("clean", "a.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "deleted 1 files" in done.stdout
    assert len(blobs(tmp_path)) == len(before) - 1
    for name in ("a", "b", "c"):
        status = sunoflow("status", f"{name}.yaml", cwd=tmp_path)
        assert status.stdout.splitlines()[-1] == "2 done", (name, status.stdout)
        frozen = sunoflow("run", f"{name}.yaml", "--frozen", cwd=tmp_path)
        assert frozen.returncode == 0, frozen.stderr


def test_a_recipe_without_a_lock_holds_the_journals_files_until_forgotten(tmp_path: Path):
    write(tmp_path, "a")
    assert sunoflow("run", "a.yaml", cwd=tmp_path).returncode == 0
    write(tmp_path, "b")
    # b's lock is gone (never committed, deleted): its paid results are known to the
    # journal alone.
    assert sunoflow("run", "b.yaml", "--only", "song", cwd=tmp_path).returncode == 0
    (tmp_path / "b.lock").unlink()
    write(tmp_path, "a", end=3)
    assert sunoflow("run", "a.yaml", cwd=tmp_path).returncode == 0
    before = blobs(tmp_path)

    dry = sunoflow("clean", "a.yaml", "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    b = tmp_path / "b.yaml"
    assert f"note: {b} used this state directory and has no lock (b.lock)" in dry.stdout
    assert "would delete 0 files" in dry.stdout
    assert "while a recipe without a lock uses this directory" in dry.stdout
    assert sunoflow("clean", "a.yaml", cwd=tmp_path).returncode == 0
    assert blobs(tmp_path) == before

    forgot = sunoflow("clean", "b.yaml", "--forget", cwd=tmp_path)
    assert forgot.returncode == 0, forgot.stderr
    assert "forgotten" in forgot.stdout
    done = sunoflow("clean", "a.yaml", cwd=tmp_path)
    assert "note:" not in done.stdout
    # Told to forget b: its files go with a's superseded `short`.
    assert "deleted 5 files" in done.stdout
    assert sunoflow("status", "b.yaml", cwd=tmp_path).stdout.startswith("song   missing")
    assert sunoflow("status", "a.yaml", cwd=tmp_path).stdout.splitlines()[-1] == "2 done"


def test_a_state_directory_shared_through_state_dir_keeps_both_recipes(tmp_path: Path):
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        write(tmp_path / name, name)
        r = sunoflow("run", f"{name}/{name}.yaml", "--state-dir", "shared", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    write(tmp_path / "one", "one", end=3)
    again = sunoflow("run", "one/one.yaml", "--state-dir", "shared", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    r = sunoflow("clean", "one/one.yaml", "--state-dir", "shared", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "deleted 1 files" in r.stdout
    frozen = sunoflow("run", "two/two.yaml", "--state-dir", "shared", "--frozen",
                      cwd=tmp_path)
    assert frozen.returncode == 0, frozen.stderr
    assert "2 cached" in frozen.stderr


REMOTE = """\
version: 1
name: slow
provider: {kind: sunoapi, poll_interval: 0.05, max_poll_interval: 0.2}
steps:
  song:
    uses: generate
    with: {title: Slow, style: "STYLE", prompt: "la la"}
outputs:
  - path: slow.mp3
    from: "{{ steps.song.file }}"
"""


def test_clean_refuses_while_a_run_holds_the_state_directory(tmp_path: Path):
    key = "sk-clean-during-run"
    env = {**os.environ, "SUNO_API_KEY": key}
    (tmp_path / "slow.yaml").write_text(REMOTE.replace("STYLE", "dub"))
    with FakeServer("sunoapi", api_key=key) as srv:
        r = sunoflow("run", "slow.yaml", "--base-url", srv.url, cwd=tmp_path, env=env)
        assert r.returncode == 0, r.stderr
        (tmp_path / "slow.yaml").write_text(REMOTE.replace("STYLE", "ska"))
        before = blobs(tmp_path)
        # The next task runs until the test moves the fake's clock.
        srv.configure(latency_scale=1.0, latency={"*": {"dist": "fixed", "value": 3600}})
        journal = tmp_path / ".sunoflow" / "journal.jsonl"
        lines = len(journal.read_text().splitlines())
        run = subprocess.Popen([sys.executable, "-m", "runner", "run", "slow.yaml",
                                "--base-url", srv.url], cwd=tmp_path, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            until(lambda: any('"e":"submitted"' in line
                              for line in journal.read_text().splitlines()[lines:]),
                  "the run to record its task")
            refused = sunoflow("clean", "slow.yaml", cwd=tmp_path)
            assert refused.returncode == 1
            assert "another sunoflow run is using" in refused.stderr
            assert "nothing was deleted" in refused.stderr
            assert blobs(tmp_path) == before
            srv.advance(7200)
            _out, err = run.communicate(timeout=120)
            assert run.returncode == 0, err
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
    after = sunoflow("clean", "slow.yaml", cwd=tmp_path)
    assert after.returncode == 0, after.stderr
    assert "deleted" in after.stdout
