"""Untrusted recipes and the files of the machine that runs them (issue 9): a recipe reads
only inside its folder (or an --allow-path folder), symlinks included, and sunoflow writes
only inside --out and the state directory, whatever links a pull request commits.

The literal cases are in the broken-recipe corpus (upload_*.yaml, outputs_path_*.yaml);
these need links made at test time, a real run, or the service fake."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.cli.main import main
from runner.fake import FakeServer
from runner.studio import compose
from runner.studio.probe import probe


def sunoflow(*args: str, cwd: Path, env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runner", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=120, env=env)


TRIM = """\
version: 1
name: cut
provider: {{kind: local, take_seconds: 2}}
steps:
  cut:
    uses: trim
    with: {{audio: {audio}, end: 1}}
outputs:
  - path: cut.mp3
    from: "{{{{ steps.cut.file }}}}"
"""


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    """tmp/recipe/ (the recipe's folder) and tmp/shared/take.mp3 outside it."""
    (tmp_path / "recipe").mkdir()
    (tmp_path / "shared").mkdir()
    compose.synth(tmp_path / "shared" / "take.mp3", seed="take", duration=2.0, style="folk")
    return tmp_path


def test_a_symlink_in_the_folder_that_leads_outside_is_refused(
        layout: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = layout / "recipe"
    (recipe / "take.mp3").symlink_to(layout / "shared" / "take.mp3")
    (recipe / "r.yaml").write_text(TRIM.format(audio="take.mp3"))
    assert main(["validate", str(recipe / "r.yaml")]) == 2
    _out, err = capsys.readouterr()
    assert err == (
        f"{recipe / 'r.yaml'}:7:19: step 'cut' (trim): path 'take.mp3' leads through a "
        f"symbolic link to {(layout / 'shared' / 'take.mp3').resolve()}, which is outside the "
        f"recipe's folder ({recipe.resolve()}); pass --allow-path DIR to allow it\n")
    # A link to a folder is the same: what counts is where the file really is.
    (recipe / "lib").symlink_to(layout / "shared", target_is_directory=True)
    (recipe / "r.yaml").write_text(TRIM.format(audio="lib/take.mp3"))
    assert main(["validate", str(recipe / "r.yaml")]) == 2
    assert "path 'lib/take.mp3' leads through a symbolic link" in capsys.readouterr().err
    # A link that stays inside the folder is fine.
    (recipe / "inside.mp3").write_bytes((layout / "shared" / "take.mp3").read_bytes())
    (recipe / "alias.mp3").symlink_to("inside.mp3")
    (recipe / "r.yaml").write_text(TRIM.format(audio="alias.mp3"))
    assert main(["validate", str(recipe / "r.yaml")]) == 0


def test_allow_path_widens_what_a_recipe_may_read(layout: Path) -> None:
    recipe = layout / "recipe"
    (recipe / "r.yaml").write_text(TRIM.format(audio="../shared/take.mp3"))
    refused = sunoflow("run", "r.yaml", cwd=recipe)
    assert refused.returncode == 2
    assert "path '../shared/take.mp3' is outside the recipe's folder" in refused.stderr
    assert not (recipe / ".sunoflow").exists()  # refused before anything ran
    for cmd in ("validate", "plan"):
        assert sunoflow(cmd, "r.yaml", "--allow-path", "../shared", cwd=recipe).returncode == 0
    done = sunoflow("run", "r.yaml", "--allow-path", "../shared", "--quiet", cwd=recipe)
    assert done.returncode == 0, done.stderr
    assert 0.9 < probe(recipe / "out" / "r" / "cut.mp3").duration < 1.1
    # The link case again, now allowed: the file is inside an allowed folder.
    (recipe / "take.mp3").symlink_to(layout / "shared" / "take.mp3")
    (recipe / "r.yaml").write_text(TRIM.format(audio="take.mp3"))
    assert sunoflow("validate", "r.yaml", "--allow-path", str(layout / "shared"),
                    cwd=recipe).returncode == 0
    bad = sunoflow("validate", "r.yaml", "--allow-path", "nope", cwd=recipe)
    assert (bad.returncode, bad.stderr) == (2, "sunoflow: --allow-path nope: no such folder\n")
    empty = sunoflow("validate", "r.yaml", "--allow-path", "", cwd=recipe)
    assert (empty.returncode, empty.stderr) == (
        2, "sunoflow: --allow-path needs a folder (use --allow-path . for the current one)\n")


RENDERED = """\
version: 1
name: rendered
provider: {kind: sunoapi, poll_interval: 0.05, max_poll_interval: 0.2}
steps:
  words:
    uses: lyrics
    with: {prompt: a song about rain}
  remix:
    uses: upload_cover
    with: {audio: "/etc/{{ steps.words.title }}.mp3", style: jazz, title: Redux,
           prompt: "{{ steps.words.text }}"}
"""


@pytest.fixture
def srv() -> Iterator[FakeServer]:
    with FakeServer("sunoapi", api_key="sk-paths") as server:
        yield server


def test_a_rendered_path_is_checked_before_any_upload_or_submit(srv: FakeServer,
                                                                tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(RENDERED)
    env = {**os.environ, "SUNO_API_KEY": "sk-paths"}
    r = sunoflow("run", "r.yaml", "--base-url", srv.url, "--report", "report.json",
                 "--quiet", cwd=tmp_path, env=env)
    assert r.returncode == 1
    report = json.loads((tmp_path / "report.json").read_text())
    [remix] = [s for s in report["steps"] if s["id"] == "remix"]
    assert remix["status"] == "failed"
    assert remix["error"].startswith("step 'remix' (upload_cover): path '/etc/")
    assert remix["error"].endswith(f"is outside the recipe's folder ({tmp_path.resolve()}); "
                                   "pass --allow-path DIR to allow it")
    assert remix["attempts"] == 0
    # Only the lyrics were paid for: no upload, no upload-cover, and no intent in the journal
    # (which would make the next run count it as possibly submitted).
    assert [e["path"] for e in srv.log if e["method"] == "POST"] == ["/api/v1/lyrics"]
    journal = (tmp_path / ".sunoflow" / "journal.jsonl").read_text()
    assert '"step":"remix"' not in journal


def test_links_committed_where_sunoflow_writes_are_refused_or_replaced(layout: Path) -> None:
    recipe = layout / "recipe"
    (recipe / "take.mp3").write_bytes((layout / "shared" / "take.mp3").read_bytes())
    (recipe / "r.yaml").write_text(TRIM.format(audio="take.mp3"))
    victim = layout / "victim.txt"
    victim.write_text("precious\n")

    # The default album folder, committed as a link out of the recipe's folder.
    (recipe / "out").symlink_to(layout / "shared", target_is_directory=True)
    r = sunoflow("run", "r.yaml", "--quiet", cwd=recipe)
    assert r.returncode == 2
    assert f"the album folder {recipe / 'out' / 'r'} leads through a symbolic link to " \
           f"{(layout / 'shared').resolve() / 'r'}" in r.stderr
    (recipe / "out").unlink()

    # A link inside the state directory (where the engine writes scratch files by key).
    (recipe / ".sunoflow" / "tmp").mkdir(parents=True)
    (recipe / ".sunoflow" / "tmp" / "work").symlink_to(layout, target_is_directory=True)
    r = sunoflow("run", "r.yaml", "--quiet", cwd=recipe)
    assert r.returncode == 2
    assert "contains a symbolic link" in r.stderr
    assert "tmp/work" in r.stderr
    (recipe / ".sunoflow" / "tmp" / "work").unlink()

    # Links in place of files sunoflow writes: replaced, never written through.
    (recipe / "out" / "r").mkdir(parents=True)
    for name in ("out/r/manifest.json", "out/r/cut.mp3", "out/r/cut.m3u", "r.lock",
                 "report.json"):
        (recipe / name).symlink_to(victim)
    r = sunoflow("run", "r.yaml", "--quiet", "--report", "report.json", cwd=recipe)
    assert r.returncode == 0, r.stderr
    assert victim.read_text() == "precious\n"
    for name in ("out/r/manifest.json", "out/r/cut.mp3", "out/r/cut.m3u", "r.lock", "report.json"):
        assert not (recipe / name).is_symlink(), name
    assert (recipe / "out" / "r" / "cut.mp3").stat().st_mode & 0o777 == 0o644 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
