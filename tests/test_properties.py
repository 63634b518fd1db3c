"""Mutated recipes never crash the loader: loading and planning either succeed or raise
RecipeError whose every diagnostic has a real position and a message.

The mutations are the ones authors make by accident (a deleted, duplicated or misspelt
key, a value of the wrong type, a typo inside a template, a file cut short, stray bytes)
and applied both to the parsed values (then written back as YAML) and to the raw text.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from project import git_init

from runner.errors import RecipeError
from runner.plan import build as plan
from runner.recipe import load as recipe
from runner.recipe import source

ROOT = Path(__file__).resolve().parent.parent

SMALL = [
    """\
version: 1
steps:
  song:
    uses: generate
    with: {prompt: a song about rain}
""",
    """\
version: 1
name: two
provider: {kind: sunoapi, api_key_env: MY_KEY}
defaults: {model: V4}
vars:
  themes: [rain, sun]
steps:
  words:
    uses: lyrics
    for_each: "{{ vars.themes }}"
    with: {prompt: "a song about {{ item }}"}
  song:
    uses: generate
    for_each: "{{ steps.words }}"
    needs: [words]
    retry: 1
    timeout: 15m
    with:
      title: "{{ vars.themes[index] }}"
      style: folk
      prompt: "{{ item.text }}"
  cut:
    uses: trim
    with: {audio: "{{ steps.song[1].tracks[0] }}", start: 0, end: 20}
outputs:
  - for_each: "{{ steps.song }}"
    path: "{{ index }}.mp3"
    from: "{{ item.tracks[0].file }}"
    tags: {title: "{{ vars.themes[index] }}", track: "{{ index + 1 }}"}
""",
    """\
version: 1
steps:
  song:
    uses: generate
    with:
      title: Rain
      style: folk
      prompt: |
        [Verse]
        {% for w in ['a', 'b'] %}{{ w }} {% endfor %}
        {{ 'la' ~ ' la' }}
  long:
    uses: extend
    with:
      audio: "{{ steps.song.tracks[0] }}"
      continue_at: "{{ steps.song.tracks[0].duration - 10 }}"
""",
]
SEEDS = [(ROOT / "examples" / "album.yaml").read_text(encoding="utf-8"), *SMALL]

PROPS = settings(max_examples=150, deadline=None, derandomize=True,
                 suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/ beside recipes/, as in the repository: the album uses ../recipes/."""
    base = tmp_path_factory.mktemp("props")
    shutil.copytree(ROOT / "recipes", base / "recipes")
    (base / "examples").mkdir()
    git_init(base)
    return base / "examples"


def check(workdir: Path, raw: bytes) -> None:
    """Load and plan `raw`; the only exception allowed out is a well-formed RecipeError."""
    path = workdir / "recipe.yaml"
    path.write_bytes(raw)
    try:
        plan.build(recipe.load(path, display="recipe.yaml"))
    except RecipeError as exc:
        diagnostics = exc.diagnostics
    else:
        return
    assert diagnostics
    for d in diagnostics:
        # A stock recipe the mutant uses may be what cannot run (e.g. on another provider).
        assert d.file == "recipe.yaml" or d.file.startswith("../recipes/"), str(d)
        lines = (raw if d.file == "recipe.yaml" else (workdir / d.file).read_bytes()) \
            .count(b"\n") + 1
        assert 1 <= d.line <= lines, str(d)
        assert d.col >= 1, str(d)
        assert d.message.strip(), str(d)
        assert "Traceback" not in str(d)


# --- mutations of the parsed values ---------------------------------------------------

def paths(value: Any, here: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [here]
    if isinstance(value, dict):
        for k, v in value.items():
            out += paths(v, (*here, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += paths(v, (*here, i))
    return out


def get(value: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        value = value[p]
    return value


SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30),
    st.sampled_from(["{{ vars }}", "{{ steps }}", "{{ item }}", "{{ index }}", "{{",
                     "{{ steps.song.tracks[0] }}", "{% if %}", "V4_5", "both", "./x.yaml",
                     "{{ steps.words[index + 9].text }}", "{{ 1 / 0 }}", "{{ vars.x.y.z }}"]),
)
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3),
                   st.dictionaries(st.text(max_size=8), SCALARS, max_size=3))
