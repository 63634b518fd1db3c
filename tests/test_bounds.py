"""Bounded work for any input: every template is refused or rendered within the budget
of runner.recipe.sandbox (MAX_BUILT bytes built, MAX_SECONDS), and numbers a recipe or a
template makes stay within what can be printed and stored, each refused with a
positioned message at validation."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

from runner.recipe import sandbox
from runner.recipe.template import TemplateError, compile_template


def validate(tmp: Path, text: str) -> subprocess.CompletedProcess[str]:
    (tmp / "r.yaml").write_text(text)
    return subprocess.run([sys.executable, "-c", MEASURED, "r.yaml"], cwd=tmp,
                          capture_output=True, text=True, timeout=120, check=False)


# Runs `sunoflow validate` in a child and prints its peak memory (KiB) last on stdout.
MEASURED = """\
import resource, sys
from runner.cli.main import main
code = main(["validate", sys.argv[1]])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(code)
"""


def lyrics(template: str) -> str:
    return ("version: 1\nvars: {a: [1, [2, [3, {b: 4}]]]}\nsteps:\n  w:\n    uses: lyrics\n"
            f"    with:\n      prompt: \"{template}\"\n")


@pytest.mark.parametrize(("template", "message"), [
    ("{{ range(30000)|map('center', 200000)|list }}",
     "the template builds more than 10,000,000 bytes in all"),
    ("{{ vars|tojson(indent=40000000) }}",
     "the result would have 40,000,003 characters (at most 1,000,000)"),
    ("{{ range(99999)|list|tojson(indent=30) }}",
     "the result would have 1,000,040 characters (at most 1,000,000)"),
    ("{{ 10**4301 }}", "10 ** 4301 is too large a number"),
    ("x{{ 2**5000 }}", "2 ** 5000 is too large a number"),
    ("{{ ('9' * 4000)|int }}", "a number of more than 4096 bits (about 1,233 digits) is "
                               "not allowed"),
])
def test_templates_are_refused_within_the_budget(tmp_path, template, message):
    done = validate(tmp_path, lyrics(template))
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"r.yaml:7:15: w: not allowed in a template: {message}\n"
    peak_kib = int(done.stdout.split()[-1])
    assert peak_kib < 200 * 1024  # the interpreter itself is about 40 MiB


def test_a_render_that_runs_past_its_time_is_refused(monkeypatch):
    """The clock is checked at every loop turn, call and output: with no time left, a
    loop is stopped at its first check (the limit itself is MAX_SECONDS)."""
    monkeypatch.setattr(sandbox, "MAX_SECONDS", -1.0)
    with pytest.raises(TemplateError, match=r"the template ran for more than -1 s"):
        compile_template("{% for i in range(5000) %}{{ i }}{% endfor %}").render({})
    monkeypatch.setattr(sandbox, "MAX_SECONDS", 2.0)
    assert compile_template("{% for i in range(3) %}{{ i }}{% endfor %}").render({}) == "012"


@pytest.mark.parametrize(("scalar", "message"), [
    (".nan", ".nan is not a number a recipe can use (infinity and NaN are refused)"),
    ("-.inf", "-.inf is not a number a recipe can use (infinity and NaN are refused)"),
    ("1e400", "1e400 is too large a number (at most about 1e308)"),
    ("9" * 5000, "999999999999...999999 (5000 characters) is too large a number (at most "
                 "9,223,372,036,854,775,807)"),
    ("0x" + "f" * 5000, "0xffffffffff...ffffff (5002 characters) is too large a number "
                        "(at most 9,223,372,036,854,775,807)"),
    ("0o7777777777777777777777", "0o7777777777777777777777 is too large a number (at most "
                                 "9,223,372,036,854,775,807)"),
    ("!!float .nan", ".nan is not a number a recipe can use (infinity and NaN are refused)"),
])
@pytest.mark.parametrize("where", ["vars", "end"])
def test_numbers_a_recipe_cannot_use_are_refused_where_they_stand(tmp_path, scalar, message,
                                                                  where):
    text = ("version: 1\nvars: {x: VARS}\nsteps:\n  cut:\n    uses: trim\n"
            "    with: {audio: a.wav, end: END}\n")
    text = text.replace("VARS", scalar if where == "vars" else "1") \
        .replace("END", scalar if where == "end" else "10")
    done = validate(tmp_path, text)
    assert done.returncode == 2, done.stderr
    at = "2:11" if where == "vars" else "6:31"
    assert done.stderr == f"r.yaml:{at}: {message}\n    hint: quote it if it is meant as text\n"


def test_the_largest_integer_still_reads(tmp_path):
    done = validate(tmp_path, "version: 1\nvars: {x: 9223372036854775807, y: -0x10}\n"
                    "steps:\n  w:\n    uses: lyrics\n    with: {prompt: \"{{ vars.x }}\"}\n")
    assert done.returncode == 0, done.stderr


assert resource  # used in the child
