"""The top-level handler logs every internal error, whatever it is and wherever it
happens, and says where the log is; Ctrl-C is an interruption (130) even when it reaches
the handler inside a task group's exception group. The crash log itself survives a full
disk by going to the next folder."""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

import pytest
from test_full_disk import disk, fill  # noqa: F401 - `disk` is a fixture

from runner.cli import crashlog
from runner.cli import main as cli


def boom_with(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    def boom(*args: object, **kw: object) -> None:
        raise exc

    monkeypatch.setattr("runner.recipe.load.load", boom)


def logged(err: str) -> Path:
    assert "internal error" in err, err
    return Path(err.split("the traceback is in ")[1].split(";")[0])


@pytest.fixture
def tmp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The system's temporary folder, for this test only."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


def test_an_exception_that_is_not_an_exception_is_logged(tmp_dir, monkeypatch, capsys):
    # A cancellation escaping an event loop is a BaseException, not an Exception.
    boom_with(monkeypatch, asyncio.CancelledError("escaped"))
    assert cli.main(["validate", "r.yaml"]) == 1
    log = logged(capsys.readouterr().err)
    assert log.parent == tmp_dir
    text = log.read_text()
    assert "CancelledError: escaped" in text
    assert text.startswith("sunoflow ")


def test_a_bug_while_building_the_parser_is_logged(tmp_dir, monkeypatch, capsys):
    def broken() -> None:
        raise RuntimeError("no parser")

    monkeypatch.setattr(cli, "build_parser", broken)
    assert cli.main(["--version"]) == 1
    assert "RuntimeError: no parser" in logged(capsys.readouterr().err).read_text()


def test_ctrl_c_inside_an_exception_group_is_an_interruption(tmp_dir, monkeypatch, capsys):
    boom_with(monkeypatch, BaseExceptionGroup("tasks", [KeyboardInterrupt()]))
    assert cli.main(["validate", "r.yaml"]) == 130
    assert capsys.readouterr().err == "sunoflow: interrupted\n"
    assert list(tmp_dir.iterdir()) == []  # an interruption is no crash: no log


def test_a_group_holding_a_bug_is_logged_with_the_bug(tmp_dir, monkeypatch, capsys):
    boom_with(monkeypatch, BaseExceptionGroup("tasks", [KeyboardInterrupt(),
                                                        ValueError("the bug")]))
    assert cli.main(["validate", "r.yaml"]) == 1
    assert "ValueError: the bug" in logged(capsys.readouterr().err).read_text()


def test_a_crash_log_on_a_full_disk_goes_to_the_next_folder(disk, tmp_dir,  # noqa: F811
                                                             monkeypatch, capsys):
    # The run's state directory is on a disk with no free block: the log's file can be
    # made there but not written.
    state = disk / "state"
    state.mkdir()
    fill(disk)
    monkeypatch.setattr(crashlog, "_state_dir", state)
    boom_with(monkeypatch, RuntimeError("boom"))
    assert cli.main(["validate", "r.yaml"]) == 1
    log = logged(capsys.readouterr().err)
    assert log.parent == tmp_dir
    assert "RuntimeError: boom" in log.read_text()
    assert os.listdir(state) == []  # no empty log left behind


@pytest.mark.parametrize("command", [["run"], ["reroll", "--yes"]])
def test_a_recipe_path_that_is_a_link_loop_is_a_user_mistake(tmp_path, tmp_dir, capsys,
                                                              command):
    # The state directory is found from the recipe's real folder: only once the recipe
    # was read, so a path that cannot be resolved gets the reader's positioned message.
    (tmp_path / "a.yaml").symlink_to(tmp_path / "b.yaml")
    (tmp_path / "b.yaml").symlink_to(tmp_path / "a.yaml")
    argv = [command[0], str(tmp_path / "a.yaml"), *(["song"] if command[0] == "reroll"
                                                     else []), *command[1:]]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{tmp_path / 'a.yaml'}:1:1: cannot read"), err
    assert list(tmp_dir.iterdir()) == []
