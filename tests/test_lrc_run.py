"""The LRC of a sunoapi `timestamped_lyrics` step, written from the service's aligned words
alone, for a real run against the fake in each reading of what a word holds (the fake's
`aligned_words`: REFERENCE 2.10 does not say whether words carry line breaks and section
tags, nor where)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from fakecli import config_of

from runner.fake import FakeServer

KEY = "sk-lrc-run-Key-51c"
LYRICS = ("[Verse]\\nwaking up slow, the kettle sings\\nunder the open sky\\n\\n"
          "[Chorus]\\nrain, rain\\noh rain on me")
SUNG = ["waking up slow, the kettle sings", "under the open sky", "rain, rain",
        "oh rain on me"]

RECIPE = """\
version: 1
name: lrc
provider: {kind: sunoapi, base_url: "%s", poll_interval: 0.05, max_poll_interval: 0.2}
steps:
  song: {uses: generate, with: {title: Kettle, style: folk, prompt: "%s"}}
  words: {uses: timestamped_lyrics, with: {audio: "{{ steps.song.tracks[0] }}"}}
outputs:
  - path: kettle.lrc
    from: "{{ steps.words.lrc }}"
"""


def run_lrc(tmp_path: Path, aligned: str) -> tuple[list[tuple[float, str]], list[dict]]:
    with FakeServer("sunoapi", api_key=KEY, aligned_words=aligned) as srv:
        (tmp_path / "r.yaml").write_text(RECIPE % (srv.url, LYRICS))
        r = subprocess.run([sys.executable, "-m", "runner", "run", "r.yaml", "-q"],
                           cwd=tmp_path, env={**os.environ, "SUNO_API_KEY": KEY},
                           capture_output=True, text=True, timeout=180, check=False)
        assert r.returncode == 0, r.stderr
        answers = [e for e in srv.log if e["path"].endswith("get-timestamped-lyrics")]
        assert len(answers) == 1
    text = (tmp_path / "out" / "r" / "kettle.lrc").read_text(encoding="utf-8")
    rows = []
    for line in text.splitlines():
        m = re.fullmatch(r"\[(\d\d):(\d\d\.\d\d)\](.*)", line)
        assert m, line
        rows.append((int(m.group(1)) * 60 + float(m.group(2)), m.group(3)))
    return rows, answers


@pytest.mark.parametrize("aligned", ["leading", "trailing"])
def test_the_lrc_has_the_songs_lines_when_words_carry_the_breaks(tmp_path: Path, aligned):
    rows, _ = run_lrc(tmp_path, aligned)
    # One LRC line per sung line, as written (punctuation kept), no section tag, in
    # order of time: the breaks inside the words made the lines, whichever side of the
    # word they are on.
    assert [line for _, line in rows] == SUNG
    times = [t for t, _ in rows]
    assert times == sorted(times)
    assert len(set(times)) == len(times)


def test_the_lrc_of_bare_words_runs_eight_words_to_a_line(tmp_path: Path):
    # The plain reading (no breaks): the lines cannot be known, so they are cut at eight
    # words; the words are all there, in order, and no tag.
    rows, _ = run_lrc(tmp_path, "plain")
    words = " ".join(line for _, line in rows).split()
    assert words == re.findall(r"[\w']+", " ".join(SUNG))
    assert all(len(line.split()) <= 8 for _, line in rows)
    assert len(rows) == 2


def test_the_reading_is_a_flag_of_the_fake_and_a_config_field():

    from runner.fake.config import ConfigError, validate

    config = config_of("--aligned-words", "trailing")
    assert config["aligned_words"] == "trailing"
    with pytest.raises(ConfigError, match="aligned_words"):
        validate({"aligned_words": "both"})
