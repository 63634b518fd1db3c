"""runner.studio.textgen: deterministic lyrics, titles, styles, word timings and LRC."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.studio import textgen

REPO = Path(__file__).resolve().parents[1]
STAMP = re.compile(r"^\[(\d\d):(\d\d)\.(\d\d)\](.*)$")


def test_lyrics_are_structured_and_use_the_prompt() -> None:
    prompt = "A song about first light over the harbour"
    variants = textgen.lyrics(prompt)
    assert len(variants) == 2
    for variant in variants:
        assert set(variant) == {"title", "text"}
        lines = variant["text"].splitlines()
        tags = [ln for ln in lines if ln.startswith("[")]
        assert tags[:4] == ["[Verse 1]", "[Chorus]", "[Verse 2]", "[Chorus]"]
        sung = [ln for ln in lines if ln and not ln.startswith("[")]
        assert len(sung) >= 16
        assert all(re.search(r"first light|harbour", ln, re.I) for ln in sung)
        # The chorus is the same both times.
        text = variant["text"]
        choruses = re.findall(r"\[Chorus\]\n((?:.+\n?)+)", text)
        assert len(set(c.strip() for c in choruses)) == 1
    assert variants[0]["text"] != variants[1]["text"]


def test_lyrics_variants_and_fallback() -> None:
    assert len(textgen.lyrics("rain", variants=3)) == 3
    # A prompt with no content words still gives lyrics.
    assert textgen.lyrics("the of and")[0]["text"].startswith("[Verse 1]\n")
    with pytest.raises(ValueError, match="variants must be at least 1"):
        textgen.lyrics("rain", variants=0)


def test_lyrics_are_deterministic_across_processes() -> None:
    code = (
        "import json; from runner.studio import textgen; "
        "print(json.dumps([textgen.lyrics('neon rain in Tokyo'), "
        "textgen.boost_style('surf rock'), textgen.title_from('neon rain')]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env={"PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO)},
    ).stdout
    assert json.loads(out) == [
        textgen.lyrics("neon rain in Tokyo"),
        textgen.boost_style("surf rock"),
        textgen.title_from("neon rain"),
    ]


def test_title_from() -> None:
    assert textgen.title_from("A song about heat") == textgen.title_from("A song about heat")
    assert "Heat" in textgen.title_from("A song about heat")
    assert textgen.title_from("")  # never empty
    assert len(textgen.title_from("word " * 200 + "supercalifragilistic" * 10)) <= 60


def test_boost_style_expands_with_tempo_instruments_and_mood() -> None:
    text = textgen.boost_style("indie folk")
    assert text.startswith("indie folk, ")
    bpm = int(re.search(r"(\d+) BPM", text).group(1))  # type: ignore[union-attr]
    assert 84 <= bpm <= 104  # the folk range
    assert "acoustic guitar" in text
    assert "mood" in text
    assert textgen.boost_style("indie folk") == text
    assert textgen.boost_style("punk") != text


@given(st.text(max_size=3000))
@settings(max_examples=60, deadline=None)
def test_boost_style_stays_under_1000_characters(content: str) -> None:
    assert 0 < len(textgen.boost_style(content)) < 1000


def test_align_words_skips_tags_and_spans_the_audio() -> None:
    text = "[Verse 1]\nHello bright world\n\n[Chorus]\nSing it, don't stop"
    words = textgen.align_words(text, 10.0, start=2.0)
    assert [w["word"] for w in words] == ["Hello", "bright", "world", "Sing", "it", "don't", "stop"]
    assert words[0]["start"] == 2.0
    assert 9.0 < words[-1]["end"] <= 10.0


@given(st.text(max_size=400), st.floats(0, 50), st.floats(0.0001, 500))
@settings(max_examples=150, deadline=None)
def test_align_words_is_monotonic_and_in_range(text: str, start: float, length: float) -> None:
    duration = start + length
    words = textgen.align_words(text, duration, start=start)
    last_end = start
    for w in words:
        assert start <= w["start"] <= w["end"] <= duration
        assert w["start"] >= last_end
        last_end = w["end"]
        assert not str(w["word"]).startswith("[")


def test_align_words_rejects_an_empty_span() -> None:
    with pytest.raises(ValueError, match="need 0 <= start < duration"):
        textgen.align_words("la la", 5.0, start=5.0)


def test_lrc_has_one_line_per_lyric_line() -> None:
    text = textgen.lyrics("summer nights")[0]["text"]
    words = textgen.align_words(text, 30.0)
    lrc = textgen.lrc(words, text)
    sung = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("[")]
    rows = lrc.splitlines()
    assert len(rows) == len(sung)
    starts = []
    for row, line in zip(rows, sung, strict=True):
        m = STAMP.match(row)
        assert m is not None, row
        assert m.group(4) == line
        starts.append(int(m.group(1)) * 60 + int(m.group(2)) + int(m.group(3)) / 100)
    assert starts == sorted(starts)
    assert starts[0] == 0.0
    # Each line starts where its first word does.
    first = next(w for w in words if w["word"] == re.findall(r"[\w']+", sung[1])[0])
    assert starts[1] == pytest.approx(first["start"], abs=0.006)


def test_lrc_matches_a_services_own_word_split() -> None:
    text = "[Verse]\nHello there\nGood-bye now"
    words = [
        {"word": "Hel", "start": 1.0, "end": 1.2},
        {"word": "lo ", "start": 1.2, "end": 1.4},
        {"word": "there\n", "start": 1.5, "end": 2.0},
        {"word": "Good-bye ", "start": 65.25, "end": 66.0},
        {"word": "now", "start": 66.0, "end": 67.0},
    ]
    assert textgen.lrc(words, text) == "[00:01.00]Hello there\n[01:05.25]Good-bye now\n"


def test_lrc_of_nothing() -> None:
    assert textgen.lrc([], "[Intro]\n\n") == ""


# The one LRC writer without the lyrics' text: a service's aligned words alone (sunoapi).
# These rules were sunoapi's own writer's; its mistakes (below) are what the tests pin.


def test_lrc_from_words_alone_breaks_lines_where_the_words_do() -> None:
    words = [
        {"word": "[Verse]\nWaking ", "start": 1.36, "end": 1.79},
        {"word": "city", "start": 1.8, "end": 2.0},
        {"word": "lights\n", "start": 2.0, "end": 2.4},
        {"word": "\n", "start": 2.4, "end": 2.4},
        {"word": "[Chorus]\n", "start": 2.5, "end": 2.5},
        {"word": "Oh ", "start": 3.0, "end": 3.2},
        {"word": "oh", "start": 3.2, "end": 3.5},
    ]
    # A section tag is not a sung line; a word that ends its line with a break stays on it.
    assert textgen.lrc(words) == "[00:01.36]Waking city lights\n[00:03.00]Oh oh\n"


def test_lrc_from_words_alone_holds_at_most_eight_words_a_line() -> None:
    words = [{"word": f"w{i}", "start": float(i), "end": i + 0.5} for i in range(10)]
    assert textgen.lrc(words) == (
        "[00:00.00]w0 w1 w2 w3 w4 w5 w6 w7\n[00:08.00]w8 w9\n")


def test_lrc_times_round_before_they_split_into_minutes() -> None:
    words = [{"word": "Late", "start": 59.996, "end": 60.5},
             {"word": "\nLater", "start": 3599.999, "end": 3600.5}]
    assert textgen.lrc(words) == "[01:00.00]Late\n[60:00.00]Later\n"
    assert textgen.lrc(words, "Late\nLater") == "[01:00.00]Late\n[60:00.00]Later\n"
