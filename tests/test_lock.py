"""The lock file, `--frozen`, `status` and `clean`, through real `sunoflow` processes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.engine.records import Options
from runner.engine.scheduler import Engine
from runner.plan import build as planner
from runner.providers import registry as providers
from runner.recipe import load as recipes
from runner.report.progress import PlainProgress
from runner.store import lock, yamlout
from runner.store.journal import Store

# The async tests run on each backend of anyio (tests/conftest.py: anyio_backend).
pytestmark = pytest.mark.anyio

RECIPE = """\
version: 1
name: locked
provider: {kind: local, take_seconds: 5}
steps:
  song:
    uses: generate
    take: 1
    with: {title: Locked, style: ambient, prompt: "la la"}
  short:
    uses: trim
    with: {audio: "{{ steps.song.tracks[0] }}", start: 1, end: 4}
outputs:
  - path: "Locked.mp3"
    from: "{{ steps.short.file }}"
    tags: {title: Locked}
"""


def sunoflow(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runner", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=120)


@pytest.fixture
def built(tmp_path: Path) -> Path:
    (tmp_path / "locked.yaml").write_text(RECIPE)
    r = sunoflow("run", "locked.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    return tmp_path


def test_a_run_writes_a_deterministic_lock(built: Path, tmp_path_factory: pytest.TempPathFactory):
    lock = built / "locked.lock"
    data = yaml.safe_load(lock.read_text())
    assert data["version"] == 1
    assert list(data["steps"]) == ["song", "short"]
    song = data["steps"]["song"]
    assert song["take"] == 1
    assert song["uses"] == "generate"
    assert len(song["results"]) == 2  # both takes are recorded; the take kept is a choice
    assert all(len(f["sha256"]) == 64 and f["size"] > 0 for f in song["files"])
    assert str(built) not in lock.read_text()  # no machine-specific paths
    other = tmp_path_factory.mktemp("again")
    (other / "locked.yaml").write_text(RECIPE)
    assert sunoflow("run", "locked.yaml", cwd=other).returncode == 0
    assert (other / "locked.lock").read_bytes() == lock.read_bytes()


def test_frozen_rebuilds_from_the_lock_byte_for_byte(built: Path):
    manifest = json.loads((built / "out" / "locked" / "manifest.json").read_text())
    shutil.rmtree(built / "out")
    shutil.rmtree(built / ".sunoflow")
    r = sunoflow("run", "locked.yaml", "--frozen", "--report", "r.json", cwd=built)
    assert r.returncode == 0, r.stderr
    again = json.loads((built / "out" / "locked" / "manifest.json").read_text())
    assert again["files"] == manifest["files"]
    rep = json.loads((built / "r.json").read_text())
    assert rep["counts"]["submissions"] == 0


def test_frozen_without_a_lock_or_state_exits_3(tmp_path: Path):
    (tmp_path / "locked.yaml").write_text(RECIPE)
    r = sunoflow("run", "locked.yaml", "--frozen", cwd=tmp_path)
    assert r.returncode == 3
    assert "no lock file (locked.lock)" in r.stderr


def test_status_reports_done_and_stale(built: Path):
    r = sunoflow("status", "locked.yaml", cwd=built)
    assert r.returncode == 0, r.stderr
    assert "song   done" in r.stdout
    assert "short  done" in r.stdout
    (built / "locked.yaml").write_text(RECIPE.replace("end: 4", "end: 3"))
    r = sunoflow("status", "locked.yaml", cwd=built)
    assert "song   done" in r.stdout
    assert "short  stale" in r.stdout


def test_clean_deletes_only_what_the_lock_does_not_reference(built: Path):
    (built / "locked.yaml").write_text(RECIPE.replace("end: 4", "end: 3"))
    assert sunoflow("run", "locked.yaml", cwd=built).returncode == 0
    blobs = sorted(p for p in (built / ".sunoflow" / "blobs").rglob("*") if p.is_file())
    dry = sunoflow("clean", "locked.yaml", "--dry-run", cwd=built)
    assert "would delete 1 files" in dry.stdout
    assert sorted(p for p in (built / ".sunoflow" / "blobs").rglob("*") if p.is_file()) == blobs
    r = sunoflow("clean", "locked.yaml", cwd=built)
    assert r.returncode == 0
    assert "deleted 1 files" in r.stdout
    assert sunoflow("run", "locked.yaml", "--frozen", cwd=built).returncode == 0


def test_changing_the_take_reruns_nothing_paid(built: Path):
    (built / "locked.yaml").write_text(RECIPE.replace("take: 1", "take: 0"))
    r = sunoflow("run", "locked.yaml", "--report", "r.json", cwd=built)
    assert r.returncode == 0, r.stderr
    status = {s["id"]: s["status"] for s in json.loads((built / "r.json").read_text())["steps"]}
    assert status["song"] == "cached"  # same key: the take is applied when reading
    assert status["short"] == "succeeded"  # its input (the other take) changed


def test_reroll_says_what_reruns_and_needs_confirmation(built: Path):
    r = sunoflow("reroll", "locked.yaml", "song", cwd=built)
    assert r.returncode == 2
    assert "reroll song: 2 step instances run again (short, song)" in r.stdout
    assert "confirm with --yes" in r.stderr
    r = sunoflow("reroll", "locked.yaml", "song", "--yes", cwd=built)
    assert r.returncode == 0, r.stderr
    assert "song             succeeded" in r.stderr
    assert "short            succeeded" in r.stderr


async def test_the_lock_is_written_an_entry_at_a_time_as_the_same_bytes(built: Path):
    # The run wrote its lock streamed (lock.write); it must be the lock built whole.
    p = planner.build(recipes.load(built / "locked.yaml"))
    store = Store(built / ".sunoflow").open()
    local = providers.create(recipes.Provider(kind="local", take_seconds=5), env={})
    eng = Engine(p, store, {"local": local}, Options(state_dir=built / ".sunoflow",
                                                     handle_signals=False),
                 PlainProgress(quiet=True))
    assert await eng.run() == "succeeded"
    path = built / "locked.lock"
    text = path.read_text()
    assert text == lock.dumps(lock.build(p, eng.records, store))
    assert lock.write(path, p, eng.records, store) is False  # unchanged: left alone
    path.write_text(text.replace("uses: trim", "uses: fade"))
    assert lock.write(path, p, eng.records, store) is True
    assert path.read_text() == text
    nothing = built / "empty.lock"
    assert lock.write(nothing, p, {}, store) is True
    assert nothing.read_text() == lock.dumps(lock.build(p, {}, store))
    assert "steps: {}" in nothing.read_text()
    assert not list(built.glob(".*.part"))  # no temporary file left behind  # noqa: ASYNC240
    store.close()


# -- the lock's YAML writer -----------------------------------------------------------------

JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(["/", ".", "..", "a", "mp3", "tar", "sha"]), max_size=12))
def test_the_locks_file_suffix_is_paths_suffix(pieces: list[str]):
    text = "".join(pieces)
    assert lock.suffix(text) == PurePosixPath(text).suffix


@settings(max_examples=400, deadline=None)
@given(JSONISH)
def test_the_lock_writer_round_trips_through_a_yaml_reader(value: Any):
    """Whatever a step outputs (titles in any script, strings that look like numbers or
    booleans, control characters), the lock reads back as exactly what was written."""
    text = yamlout.dumps({"v": value})
    assert yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) == {"v": value}


def test_the_lock_writer_leaves_plain_names_bare_and_quotes_what_could_be_misread():
    text = yamlout.dumps({"ok": "album.yaml", "b": "no", "n": "1e3", "e": [], "f": 2.0,
                          "big": 1e16})
    assert text == ('ok: album.yaml\nb: "no"\n"n": "1e3"\ne: []\nf: 2.0\nbig: 1.0e+16\n')
