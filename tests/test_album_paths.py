"""Files an album entry reads are checked before anything is paid where their values are
known before the run (runner.plan.unit._static_album_paths), not only at export."""

from __future__ import annotations

import os
import subprocess
import sys

from runner.fake import FakeServer

KEY = "sk-album-paths-Key-5"


def test_an_lrc_outside_the_steps_outputs_stops_the_run_before_it_pays(tmp_path):
    (tmp_path / "r.yaml").write_text("""\
version: 1
name: a
vars: {words: /etc/passwd}
provider: {kind: sunoapi, poll_interval: 0.05, max_poll_interval: 0.2}
steps:
  song:
    uses: generate
    with: {prompt: a song about rain}
outputs:
  - path: song.mp3
    from: "{{ steps.song.tracks[0].file }}"
    lrc: "{{ vars.words }}"
""")
    with FakeServer("sunoapi", api_key=KEY) as srv:
        env = {k: v for k, v in os.environ.items() if k != "SUNO_API_KEY"}
        env["SUNO_API_KEY"] = KEY
        done = subprocess.run(
            [sys.executable, "-m", "runner", "run", "r.yaml", "--base-url", srv.url,
             "--state-dir", "state", "--out", "out"], cwd=tmp_path, env=env,
            capture_output=True, text=True, timeout=90, check=False)
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("r.yaml:12:10: outputs[0].lrc: '/etc/passwd' is not a "
                                      "step's file output (it is known before the run)")
        assert [e for e in srv.log if e["method"] == "POST"] == []