KEYS = st.one_of(st.text(max_size=12),
                 st.sampled_from(["uses", "with", "needs", "for_each", "if", "retry", "timeout",
                                  "take", "steps", "vars", "outputs", "version", "prompt",
                                  "audio", "model", "song", "words", "from", "path", "tags"]))


@st.composite
def mutated_values(draw: st.DrawFn) -> bytes:
    text = draw(st.sampled_from(SEEDS))
    data = source.parse(text.encode(), "seed.yaml").data
    for _ in range(draw(st.integers(1, 3))):
        target = draw(st.sampled_from(paths(data)))
        op = draw(st.sampled_from(["delete", "rename", "replace", "template", "add"]))
        if not target:
            continue
        parent, key = get(data, target[:-1]), target[-1]
        if op == "delete":
            del parent[key]
        elif op == "rename" and isinstance(parent, dict):
            new = draw(KEYS)
            if new not in parent:
                parent[new] = parent.pop(key)
        elif op == "replace":
            parent[key] = draw(VALUES)
        elif op == "template" and isinstance(parent[key], str):
            s = parent[key]
            at = draw(st.integers(0, len(s)))
            parent[key] = s[:at] + draw(st.text(alphabet="{}%#[]().|'\"~+-*/ _abcxyz019",
                                                max_size=8)) + s[at:]
        elif op == "add" and isinstance(parent[key], dict):
            parent[key][draw(KEYS)] = draw(VALUES)
        paths(data)  # keep the structure walkable for the next round
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True).encode()


@PROPS
@given(raw=mutated_values())
def test_mutated_values_never_crash(workdir: Path, raw: bytes) -> None:
    check(workdir, raw)


# --- mutations of the raw text -------------------------------------------------------

@PROPS
@given(text=st.sampled_from(SEEDS), data=st.data())
def test_truncated_files_never_crash(workdir: Path, text: str, data: st.DataObject) -> None:
    raw = text.encode()
    check(workdir, raw[: data.draw(st.integers(0, len(raw)))])


@PROPS
@given(text=st.sampled_from(SEEDS), data=st.data())
def test_random_bytes_never_crash(workdir: Path, text: str, data: st.DataObject) -> None:
    raw = text.encode()
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(raw)))
        raw = raw[:at] + data.draw(st.binary(min_size=1, max_size=6)) + raw[at:]
    check(workdir, raw)


@PROPS
@given(text=st.sampled_from(SEEDS), data=st.data())
def test_line_edits_never_crash(workdir: Path, text: str, data: st.DataObject) -> None:
    """Delete, duplicate or re-indent a line: duplicate keys, orphaned blocks, bad nesting."""
    lines = text.splitlines(keepends=True)
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(lines) - 1))
        op = data.draw(st.sampled_from(["delete", "duplicate", "indent", "dedent", "tab"]))
        if op == "delete" and len(lines) > 1:
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "indent":
            lines[i] = "  " + lines[i]
        elif op == "dedent":
            lines[i] = lines[i][2:] if lines[i].startswith("  ") else lines[i]
        elif op == "tab":
            lines[i] = "\t" + lines[i].lstrip(" ")
    check(workdir, "".join(lines).encode())


@PROPS
@given(text=st.sampled_from([s for s in SEEDS if "{{" in s]), data=st.data())
def test_template_typos_never_crash(workdir: Path, text: str, data: st.DataObject) -> None:
    """Random text typed inside a `{{ ... }}` or `{% ... %}`."""
    starts = [i + 2 for i in range(len(text)) if text.startswith(("{{", "{%"), i)]
    at = data.draw(st.sampled_from(starts))
    junk = data.draw(st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"),
                             max_size=10))
    check(workdir, (text[:at] + junk + text[at:]).encode())
