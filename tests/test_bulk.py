"""Loading and planning pause the cyclic garbage collector, and always give it back."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.errors import RecipeError
from runner.plan import build as plan
from runner.recipe import load as recipe
from runner.recipe.bulk import building


@pytest.fixture
def collector_on() -> Iterator[None]:
    was_on = gc.isenabled()
    gc.enable()
    yield
    if not was_on:
        gc.disable()


def test_paused_inside_and_resumed_after(collector_on: None) -> None:
    seen = []
    building(lambda: seen.append(gc.isenabled()))()
    assert seen == [False]
    assert gc.isenabled()


def test_resumed_after_an_error(collector_on: None, tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("version: 1\nsteps: {a: {uses: nope}}\n")
    with pytest.raises(RecipeError):
        recipe.load(tmp_path / "bad.yaml")
    assert gc.isenabled()


def test_left_off_when_it_was_off(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text("version: 1\nsteps: {a: {uses: lyrics, with: {prompt: x}}}\n")
    was_on = gc.isenabled()
    gc.disable()
    try:
        plan.build(recipe.load(tmp_path / "r.yaml"))
        assert not gc.isenabled()
    finally:
        if was_on:
            gc.enable()


def test_nested_uses_resume_once(collector_on: None) -> None:
    states = []
    inner = building(lambda: states.append(gc.isenabled()))
    building(lambda: (inner(), states.append(gc.isenabled())))()
    assert states == [False, False]
    assert gc.isenabled()
