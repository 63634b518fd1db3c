"""runner.studio.dice: the one deterministic random stream, pinned.

The bytes the local provider makes (the example album) follow from these draws; the
values below were read from the code before the stream was gathered into dice.py
(media.py's _Dice, textgen's _Picker, local.py's _seed), so a change of key, counter,
order or reading of a draw fails here before it changes every album. Pure Python: no
ffmpeg involved.
"""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path

from runner.studio import compose, textgen
from runner.studio.dice import Dice, digest

STUDIO = Path(__file__).resolve().parent.parent / "runner" / "studio"


def test_the_composer_s_reading_of_the_stream_is_pinned() -> None:
    d = Dice("sunoflow-synth-v1", "seed", "punk")
    assert [round(d.random(), 12) for _ in range(3)] == [0.057838226727, 0.318292565248,
                                                          0.741794168258]
    assert d.randint(0, 11) == 0
    assert d.choice("abcdefg") == "f"


def test_the_texts_reading_of_the_stream_is_pinned() -> None:
    d = Dice("lyrics", "rain", "0")
    assert [d.index(1000) for _ in range(3)] == [972, 371, 696]
    assert d.pick(["a", "b", "c", "d", "e"]) == "d"


def test_the_parts_of_a_key_are_separated() -> None:
    assert Dice("ab", "c").random() != Dice("a", "bc").random()


def test_a_take_s_plan_is_pinned() -> None:
    plan = compose._plan("take6", "synth pop")
    assert (plan.step, plan.minor, plan.root, plan.chords) == (5320, False, 8, (0, 3, 0, 4))
    assert hashlib.sha256(repr(plan).encode()).hexdigest()[:16] == "c62193e3ec298430"


def test_the_local_provider_s_seed_is_pinned() -> None:
    assert digest(["generate", {"prompt": "x", "n": 1}, "take0"]) == (
        "a06fd09e2082753c9b628fe1e5de7e51bc1ea5e983e3e262a7c852a0d6d4ed93")
    # Keys sorted: the order a recipe writes its inputs in does not matter.
    assert digest({"b": 1, "a": 2}) == digest({"a": 2, "b": 1})


def test_the_texts_made_from_the_stream_are_pinned() -> None:
    assert textgen.title_from("rain on a tin roof") == "Rain and Tin Roof"
    assert textgen.boost_style("indie folk") == (
        "indie folk, 85 BPM, D minor, fingerpicked acoustic guitar, upright bass, soft brushed "
        "drums, soaring female vocals, warm, intimate, nostalgic mood, polished modern mix")
    texts = textgen.lyrics("first light over the harbour", variants=2)
    assert hashlib.sha256(json.dumps(texts).encode()).hexdigest()[:16] == "48ddeaf289224c9b"


def test_the_studio_imports_nothing_of_sunoflow_around_it() -> None:
    """studio/__init__.py's rule: the standard library, imageio-ffmpeg and itself only."""
    for path in sorted(STUDIO.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                assert not name.startswith("runner") or name.startswith("runner.studio"), (
                    f"{path.name} imports {name}")
