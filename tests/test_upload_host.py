"""Uploads carry the key: they go only to the upload host of the API host that runs the
recipe (runner.recipe.load.upload_host), never to another operator's."""

from __future__ import annotations

import os
import subprocess
import sys
import wave
from pathlib import Path

import pytest

from runner.fake import FakeServer
from runner.recipe.load import provider_from

KEY = "sk-upload-host-Key-77"


@pytest.mark.parametrize(("block", "override", "upload"), [
    ({"kind": "sunoapi"}, None, "https://sunoapiorg.redpandaai.co"),
    ({"kind": "sunoapi", "base_url": "https://api.sunoapi.org/"}, None,
     "https://sunoapiorg.redpandaai.co"),
    ({"kind": "sunoapi", "base_url": "https://api.api.box"}, None, None),
    ({"kind": "sunoapi", "base_url": "https://suno.internal.example"}, None, None),
    ({"kind": "sunoapi", "base_url": "http://127.0.0.1:8080"}, None, "http://127.0.0.1:8080"),
    ({"kind": "sunoapi", "base_url": "https://api.api.box",
      "upload_base_url": "https://up.api.box"}, None, "https://up.api.box"),
    ({"kind": "sunoapi", "upload_base_url": "https://up.example"}, "https://api.api.box", None),
    ({"kind": "sunoapi"}, "https://api.api.box", None),
    ({"kind": "sunoapi", "base_url": "https://api.api.box",
      "upload_base_url": "https://up.api.box"}, "https://api.api.box", "https://up.api.box"),
    ({"kind": "local"}, None, None),
])
def test_the_upload_host_is_derived_only_where_it_is_known(block, override, upload):
    prov = provider_from(block, {"base_url": override} if override else {})
    assert prov.upload_base_url == upload


def silence(path: Path, seconds: float = 3.0) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * int(8000 * seconds))


def test_a_base_url_on_the_command_line_never_sends_the_key_to_the_recipes_upload_host(
        tmp_path):
    """The recipe names one operator's API and upload hosts; --base-url runs it against
    another: the old upload host must receive nothing (it would get the file and the
    key), and the upload goes to the new host's own."""
    silence(tmp_path / "demo.wav")
    with FakeServer("sunoapi", api_key=KEY) as theirs, \
            FakeServer("sunoapi", api_key=KEY) as their_uploads, \
            FakeServer("sunoapi", api_key=KEY) as mine:
        (tmp_path / "r.yaml").write_text(f"""\
version: 1
name: up
provider: {{kind: sunoapi, base_url: "{theirs.url}", upload_base_url: "{their_uploads.url}",
           poll_interval: 0.05, max_poll_interval: 0.2}}
steps:
  remix:
    uses: upload_cover
    with: {{audio: demo.wav, prompt: a song about rain}}
""")
        env = {k: v for k, v in os.environ.items() if k != "SUNO_API_KEY"}
        env["SUNO_API_KEY"] = KEY
        done = subprocess.run(
            [sys.executable, "-m", "runner", "run", str(tmp_path / "r.yaml"),
             "--base-url", mine.url, "--state-dir", str(tmp_path / "state"),
             "--out", str(tmp_path / "out"), "--quiet"],
            env=env, capture_output=True, text=True, timeout=90, check=False)
        assert done.returncode == 0, done.stderr
        assert their_uploads.log == []
        assert theirs.log == []
        paths = [e["path"] for e in mine.log if e["method"] == "POST"]
        assert paths == ["/api/file-stream-upload", "/api/v1/generate/upload-cover"]
