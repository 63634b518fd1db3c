"""What a run holds per step instance: one copy of each finished step's outputs (shared by
the engine, the templates' context and the store), with repeated strings held once, read
back from the journal the same way; and the report written piece by piece."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from runner.engine.records import Options
from runner.engine.scheduler import Engine
from runner.plan import build as planner
from runner.providers import registry as providers
from runner.recipe import load as recipes
from runner.report import summary as summaries
from runner.report.progress import PlainProgress
from runner.store.journal import Store, compact

# The async tests run on each backend of anyio (tests/conftest.py: anyio_backend).
pytestmark = pytest.mark.anyio

RECIPE = """\
version: 1
name: mem
vars: {n: [0, 1, 2, 3]}
steps:
  a:
    uses: boost_style
    for_each: "{{ vars.n }}"
    with: {content: "style {{ item }}"}
  b:
    uses: boost_style
    for_each: "{{ steps.a }}"
    with: {content: "{{ item.text }} and more"}
"""


async def run(tmp_path: Path) -> tuple[Engine, Store]:
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE)
    plan = planner.build(recipes.load(path))
    store = Store(tmp_path / "state").open()
    local = providers.create(recipes.Provider(kind="local"), env={})
    eng = Engine(plan, store, {"local": local},
                 Options(state_dir=tmp_path / "state", handle_signals=False),
                 PlainProgress(quiet=True))
    assert await eng.run() == "succeeded"
    return eng, store


def shared_once(eng: Engine, store: Store) -> None:
    for iid, rec in eng.records.items():
        assert rec.key is not None
        st = store.states[rec.key]
        inst = eng.plan.instances[iid]
        # The engine's record, its results (what templates read) and the store's state
        # are one object, not copies.
        assert rec.outputs is st.outputs
        assert eng.results[iid] is st.outputs
        assert eng.steps_ctx[inst.step.id][inst.index] is st.outputs
        assert rec.key is st.key


async def test_a_finished_steps_outputs_are_held_once(tmp_path: Path):
    eng, store = await run(tmp_path)
    assert {r.status for r in eng.records.values()} == {"succeeded"}
    shared_once(eng, store)
    store.close()
    # Resumed from the journal: every instance cached, still one copy each.
    eng, store = await run(tmp_path)
    assert {r.status for r in eng.records.values()} == {"cached"}
    shared_once(eng, store)
    store.close()


def test_outputs_read_from_the_journal_hold_repeated_strings_once(tmp_path: Path):
    track = {"id": "clip-1", "task_id": "task-9", "model": "V4_5", "title": "Song",
             "file": str(tmp_path / "state" / "blobs" / "sha256" / "ab" / ("ab" * 32 + ".mp3"))}
    outputs = {"tracks": [track, {**track, "id": "clip-2"}], "task_id": "task-9",
               "file": track["file"], "lyrics": "la " * 200}
    store = Store(tmp_path / "state").open()
    for k in ("k1", "k2"):
        # Written as the engine writes them: the JSON text has no sharing at all.
        store.record("done", k, f"s-{k}", outputs=json.loads(json.dumps(outputs)),
                      files=[{"path": track["file"], "sha256": "ab" * 32, "size": 1,
                              "field": "tracks.0.file"}])
    store.close()
    again = Store(tmp_path / "state").open()
    one, two = again.states["k1"], again.states["k2"]
    assert one.outputs == outputs == two.outputs  # the same values, as written
    t1, t2 = one.outputs["tracks"]
    # Keys, ids, models and paths: one string for every occurrence, across keys too.
    assert next(iter(t1)) is next(iter(t2)) is next(iter(two.outputs["tracks"][0]))
    assert t1["task_id"] is t2["task_id"] is two.outputs["task_id"]
    assert t1["model"] is two.outputs["tracks"][1]["model"]
    assert t1["file"] is one.outputs["file"] is one.files[0]["path"] is two.files[0]["path"]
    # Long text is left alone (seldom repeated; interning it would only cost).
    assert one.outputs["lyrics"] == two.outputs["lyrics"]
    assert one.outputs["lyrics"] is not two.outputs["lyrics"]
    again.close()


def test_compact_keeps_every_value_and_type():
    value = {"a": [1, 2.5, None, True, "x" * 300, {"b": "c"}], 3: "three", "t": (1, 2)}
    out = compact(value)
    assert out == value
    assert [type(v) for v in out["a"]] == [type(v) for v in value["a"]]
    assert out["t"] == (1, 2)


def test_the_report_is_streamed_as_the_same_text(tmp_path: Path):
    # Enough steps for several batches of pieces, with values json cannot write itself.
    report = {"status": "succeeded", "steps": [
        {"id": f"s[{i}]", "outputs": {"text": f"t{i}", "at": tmp_path}, "seconds": i / 3}
        for i in range(3000)]}
    out = io.StringIO()
    summaries.write_report(report, out)
    assert out.getvalue() == json.dumps(report, indent=2, default=str) + "\n"
