"""Random YAML and random recipe-shaped mappings, with adversarial scalars, fed to the
loader and validator (`sunoflow validate`, in-process): the answer is always exit 0 or 2
with positioned messages, never a traceback or an internal error, and the memory one
validation allocates stays bounded (runner.recipe.source and runner.recipe.sandbox set the limits).

Deterministic (derandomize) and small, so it runs in a few seconds."""

from __future__ import annotations

import json
import re
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from runner.cli.main import main
from runner.steps.types import TYPES

FUZZ = settings(max_examples=50, derandomize=True, deadline=None, database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
PEAK = 64 * 2**20  # bytes one validation may allocate (Python objects, tracemalloc)

# Plain scalars written as they stand: numbers at and past every limit, YAML 1.1 words,
# specials, and text that looks like syntax.
RAW = ["0", "-1", "1.5", "9223372036854775807", "9223372036854775808", "9" * 5000,
       "0x" + "f" * 5000, "0o7777777777777777777777", ".nan", ".inf", "-.Inf", "1e400",
       "-1e-400", "yes", "no", "on", "~", "null", "true", "FALSE", "0.29", "1_000", "+.5",
       "!!float .nan", "!!int 12", "!!str 5", "!!binary aGk=", "!!python/object:os.system x",
       "*nope", "&a 1", "'x'", '"\\u0000"', '"\\x1b[31m::error::x"', "-", "?", "[]", "{}"]
# Templates: ordinary, wrong, and every bound (cheap to refuse).
TEMPLATES = ["{{ vars.x }}", "{{ steps.a.tracks[0] }}", "{{ steps.a.tracks[2].duration }}",
             "{{ item }}", "{{ index + 1 }}", "{{ 10**4301 }}", "{{ 2 ** 5000 }}",
             "{{ vars|tojson(indent=40000000) }}", "{{ ('9' * 4000)|int }}",
             "{{ 'a' * 2000000 }}", "{{ range(100001)|list }}", "{{ x.__class__ }}",
             "{{ [[1] * 999999] * 999999 }}", "{% include 'x' %}", "{{ unclosed",
             "{{ steps.a.tracks[0].duration - 30 }}", "{{ 1e400 }}", "{{ 0 / 0 }}",
             "{{ lipsum() }}", "{% for i in range(3) %}{{ i }}{% endfor %}"]
FIELDS = sorted({f for t in TYPES.values() for f in t.fields} | {"audio", "bogus"})


def emit(v: object) -> str:
    """Flow-style YAML; strings are double-quoted JSON (valid YAML), RawText as is."""
    if isinstance(v, RawText):
        return v.text
    if isinstance(v, dict):
        return "{" + ", ".join(f"{emit(k)}: {emit(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(emit(x) for x in v) + "]"
    return json.dumps(v)


class RawText:
    def __init__(self, text: str) -> None:
        self.text = text


scalars = st.one_of(
    st.sampled_from(RAW).map(RawText), st.sampled_from(TEMPLATES),
    st.text(max_size=12), st.integers(-10, 10**6), st.booleans(), st.none(),
    st.floats(-1e6, 1e6))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=6)), inner,
                    max_size=4)), max_leaves=20)
step_ids = st.sampled_from(["a", "b", "song", "Bad-Id", "x" * 3])
steps = st.dictionaries(step_ids, st.fixed_dictionaries(
    {"uses": st.one_of(st.sampled_from(sorted(TYPES)), st.sampled_from(
        ["./missing.yaml", "sunoflow:nope", "generat", "../../etc/passwd"]))},
    optional={"with": st.dictionaries(st.sampled_from(FIELDS), values, max_size=5),
              "for_each": st.one_of(values, st.sampled_from(["{{ vars.x }}", "{{ steps.a }}"])),
              "take": st.one_of(st.sampled_from([0, 1, 2, "both"]), scalars),
              "needs": st.lists(step_ids, max_size=2), "if": values, "retry": values}),
    min_size=1, max_size=3)
recipes = st.fixed_dictionaries(
    {"version": st.one_of(st.just(1), scalars), "steps": steps},
    optional={"vars": st.dictionaries(st.sampled_from(["x", "y", "tracks"]), values,
                                      max_size=3),
              "provider": st.one_of(st.sampled_from(["local", "sunoapi", "newapi"]),
                                    st.fixed_dictionaries({"kind": st.sampled_from(
                                        ["sunoapi", "newapi", "local"])}, optional={
                                        "base_url": st.sampled_from(
                                            ["https://api.api.box", "http://127.0.0.1:9",
                                             "ftp://x", ""])})),
              "outputs": st.lists(st.fixed_dictionaries(
                  {"path": st.one_of(scalars, st.sampled_from(["a.mp3", "../x.mp3"])),
                   "from": st.one_of(scalars, st.just("{{ steps.a.file }}"))},
                  optional={"lrc": scalars, "tags": st.dictionaries(
                      st.sampled_from(["cover", "title", "track"]), scalars, max_size=2)}),
                  max_size=2),
              "defaults": st.dictionaries(st.sampled_from(FIELDS), scalars, max_size=2)})

POSITIONED = re.compile(r"^(.+):(\d+):(\d+): \S|^    hint: |^.+: ok \(")


def check(tmp: Path, text: str, capsys: pytest.CaptureFixture[str], *args: str) -> None:
    (tmp / "r.yaml").write_text(text, encoding="utf-8")
    capsys.readouterr()
    tracemalloc.start()
    try:
        code = main(["validate", str(tmp / "r.yaml"), *args])
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    out, err = capsys.readouterr()
    assert code in (0, 2), err
    assert "Traceback" not in err, err
    assert "internal error" not in err, err
    for line in (out + err).splitlines():
        assert POSITIONED.match(line), line
    assert peak < PEAK, f"{peak / 2**20:.0f} MiB for:\n{text[:2000]}"


@FUZZ
@given(doc=values)
def test_random_yaml_never_breaks_the_loader(tmp_path, capsys, doc):
    check(tmp_path, emit(doc) + "\n", capsys)


@FUZZ
@given(doc=recipes, provider=st.sampled_from([(), ("--provider", "sunoapi"),
                                              ("--provider", "newapi", "--base-url",
                                               "http://127.0.0.1:9")]))
def test_random_recipes_never_break_the_validator(tmp_path, capsys, doc, provider):
    check(tmp_path, emit(doc) + "\n", capsys, *provider)


@FUZZ
@given(doc=recipes, cut=st.integers(0, 400), junk=st.sampled_from(
    ["", "\t", "\x00", "\ufeff", ":", "- ", "{{", "&a", "*a", "<<: *a", "\r", "\x1b"]))
def test_random_recipes_written_as_block_yaml_and_cut_short(tmp_path, capsys, doc, cut, junk):
    import yaml
    plain = json.loads(json.dumps(doc, default=lambda r: r.text))
    text = yaml.safe_dump(plain, sort_keys=False, allow_unicode=True)
    check(tmp_path, text[:cut] + junk + text[cut:], capsys)
