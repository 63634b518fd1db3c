"""Files on disk (issue 20): each recipe its own default album folder, a manifest that
describes the folder it is in, and an M3U playlist with #EXTINF lines that is written when
the songs are in a subfolder too."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

RECIPE = """\
version: 1
name: {name}
provider: {{kind: local, take_seconds: 4}}
vars:
  titles: [Sea, Sky]
steps:
  song:
    uses: generate
    for_each: "{{{{ vars.titles }}}}"
    take: 0
    with: {{title: "{{{{ item }}}}", style: folk, prompt: la}}
  named:
    uses: tag
    for_each: "{{{{ steps.song }}}}"
    with: {{audio: "{{{{ item.tracks[0] }}}}", title: "{{{{ vars.titles[index] }}}}",
           artist: The Band}}
outputs:
  - for_each: "{{{{ steps.named }}}}"
    path: "{folder}{{{{ vars.titles[index] }}}}.mp3"
    from: "{{{{ item.file }}}}"
  - for_each: "{{{{ steps.song }}}}"
    path: "{folder}takes/{{{{ index }}}}.mp3"
    from: "{{{{ item.tracks[0].file }}}}"
"""


def run(cwd: Path, name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runner", "run", f"{name}.yaml", "-q"],
                          cwd=cwd, capture_output=True, text=True, timeout=300, check=False)


def test_two_recipes_in_one_folder_keep_their_own_albums(tmp_path):
    (tmp_path / "a.yaml").write_text(RECIPE.format(name="side-a", folder=""))
    (tmp_path / "b.yaml").write_text(RECIPE.format(name="side-b", folder="album/"))
    assert run(tmp_path, "a").returncode == 0
    assert run(tmp_path, "b").returncode == 0
    a, b = tmp_path / "out" / "a", tmp_path / "out" / "b"
    manifest_a = json.loads((a / "manifest.json").read_text())
    manifest_b = json.loads((b / "manifest.json").read_text())
    assert [f["path"] for f in manifest_a["files"]] == ["Sea.mp3", "Sky.mp3", "takes/0.mp3",
                                                        "takes/1.mp3"]
    assert [f["path"] for f in manifest_b["files"]] == [
        "album/Sea.mp3", "album/Sky.mp3", "album/takes/0.mp3", "album/takes/1.mp3"]
    assert manifest_a["recipe"] == "a.yaml"
    assert sorted(p.name for p in a.iterdir()) == ["Sea.mp3", "Sky.mp3", "manifest.json",
                                                    "side-a.m3u", "takes"]
    # The playlists: the songs of the shallowest folder with audio, named and timed.
    for folder, playlist, prefix in ((a, "side-a.m3u", ""), (b, "side-b.m3u", "album/")):
        lines = (folder / playlist).read_text().splitlines()
        assert lines[0] == "#EXTM3U"
        assert re.fullmatch(r"#EXTINF:\d+,The Band - Sea", lines[1]), lines
        assert lines[2] == f"{prefix}Sea.mp3"
        assert re.fullmatch(r"#EXTINF:\d+,The Band - Sky", lines[3]), lines
        assert lines[4:] == [f"{prefix}Sky.mp3"]


def test_the_manifest_lists_what_else_is_in_its_folder(tmp_path):
    (tmp_path / "a.yaml").write_text(RECIPE.format(name="side-a", folder=""))
    (tmp_path / "out" / "a").mkdir(parents=True)
    (tmp_path / "out" / "a" / "notes.txt").write_text("mine\n")
    assert run(tmp_path, "a").returncode == 0
    manifest = json.loads((tmp_path / "out" / "a" / "manifest.json").read_text())
    assert manifest["format"] == 2
    assert manifest["other_files"] == ["notes.txt"]
