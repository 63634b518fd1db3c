"""The journal's reader and writer at their edges: lines of the wrong shape are skipped
with a warning naming the line (never taking valid lines with them), a task id the journal
refuses is kept in memory, printed, and written again, and a relative --state-dir means
the same folder whatever folder later commands run from."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_engine import RECIPE, Ledger, ScriptedProvider, run_engine, submitted

from runner.engine.records import Options
from runner.engine.scheduler import Engine
from runner.errors import JournalError, TaskFailed
from runner.pacing import FakeClock
from runner.plan import build as planner
from runner.recipe import load as recipes
from runner.report.progress import PlainProgress
from runner.store.journal import Store

# The async tests run on each backend of anyio (tests/conftest.py: anyio_backend).
pytestmark = pytest.mark.anyio

# --- lines of the wrong shape ----------------------------------------------------------------

BAD = [b"{}", b"123", b"null", b'"text"', b"[1, 2]",
       b'{"e":"done","step":"x","outputs":{}}',  # no key
       b'{"e":"submitted","key":"k1","step":"x"}',  # no task id
       b'{"e":"done","key":"k2","step":"x","outputs":{},"files":"x"}',
       b'{"e":"done","key":"k3","step":"x","outputs":{},"files":[1]}',
       b'{"e":"done","key":"k4","step":"x"}',  # no outputs
       b'{"e":"intent","key":"k5","step":"x","attempt":"2"}',
       b'{"e":"explode","key":"k6"}',
       b'{"v":"1","e":"intent","key":"k7"}',
       b'{"e":"done","key":"k8","step":"x","outputs":{},"task_ids":"t"}']


@pytest.mark.parametrize("bad", BAD, ids=[b.decode()[:40] for b in BAD])
async def test_a_line_of_the_wrong_shape_is_skipped_with_its_line_number(tmp_path: Path,
                                                                        bad: bytes):
    await run_engine(tmp_path, ScriptedProvider(Ledger()))
    journal = tmp_path / "state" / "journal.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    middle = len(lines) // 2
    journal.write_bytes(b"".join([*lines[:middle], bad + b"\n", *lines[middle:]]))
    store = Store(tmp_path / "state").open()
    assert len(store.warnings) == 1
    assert store.warnings[0].startswith(f"{journal}:{middle + 1}: skipped a line")
    assert "not a journal event" in store.warnings[0] or "not JSON" in store.warnings[0]
    store.close()
    # The valid lines around it still count: nothing is paid again.
    ledger = Ledger()
    eng = await run_engine(tmp_path, ScriptedProvider(ledger))
    assert ledger.created == []
    assert eng.status == "succeeded"


def test_a_wrong_line_is_reported_by_the_cli_and_the_run_goes_on(tmp_path: Path):
    (tmp_path / "r.yaml").write_text("""\
version: 1
name: j
steps:
  song:
    uses: generate
    with: {title: J, style: pop, prompt: "la"}
