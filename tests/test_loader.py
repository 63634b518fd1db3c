"""The loader's own rules: positions inside multi-line values, the template size limits,
and values that must load unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.recipe import source
from runner.recipe.template import TemplateError, compile_template

BLOCKS = {
    "literal": "k: |\n  one\n    two {{ x }}\n  three\n",
    "folded": "k: >\n  one\n\n    two {{ x }}\n  three\n",
    "plain": "k: one\n\n  two {{ x }}\n  three\n",
    "double": 'k: "one\\n\\ttab\n\n  two {{ x }}\n  three"\n',
    "single": "k: 'it''s\n\n  two {{ x }}\n  three'\n",
}


@pytest.mark.parametrize("style", sorted(BLOCKS))
def test_line_inside_a_value_maps_to_the_file(style: str) -> None:
    """Line N of a template is where the author sees it, whatever the scalar style."""
    text = BLOCKS[style]
    doc = source.parse(text.encode(), "f.yaml")
    value = doc.data["k"]
    line = next(i for i, x in enumerate(value.split("\n")) if "two" in x)
    d = doc.diag(("k",), "m", offset=(line, 1))
    assert text.splitlines()[d.line - 1][d.col - 1:].startswith("two")


def test_position_falls_back_to_the_value() -> None:
    """An alias has no text of its own, and line 3 of a one-line value does not exist."""
    doc = source.parse(b"a: &x 'v'\nb: *x\n", "f.yaml")
    d = doc.diag(("b",), "m", offset=(3, 1))
    assert (d.line, d.col) == (2, 4)
    d = doc.diag(("a",), "m", offset=(3, 1))
    assert (d.line, d.col) == (1, 4)


@pytest.mark.parametrize("expr", ["9 ** (9 ** 9)", "'ab' * 10 ** 9", "[0] * 10 ** 9",
                                  "'%9999999999d' % 1", "'%*d' % (10 ** 9, 1)",
                                  "'{:>9999999999}'.format(1)", "'{:{}}'.format(1, 10 ** 9)",
                                  "'x' | center(10 ** 10)", "'%0999999999d' | format(1)",
                                  "1 }}{% for a in range(10 ** 5) %}{% for b in range(10 ** 5) "
                                  "%}{% endfor %}{% endfor %}{{ 1"])
def test_templates_cannot_build_huge_values(expr: str) -> None:
    with pytest.raises(TemplateError, match="not allowed in a template"):
        compile_template("{{ " + expr + " }}").render({})


@pytest.mark.parametrize(("expr", "value"), [("2 ** 10", 1024), ("'ab' * 3", "ababab"),
                                             ("'%03d' % 7", "007"), ("'{:>3}'.format(1)", "  1"),
                                             ("'x' | center(3)", " x "), ("7 % 3", 1)])
def test_ordinary_arithmetic_still_works(expr: str, value: object) -> None:
    assert compile_template("{{ " + expr + " }}").render({}) == value


def test_yaml_1_2_scalars() -> None:
    doc = source.parse(b"a: yes\nb: on\nc: 0o17\nd: 1e3\ne: ~\nf: !!str 5\n", "f.yaml")
    assert doc.data == {"a": "yes", "b": "on", "c": 15, "d": 1000.0, "e": None, "f": "5"}


@pytest.mark.parametrize(("text", "value"), [
    ("~", None), ("null", None), ("Null", None), ("NULL", None), ("", None), ("nul", "nul"),
    ("true", True), ("False", False), ("TRUE", True), ("tRUE", "tRUE"), ("yes", "yes"),
    ("12", 12), ("-3", -3), ("+4", 4), ("1_000", "1_000"), ("0x1f", 31), ("0o17", 15),
    ("1.5", 1.5), (".5", 0.5), ("-1e3", -1000.0),
    ("-x", "-x"), (".", "."), ("+", "+"), ("+.", "+."),
    ("1.2.3", "1.2.3"),
    ("word", "word"), ("no", "no"), ("12 monkeys", "12 monkeys"),
])
def test_plain_scalars(text: str, value: object) -> None:
    """Plain scalars by the YAML 1.2 core schema (words skip the number patterns)."""
    got = source.parse(f"k: {text}\n".encode(), "f.yaml").data["k"]
    assert (type(got), got) == (type(value), value)


def test_dotted_chains_read_like_spaced_ones() -> None:
    """`a.b.c` takes a shortcut past the tokenizer; it must read the same."""
    fast = compile_template("x {{ steps.song.tracks }} {{ vars.v }}")
    slow = compile_template("x {{ steps . song .tracks }} {{ vars .v }}")
    assert (fast.refs, fast.names, fast.native) == (slow.refs, slow.names, slow.native)
    assert [str(r.text()) for r in fast.refs] == ["steps.song.tracks", "vars.v"]
    for src in ("{{ steps.song._x }}", "{{ steps . song . _x }}"):
        with pytest.raises(TemplateError, match="attribute '_x'"):
            compile_template(src)


def test_the_language_does_not_plan_and_check_adds_the_plan(tmp_path: Path) -> None:
    """recipe.load reads and freezes: with a schema error it reports that alone, however
    broken the references are. The plan's check (load, then plan) adds the plan's findings
    in what did parse, in the recipe that is run and in a callee it loads alike."""
    from runner.errors import RecipeError
    from runner.plan import build as planner
    from runner.recipe import load as recipe

    (tmp_path / "inner.yaml").write_text(
        "version: 1\nbogus: 1\nsteps:\n  w:\n    uses: lyrics\n"
        "    with: {prompt: \"{{ vars.nope }}\"}\n")
    (tmp_path / "r.yaml").write_text(
        "version: 1\nname: r\nsteps:\n  a:\n    uses: lyrics\n    retry: 99\n"
        "    with: {prompt: \"{{ steps.missing.text }}\"}\n  b:\n    uses: ./inner.yaml\n")
    with pytest.raises(RecipeError) as plain:
        recipe.load(tmp_path / "r.yaml", display="r.yaml")
    with pytest.raises(RecipeError) as checked:
        planner.check(tmp_path / "r.yaml", display="r.yaml")
    said = {d.message for d in plain.value.diagnostics}
    more = {d.message for d in checked.value.diagnostics} - said
    assert any("retry must be at most 10" in m for m in said)
    assert any("unknown key 'bogus'" in m for m in said)
    assert not any("missing" in m or "nope" in m for m in said)
    assert any("'missing'" in m for m in more), more  # the plan, in the recipe run
    assert any("'nope'" in m for m in more), more  # the plan, in the callee
