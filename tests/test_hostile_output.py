"""What sunoflow prints and where it writes, when a recipe, a service or the machine is
hostile: control characters never reach the terminal or a CI log raw, a place sunoflow
cannot write is named before anything is paid, and the crash log cannot be planted."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.cli import main as cli
from runner.fake import FakeServer

KEY = "sk-hostile-output-Key-42"
FORGED = "no\x1b[2J\x1b]0;pwned\x07\r\n::error::forged\u202e"

# YAML's escapes: ESC, BEL, CR, LF and a right-to-left override in a rendered path.
TRIM = r"""
version: 1
name: x
steps:
  a:
    uses: trim
    with: {audio: "{{ 'no\e[2J\e]0;pwned\a\r\n::error::forged\u202e.mp3' }}", start: 0, end: 1}
"""


LYRICS = """\
version: 1
name: words
provider: {kind: local, poll_interval: 0.05, max_poll_interval: 0.2}
steps:
  words:
    uses: lyrics
    with: {prompt: "a song about rain"}
"""


def sunoflow(*args: str, key: bool = False) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SUNO_API_KEY"}
    if key:
        env["SUNO_API_KEY"] = KEY
    return subprocess.run([sys.executable, "-m", "runner", *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def assert_clean(text: str) -> None:
    """One line per line sunoflow meant, nothing a terminal or a CI runner obeys."""
    assert "\x1b" not in text
    assert "\r" not in text
    assert "\x07" not in text
    assert "\u202e" not in text
    assert [line for line in text.splitlines() if line.lstrip().startswith("::")] == []


def test_safe_escapes_every_control_character() -> None:
    from runner.terminal import safe

    assert safe("a\x1b[2Jb\r\nc\td\x00\x7f\x9b\u2028\u202e") == \
        "a\\x1b[2Jb\\r\\nc\\td\\x00\\x7f\\x9b\\u2028\\u202e"
    assert safe("::error::x") == "\\x3a:error::x"
    assert safe("plain ÄÖ 歌 ♪ text") == "plain ÄÖ 歌 ♪ text"


def test_control_characters_from_a_recipe_are_escaped_in_messages(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text(TRIM)
    run = sunoflow("run", str(tmp_path / "t.yaml"), "--state-dir", str(tmp_path / "st"),
                   "--out", str(tmp_path / "out"))
    assert run.returncode == 1
    assert "audio file not found: no\\x1b[2J\\x1b]0;pwned\\x07" in run.stderr
    assert "\\n::error::forged\\u202e.mp3" in run.stderr
    assert_clean(run.stdout + run.stderr)


@pytest.fixture
def suno() -> Iterator[FakeServer]:
    with FakeServer("sunoapi", api_key=KEY) as server:
        yield server


def test_control_characters_from_a_service_are_escaped_in_messages(suno, tmp_path) -> None:
    (tmp_path / "r.yaml").write_text(LYRICS)
    suno.configure(faults=[{"match": {"path": "/api/v1/lyrics"},
                            "action": {"envelope_code": 400, "message": FORGED}}])
    run = sunoflow("run", str(tmp_path / "r.yaml"), "--provider", "sunoapi", "--base-url",
                   suno.url, "--state-dir", str(tmp_path / "st"), key=True)
    assert run.returncode == 1
    assert "::error::forged" in run.stderr  # shown, on the line of the message it is in
    assert_clean(run.stdout + run.stderr)


# --- places sunoflow cannot write ------------------------------------------------------


@pytest.fixture
def readonly(tmp_path: Path) -> Iterator[Path]:
    """A folder no one may write in: a read-only mount as root (who ignores permission
    bits), its permissions otherwise."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)],
                          capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip("cannot make a read-only folder here (root without mount)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def run_local(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    recipe = tmp / "album" / "r.yaml"
    if not recipe.exists():
        recipe.parent.mkdir()
        recipe.write_text(RENDER)
    return sunoflow("run", str(recipe), "--quiet", *args)


RENDER = """\
version: 1
name: one
steps:
  song:
    uses: generate
    with: {prompt: "la la", style: pop, title: One}
outputs:
  - path: one.mp3
    from: "{{ steps.song.tracks[0].file }}"
"""


@pytest.mark.parametrize(("option", "where", "what"), [
    ("--out", "out", "the album folder"),
    ("--state-dir", "state", "the state directory"),
    ("--report", "report.json", "the report"),
])
def test_a_place_that_cannot_be_written_is_named_before_the_run(tmp_path, readonly, option,
                                                                 where, what):
    target = readonly / where
    run = run_local(tmp_path, option, str(target))
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    assert f"sunoflow: cannot write {'to ' if option != '--report' else ''}{what} {target}" \
        in run.stderr
    assert "Read-only file system" in run.stderr or "Permission denied" in run.stderr
    # Nothing ran: no step was made (the state, when writable, holds no result).
    assert not (tmp_path / "album" / "out" / "r" / "one.mp3").exists()


@pytest.mark.parametrize(("option", "make", "code", "message"), [
    ("--out", "file", 2, "the album folder {p} is a file, not a folder"),
    ("--state-dir", "file", 2, "the state directory {p} is a file, not a folder"),
    ("--report", "dir", 2, "the report {p} is a folder; name a file"),
    ("--report", "under-file", 1, "cannot write the report {p}: Not a directory"),
    ("--out", "under-file", 1, "cannot write to the album folder {p}: Not a directory"),
])
def test_a_path_that_is_the_wrong_kind_is_a_clean_error(tmp_path, option, make, code,
                                                        message):
    blocker = tmp_path / "blocker"
    if make == "dir":
        blocker.mkdir()
        p = blocker
    else:
        blocker.write_text("x")
        p = blocker if make == "file" else blocker / "sub" / "x"
    run = run_local(tmp_path, option, str(p))
    assert run.returncode == code, run.stderr
    assert message.format(p=p) in run.stderr
    assert "Traceback" not in run.stderr


def test_the_path_the_user_gave_is_shown_not_where_its_link_leads(tmp_path, readonly):
    link = tmp_path / "my-out"
    link.symlink_to(readonly)
    run = run_local(tmp_path, "--out", str(link / "album"))
    assert run.returncode == 1
    assert f"the album folder {link / 'album'}" in run.stderr
    assert str(readonly) not in run.stderr


def test_the_album_folder_is_named_as_the_user_named_the_recipe(tmp_path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "r.yaml").write_text(RENDER)
    (tmp_path / "link").symlink_to(real)
    run = sunoflow("run", str(tmp_path / "link" / "r.yaml"))
    assert run.returncode == 0, run.stderr
    assert f"album written to {tmp_path / 'link' / 'out' / 'r'}" in run.stderr
    assert (real / "out" / "r" / "one.mp3").is_file()


# --- the crash log ---------------------------------------------------------------------


def crash(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kw: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr("runner.report.summary.build_report", boom)


def test_the_crash_log_is_never_written_through_a_planted_link(tmp_path, monkeypatch,
                                                                capsys) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    victim = tmp_path / "victim"
    victim.write_text("precious")
    planted = tmp_path / f"sunoflow-crash-{os.getpid()}.log"
    planted.symlink_to(victim)
    monkeypatch.setattr("runner.recipe.load.load", lambda *a, **k: (_ for _ in ()).throw(
        RuntimeError("boom")))
    assert cli.main(["validate", str(tmp_path / "r.yaml")]) == 1
    err = capsys.readouterr().err
    assert victim.read_text() == "precious"
    assert "internal error" in err
    log = Path(err.split("the traceback is in ")[1].split(";")[0])
    assert log.parent == tmp_path
    assert not log.is_symlink()
    assert log.stat().st_mode & 0o077 == 0  # private
    text = log.read_text()
    assert "RuntimeError: boom" in text
    assert "sunoflow " in text.splitlines()[0]
    assert "Python " in text.splitlines()[0]


def test_a_crash_during_a_run_is_logged_in_its_state_directory(tmp_path, monkeypatch,
                                                                capsys) -> None:
    (tmp_path / "r.yaml").write_text(RENDER)
    crash(monkeypatch)
    state = tmp_path / "state"
    assert cli.main(["run", str(tmp_path / "r.yaml"), "--state-dir", str(state), "--quiet",
                     "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    log = Path(err.split("the traceback is in ")[1].split(";")[0])
    assert log.parent == state
    assert "RuntimeError: boom" in log.read_text()
