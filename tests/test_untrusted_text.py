"""Text from a recipe never reaches a shell or an ffmpeg filter graph unescaped, and files
from a recipe's folder cannot make ffmpeg open other files (issue 9).

A title, style, lyrics and author made of shell and filter metacharacters run through a
whole album on the local provider: the tags hold exactly that text, nothing the `$(...)`
asked for happened, and the video decodes cleanly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mutagen import id3
from mutagen.mp4 import MP4

from runner.studio import compose
from runner.studio.ffmpeg import ffmpeg_exe
from runner.studio.probe import probe

# Run with the working directory where `pwned` would appear, had a shell seen the text.
TEXT = "a'b\"c:d;e\nf -g $(touch pwned) `touch pwned` %{x} [x] , \\ : | & >x </dev/null"

RECIPE = """\
version: 1
name: nasty
provider: {{kind: local, take_seconds: 3}}
vars:
  text: {text}
steps:
  song:
    uses: generate
    with: {{title: "{{{{ vars.text }}}}", style: "{{{{ vars.text }}}}",
           prompt: "{{{{ vars.text }}}}"}}
  clip:
    uses: video
    with: {{audio: "{{{{ steps.song.tracks[0] }}}}", author: "-x {{{{ vars.text[:20] }}}}",
           domain_name: "{{{{ vars.text[:40] }}}}"}}
  cut:
    uses: trim
    with: {{audio: "{{{{ steps.song.tracks[0] }}}}", end: 1}}
outputs:
  - path: "{{{{ vars.text }}}}.mp3"
    from: "{{{{ steps.cut.file }}}}"
    tags: {{title: "{{{{ vars.text }}}}", artist: "{{{{ vars.text }}}}",
           album: "{{{{ vars.text }}}}", lyrics: "{{{{ steps.song.tracks[0].prompt }}}}"}}
  - path: teaser.mp4
    from: "{{{{ steps.clip.file }}}}"
"""


def test_metacharacters_reach_tags_exactly_and_nothing_else(tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    text = TEXT
    (tmp_path / "r.yaml").write_text(RECIPE.format(text=json.dumps(text)))
    r = subprocess.run([sys.executable, "-m", "runner", "run", "r.yaml", "--quiet"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    assert not pwned.exists()
    assert not (tmp_path / "x").exists()
    out = tmp_path / "out" / "r"
    [mp3] = [p for p in out.iterdir() if p.suffix == ".mp3"]
    assert mp3.parent == out  # the slashes and dots in the text made no folder
    tags = id3.ID3(mp3)
    assert str(tags["TIT2"]) == text
    assert str(tags["TPE1"]) == text
    assert str(tags["TALB"]) == text
    assert tags.getall("USLT")[0].text == text
    # The video decodes without a single error, and the text is only in its tags (the
    # song's title and the author, each on one line; the local studio draws nothing).
    teaser = out / "teaser.mp4"
    check = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(teaser), "-f", "null",
                            "-"], capture_output=True, text=True, timeout=120)
    assert (check.returncode, check.stderr) == (0, "")
    assert probe(teaser).duration > 2.5
    video_tags = MP4(teaser).tags
    assert video_tags["\xa9nam"] == [text.replace("\n", " ")]
    assert video_tags["\xa9ART"] == [("-x " + text[:20]).replace("\n", " ")]
    rest = teaser.read_bytes()
    for value in (*video_tags["\xa9nam"], *video_tags["\xa9ART"]):
        rest = rest.replace(value.encode(), b"")
    assert text.split("\n")[0].encode() not in rest


def test_a_playlist_in_the_folder_cannot_make_ffmpeg_read_other_files(tmp_path: Path) -> None:
    """ffmpeg follows the entries of an HLS playlist; one committed beside the recipe as
    `take.m3u8` would read any media file on the machine (or a URL) into the album."""
    outside = tmp_path / "elsewhere" / "secret.mp3"
    outside.parent.mkdir()
    compose.synth(outside, seed="secret", duration=2.0)
    recipe = tmp_path / "recipe"
    recipe.mkdir()
    (recipe / "take.m3u8").write_text(
        f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\n{outside}\n#EXT-X-ENDLIST\n")
    (recipe / "r.yaml").write_text(
        "version: 1\nname: hls\nprovider: local\nsteps:\n  cut:\n    uses: trim\n"
        "    with: {audio: take.m3u8, end: 1}\n")
    r = subprocess.run([sys.executable, "-m", "runner", "run", "r.yaml", "--report",
                        "report.json", "--quiet"], cwd=recipe, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 1
    [cut] = json.loads((recipe / "report.json").read_text())["steps"]
    assert cut["status"] == "failed"
    assert "Error opening input file file:" in cut["error"]
