"""Templates from a pull request try to break out of the sandbox or to exhaust the machine
that validates them (issue 9). Each attempt must fail with a positioned message, at
validation or as a step failure: never a traceback, a hang, a leak or a crash.

Validation runs in a subprocess capped at 2 GiB of address space and a minute, so a
regression shows up as a failed test, not as a machine out of memory."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

SECRET = "sunoflow-sandbox-Secret-7f3"

# Refused when the template is read: no render needed.
STATIC = {
    "mro": ("{{ ''.__class__.__mro__[1].__subclasses__() }}",
            "templates may not use the attribute '__subclasses__'"),
    "globals": ("{{ lipsum.__globals__.os.environ }}",
                "templates may not use the attribute '__globals__'"),
    "init_globals": ("{{ range.__init__.__globals__ }}",
                     "templates may not use the attribute '__globals__'"),
    "cycler": ("{{ cycler(1, 2).next() }}", "unknown name 'cycler' in template"),
    "joiner": ("{{ joiner(',')() }}", "unknown name 'joiner' in template"),
    "namespace": ("{% set ns = namespace(x=1) %}{{ ns.x }}",
                  "unknown name 'namespace' in template"),
    "lipsum": ("{{ lipsum(1) }}", "unknown name 'lipsum' in template"),
    "environ": ("{{ environ['SUNOFLOW_SECRET'] }}", "unknown name 'environ' in template"),
    "os": ("{{ os.environ.SUNOFLOW_SECRET }}", "unknown name 'os' in template"),
    "self": ("{{ self._TemplateReference__context }}",
             "templates may not use the attribute '_TemplateReference__context'"),
    "config": ("{{ config.items() }}", "unknown name 'config' in template"),
    "include": ("{% include '/etc/passwd' %}",
                "templates may not use {% include %}: they cannot read files"),
    "import": ("{% import '/etc/passwd' as p %}{{ p }}",
               "templates may not use {% import %}: they cannot read files"),
    "from_import": ("{% from '/etc/passwd' import x %}{{ x }}",
                    "templates may not use {% from %}: they cannot read files"),
    "extends": ("{% extends '/etc/passwd' %}",
                "templates may not use {% extends %}: they cannot read files"),
    # Macros are refused as unknown names (were they allowed, the call limit would hold).
    "macro": ("{% macro f(n) %}{{ f(n - 1) }}{{ f(n - 1) }}{% endmacro %}{{ f(60) }}",
              "unknown name 'f' in template"),
}

# Refused while rendering (with vars only, which validation already does).
NOT_ALLOWED = "not allowed in a template: "
RENDER = {
    "item_dunder": ("{{ {}['__class__'] }}",
                    NOT_ALLOWED + "access to attribute '__class__' of 'dict' object is "
                                  "unsafe."),
    "attr_filter": ("{{ vars|attr('__class__') }}",
                    NOT_ALLOWED + "access to attribute '__class__' of 'dict' object is "
                                  "unsafe."),
    "format_dunder": ("{{ '{0.__class__}'.format({}) }}",
                      NOT_ALLOWED + "access to attribute '__class__' of 'dict' object is "
                                    "unsafe."),
    "huge_range": ("{{ range(10**9)|list }}",
                   "OverflowError: Range too big. The sandbox blocks ranges larger than "
                   "MAX_RANGE (100000)."),
    "repeat": ("{{ 'la' * 10**9 }}",
               NOT_ALLOWED + "the result would have 2,000,000,000 characters (at most "
                             "1,000,000)"),
    "ljust": ("{{ 'x'.ljust(10**9) }}",
              NOT_ALLOWED + "the result would have 1,000,000,000 characters (at most "
                            "1,000,000)"),
    "replace": ("{{ ('a' * 999999)|replace('a', 'a' * 999999) }}",
                NOT_ALLOWED + "the result would have 999,998,000,001 characters (at most "
                              "1,000,000)"),
    "join": ("{{ ('a' * 999999).join(['b'] * 999999) }}",
             NOT_ALLOWED + "a value would have 1,000,001 characters (at most 1,000,000)"),
    "indent": ("{{ ('a\\n' * 500000)|indent(10**6) }}",
               NOT_ALLOWED + "the result would have 500,002,000,000 characters (at most "
                             "1,000,000)"),
    # A million references to one list cost little memory, but would print as 10^12.
    "nested": ("{{ [[1] * 999999] * 999999 }}",
               "not allowed in a template: the template builds more than 10,000,000 bytes "
               "in all"),
    "shared": ("{% set a = 'a' * 999999 %}{% set b = [a, a, a, a, a, a, a, a, a, a] %}"
               "{{ [b, b, b, b, b, b, b, b, b, b] }}",
               NOT_ALLOWED + "a value would have 1,000,007 characters (at most 1,000,000)"),
    "doubling": ("{% set a = [1] * 999999 %}{% set a = a + a %}{{ a|length }}",
                 NOT_ALLOWED + "the result would have 1,999,998 items (at most 1,000,000)"),
    "batch": ("{{ [1]|batch(10**9, 0)|list }}", NOT_ALLOWED + "batch(1000000000) is too large"),
    "slice": ("{{ [1]|slice(10**9)|list }}", NOT_ALLOWED + "slice(1000000000) is too large"),
    "sum_lists": ("{{ ([[1]] * 100000)|sum(start=[]) }}",
                  NOT_ALLOWED + "sum adds numbers only (start must be a number)"),
    "printf": ("{{ ('%s' * 333333) % (('a' * 999999,) * 333333) }}",
               NOT_ALLOWED + "the result would have 333,333,333,333 characters (at most "
                             "1,000,000)"),
    "format": ("{{ ('{0}' * 333333).format('a' * 999999) }}",
               NOT_ALLOWED + "the result would have 333,333,666,666 characters (at most "
                             "1,000,000)"),
    "big_int": ("{% set x = 2**30000000 %}{% set x = x * x %}{% set x = x * x %}{{ x > 1 }}",
                NOT_ALLOWED + "2 ** 30000000 is too large a number"),
    "power": ("{{ 9 ** (9 ** 9) }}", NOT_ALLOWED + "9 ** 387420489 is too large a number"),
    "to_bytes": ("{{ (1).to_bytes(10**9, 'big') }}",
                 NOT_ALLOWED + "the result would have 1,000,000,000 characters (at most "
                               "1,000,000)"),
    "loops": ("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}"
              "{% endfor %}", NOT_ALLOWED + "the template's loops run more than 1,000,000 "
                                            "times"),
    "output": ("{% set s = 'a' * 999999 %}{% for i in range(1000) %}{{ s }}{% endfor %}",
               NOT_ALLOWED + "the template writes more than 1,000,000 characters"),
    "calls": ("{% for i in range(100000) %}{{ 'a'.upper() }}{{ 'b'.upper() }}{% endfor %}",
              NOT_ALLOWED + "the template makes more than 100,000 calls (functions, methods "
                            "and filters)"),
    "map": ("{{ ([1] * 999999)|map('string')|join(',') }}",
            NOT_ALLOWED + "the template makes more than 100,000 calls (functions, methods "
                          "and filters)"),
}


def recipe(cases: dict[str, tuple[str, str]]) -> str:
    lines = ["version: 1", "steps:"]
    for name, (template, _msg) in cases.items():
        lines += [f"  {name}:", "    uses: generate",
                  f"    with: {{prompt: {json.dumps(template)}}}"]
    return "\n".join(lines) + "\n"


def _cap() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SUNOFLOW_SECRET": SECRET}
    return subprocess.run([sys.executable, "-m", "runner", "validate", path.name],
                          cwd=path.parent, env=env, capture_output=True, text=True,
                          timeout=60, preexec_fn=_cap)


@pytest.mark.parametrize("cases", [STATIC, RENDER], ids=["static", "render"])
def test_every_attempt_is_refused_with_a_positioned_message(
        tmp_path: Path, cases: dict[str, tuple[str, str]]) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(recipe(cases))
    r = validate(path)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "internal error" not in r.stderr
    assert SECRET not in r.stdout + r.stderr
    got: dict[int, str] = {}
    for line in r.stderr.splitlines():
        if line.startswith("    hint: "):
            continue
        where, _, message = line.partition(": ")
        file, row, col = where.split(":")
        assert file == "r.yaml"
        assert int(col) > 1
        got[int(row)] = message
    # Each case's message is on its `with:` line (the 3rd of its 3 lines).
    for n, (name, (_template, message)) in enumerate(cases.items()):
        text = got.get(3 + 3 * n + 2, "")
        assert text.removeprefix(f"{name}: ") == message, name


def test_big_values_pass_through_when_they_are_not_made_into_text(tmp_path: Path) -> None:
    """The limits are on what a template builds and prints, not on the data it is given:
    an album's worth of values (over a million characters as text) can be counted,
    picked from and summed."""
    big = [{"t": f"track {i} " + "x" * 600, "n": i} for i in range(2000)]
    (tmp_path / "r.yaml").write_text(
        "version: 1\n"
        f"vars: {{big: {json.dumps(big)}}}\n"
        "steps:\n"
        "  song:\n"
        "    uses: generate\n"
        "    with: {prompt: \"{{ vars.big | length }} {{ (vars.big | last).t[:8] | upper }} "
        "{{ vars.big | map(attribute='n') | sum }} {{ (vars.big | sort(attribute='n') "
        "| first).n }}\"}\n")
    r = validate(tmp_path / "r.yaml")
    assert (r.returncode, r.stderr) == (0, "")


RUNTIME = """\
version: 1
name: runtime
provider: {kind: local, take_seconds: 2}
steps:
  words:
    uses: lyrics
    with: {prompt: rain}
  bomb:
    uses: generate
    with: {prompt: "{{ steps.words.text.ljust(10**9) }}"}
  peek:
    uses: generate
    with: {prompt: "{{ steps.words|attr('__class__') }}"}
  loop:
    uses: generate
    with:
      prompt: "{% for w in steps.words.texts * 999999 %}{{ w.text }}{% endfor %}"
"""


def test_a_template_over_step_outputs_fails_its_step_at_run_time(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(RUNTIME)
    env = {**os.environ, "SUNOFLOW_SECRET": SECRET}
    r = subprocess.run([sys.executable, "-m", "runner", "run", "r.yaml", "--keep-going",
                        "--report", "report.json"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120, preexec_fn=_cap)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert SECRET not in r.stdout + r.stderr
    steps = {s["id"]: s for s in json.loads((tmp_path / "report.json").read_text())["steps"]}
    assert steps["words"]["status"] == "succeeded"
    # Each names the template's position, as validate would.
    prefix = "cannot render inputs: r.yaml:{}: steps.{}.with.prompt: " + NOT_ALLOWED
    assert steps["bomb"]["error"] == "bomb: " + prefix.format("10:20", "bomb") + \
        "the result would have 1,000,000,000 characters (at most 1,000,000)"
    assert steps["peek"]["error"] == "peek: " + prefix.format("13:20", "peek") + \
        "access to attribute '__class__' of 'dict' object is unsafe."
    assert steps["loop"]["error"].startswith("loop: " + prefix.format("17:15", "loop")
                                             + "the result would have ")