""")
    cmd = [sys.executable, "-m", "runner", "run", "r.yaml"]
    assert subprocess.run(cmd, cwd=tmp_path, capture_output=True, timeout=120).returncode == 0
    journal = tmp_path / ".sunoflow" / "journal.jsonl"
    journal.write_bytes(b'{"files": "x"}\n' + journal.read_bytes())
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"warning: {journal}:1: skipped a line that is not a journal event" in r.stderr
    assert "1 cached" in r.stderr


# --- a task id the journal refuses -----------------------------------------------------------

class RefusingStore(Store):
    """A journal on a disk that refuses the `submitted` line of one step `times` times (as
    a full disk whose reserve another writer took)."""

    def __init__(self, root: Path, step: str, times: int) -> None:
        super().__init__(root)
        self.refuse_step, self.refusals = step, times

    def record(self, event: str, key: str, step: str, *, durable: bool = True,
               **data: Any) -> None:
        if event == "submitted" and step == self.refuse_step and self.refusals > 0:
            self.refusals -= 1
            raise JournalError("cannot write to the journal (No space left on device)")
        super().record(event, key, step, durable=durable, **data)


def engine_with(tmp_path: Path, store: Store, provider: ScriptedProvider,
                out: io.StringIO) -> Engine:
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE % "")
    plan = planner.build(recipes.load(path))
    return Engine(plan, store, {"local": provider, "sunoapi": provider},
                  Options(state_dir=store.root, clock=FakeClock(), handle_signals=False,
                          concurrency=1), PlainProgress(stream=out))


async def test_a_refused_task_id_is_kept_printed_and_written_again(tmp_path: Path):
    ledger = Ledger()
    out = io.StringIO()
    store = RefusingStore(tmp_path / "state", "words[0]", times=2).open()
    eng = engine_with(tmp_path, store, ScriptedProvider(ledger), out)
    assert await eng.run() == "failed"
    store.close()
    task = next(t for s, t in ledger.created if s == "words[0]")
    text = out.getvalue()
    assert f"words[0]: task {task} was submitted and paid for, but its id could not be " \
        "journaled" in text
    # Kept in memory: polled and finished in this run, its id in the step's record.
    assert eng.records["words[0]"].task_ids == [task]
    assert eng.records["words[0]"].status == "succeeded"
    # Nothing that depends on it or waits for a place was submitted after the refusal.
    assert submitted(ledger, "song[0]") == 0
    # The journal knows the task (its `done` line carries the id): never paid again.
    st = Store(tmp_path / "state").open()
    assert task in next(s for s in st.states.values() if s.step == "words[0]").task_ids
    st.close()
    again = Ledger()
    eng2 = engine_with(tmp_path, Store(tmp_path / "state").open(), ScriptedProvider(again),
                       io.StringIO())
    assert await eng2.run() == "succeeded"
    assert submitted(again, "words[0]") == 0


async def test_a_task_id_still_refused_at_the_end_is_named_for_the_user(tmp_path: Path):
    ledger = Ledger()
    out = io.StringIO()
    # The `submitted` line is refused every time, and the task ends without a `done`.
    store = RefusingStore(tmp_path / "state", "words[0]", times=99).open()
    provider = ScriptedProvider(ledger, poll_script={"words[0]": [TaskFailed("FAILED")]})
    eng = engine_with(tmp_path, store, provider, out)
    assert await eng.run() == "failed"
    store.close()
    task = next(t for s, t in ledger.created if s == "words[0]")
    assert f"words[0]: task {task} is paid for but NOT in the journal" in out.getvalue()
    assert eng.unjournaled == {eng.records["words[0]"].key: ("words[0]", task)}


def test_a_refused_task_id_is_written_when_the_disk_has_room_again(tmp_path: Path):
    ledger = Ledger()
    store = RefusingStore(tmp_path / "state", "words[0]", times=1).open()
    eng = engine_with(tmp_path, store, ScriptedProvider(ledger), io.StringIO())
    eng.unjournaled["k-unfinished"] = ("words[9]", "task-kept")
    assert eng.rejournal() == []
    assert store.states["k-unfinished"].task_id == "task-kept"
    store.close()


# --- a relative --state-dir from another folder ----------------------------------------------

SINGLE = """\
version: 1
name: single
steps:
  song:
    uses: generate
    with: {title: One, style: pop, prompt: "la"}
  short:
    uses: trim
    with: {audio: "{{ steps.song.tracks[0] }}", start: 0, end: 3}
  master:
    uses: convert
    with: {audio: "{{ steps.short.tracks[0] }}", format: flac}
outputs:
  - path: one.flac
    from: "{{ steps.master.file }}"
"""


def sunoflow(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runner", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=120, env=dict(os.environ))


def test_a_relative_state_dir_means_the_folder_where_the_command_ran(tmp_path: Path):
    (tmp_path / "a").mkdir()
    (tmp_path / "work").mkdir()
    (tmp_path / "a" / "single.yaml").write_text(SINGLE)
    work = tmp_path / "work"
    first = sunoflow("run", "../a/single.yaml", "--state-dir", "state", "--report", "r.json",
                     cwd=work)
    assert first.returncode == 0, first.stderr
    assert (work / "state" / "journal.jsonl").exists()
    assert not (tmp_path / "a" / "state").exists()
    files = [f["path"] for e in map(json.loads,
                                    (work / "state" / "journal.jsonl").read_text().splitlines())
             for f in e.get("files", [])]
    assert files
    assert all(Path(p).is_absolute() and Path(p).exists() for p in files)
    # From another folder, the same state directory named another way: nothing missing.
    status = sunoflow("status", "single.yaml", "--state-dir", "../work/state",
                      cwd=tmp_path / "a")
    assert status.stdout.splitlines()[-1] == "3 done", status.stdout
    again = sunoflow("run", "a/single.yaml", "--state-dir", "work/state", "--report", "r.json",
                     cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    steps = json.loads((tmp_path / "r.json").read_text())["steps"]
    assert [s["status"] for s in steps] == ["cached"] * 3


def test_a_moved_state_directory_still_finds_its_files(tmp_path: Path):
    (tmp_path / "single.yaml").write_text(SINGLE)
    assert sunoflow("run", "single.yaml", "--state-dir", "old", cwd=tmp_path).returncode == 0
    shutil.move(tmp_path / "old", tmp_path / "new")
    r = sunoflow("run", "single.yaml", "--state-dir", "new", "--report", "r.json",
                 cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    steps = json.loads((tmp_path / "r.json").read_text())["steps"]
    assert [s["status"] for s in steps] == ["cached"] * 3
