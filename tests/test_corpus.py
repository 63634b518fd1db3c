"""The corpus of broken recipes: each `tests/corpus/NAME.yaml` must fail validation with
exit code 2 and exactly the messages in `NAME.expected` (the stderr of
`sunoflow validate NAME.yaml` run from inside tests/corpus).

To add a case: write NAME.yaml, decide what the message and position should be, make the
code say it, then record it:  cd tests/corpus && sunoflow validate NAME.yaml 2> NAME.expected
Messages that name the recipe's folder (path confinement) name it absolutely; the record
says `$CORPUS` instead:  ... 2>&1 | sed "s|$PWD|\\$CORPUS|g" > NAME.expected
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from runner.cli.main import main
from runner.recipe import schema, source

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "corpus"
CASES = sorted(p.stem for p in CORPUS.glob("*.yaml"))  # not callees/: recipes cases use
# Recipes only: examples/ci/ holds a CI workflow, which is not a recipe. The stock
# reusable recipes in recipes/ validate on their own too.
EXAMPLES = sorted(p for p in (ROOT / "examples").rglob("*.y*ml")
                  if "ci" not in p.relative_to(ROOT / "examples").parts[:-1]) \
    + sorted((ROOT / "recipes").glob("*.yaml"))


def expected(name: str) -> str:
    return (CORPUS / f"{name}.expected").read_text(encoding="utf-8")


def portable(err: str) -> str:
    """Stderr with this checkout's corpus folder written as $CORPUS."""
    return err.replace(str(CORPUS), "$CORPUS")


def validate(capsys: pytest.CaptureFixture[str], *paths: str) -> tuple[int, str, str]:
    code = main(["validate", *paths])
    out, err = capsys.readouterr()
    return code, out, portable(err)


def test_corpus_is_complete() -> None:
    assert len(CASES) >= 45
    yamls = {p.stem for p in CORPUS.glob("*.yaml")}
    records = {p.stem for p in CORPUS.glob("*.expected")}
    assert yamls == records, "every NAME.yaml needs a NAME.expected and vice versa"


@pytest.mark.parametrize("name", CASES)
def test_corpus_case(name: str, capsys: pytest.CaptureFixture[str],
                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(CORPUS)
    code, out, err = validate(capsys, f"{name}.yaml")
    assert "Traceback" not in err
    assert "internal error" not in err
    assert out == ""
    assert err == expected(name)
    assert code == 2
    for line in err.splitlines():
        # A case may use a reusable recipe from callees/; its own problems are shown there.
        assert line.startswith((f"{name}.yaml:", "callees/", "    hint: ")), line


@pytest.mark.parametrize("name", ["yaml_unclosed_flow", "not_utf8", "ref_next_index",
                                  "template_syntax_block", "upload_parent_path"])
def test_corpus_case_as_subprocess(name: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "runner", "validate", f"{name}.yaml"],
                          cwd=CORPUS, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert portable(proc.stderr) == expected(name)
    assert proc.returncode == 2


def test_several_files_report_each(capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(CORPUS)
    code, _out, err = validate(capsys, "empty.yaml", "unknown_var.yaml")
    assert code == 2
    assert err == expected("empty") + expected("unknown_var")


def test_huge_file_is_refused_before_parsing(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    line = "# " + "x" * 97 + "\n"
    (tmp_path / "huge.yaml").write_text("version: 1\n" + line * (5 * 10**6 // len(line)))
    monkeypatch.chdir(tmp_path)
    code, out, err = validate(capsys, "huge.yaml")
    assert code == 2
    assert out == ""
    assert err == ("huge.yaml:1:1: recipe is 4.8 MiB; the limit is 4 MiB\n"
                   "    hint: is this the right file? repeat steps with for_each over vars "
                   "instead of writing each one out\n")


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, _out, err = validate(capsys, "nope.yaml")
    assert (code, err) == (2, "nope.yaml:1:1: no such file\n")


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_example_validates(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = validate(capsys, str(path))
    assert (code, err) == (0, "")
    assert out.startswith(f"{path}: ok (")


def test_there_are_examples() -> None:
    assert EXAMPLES


def test_published_schema_is_current() -> None:
    published = (ROOT / "schemas" / "recipe.schema.json").read_text(encoding="utf-8")
    assert published == schema.published_text(), \
        "regenerate it: sunoflow schema > schemas/recipe.schema.json"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_example_matches_published_schema(path: Path) -> None:
    published = json.loads((ROOT / "schemas" / "recipe.schema.json").read_text())
    Draft202012Validator.check_schema(published)
    data = source.read(path).data  # YAML 1.2, as sunoflow and editors read it
    errors = [f"{list(e.absolute_path)}: {e.message}"
              for e in Draft202012Validator(published).iter_errors(data)]
    assert errors == []


@pytest.mark.parametrize("name", ["unknown_with_key", "bitrate_unknown", "extend_without_audio",
                                  "outputs_unknown_tag", "model_unknown", "needs_twice"])
def test_published_schema_rejects_schema_cases(name: str) -> None:
    """Editors that only have the published schema flag the same shape errors."""
    published = json.loads((ROOT / "schemas" / "recipe.schema.json").read_text())
    data = source.read(CORPUS / f"{name}.yaml").data
    assert list(Draft202012Validator(published).iter_errors(data))
