"""A run against a service where about 10% of requests fail transiently finishes with no
extra paid submission and intact files.

The fake has no rate limit, so the recipe lifts the client's (sunoapi's default, 20
requests per 10 s, made the run wait ~20 s for nothing; tests/test_pacing.py covers it)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from runner.fake import FakeServer

KEY = "sk-flaky-test-31"
SONGS = 8
RECIPE = f"""\
version: 1
name: flaky
provider: {{kind: sunoapi, poll_interval: 0.02, max_poll_interval: 0.1,
           rate_limit: {{requests: 1000, per_seconds: 1}}}}
vars:
  n: {list(range(SONGS))}
steps:
  words:
    uses: lyrics
    for_each: "{{{{ vars.n }}}}"
    with: {{prompt: "song {{{{ item }}}}"}}
  song:
    uses: generate
    for_each: "{{{{ steps.words }}}}"
    with: {{title: "T{{{{ index }}}}", style: house, prompt: "{{{{ item.text }}}}"}}
  wav:
    uses: convert
    for_each: "{{{{ steps.song }}}}"
    with: {{audio: "{{{{ item.tracks[0] }}}}"}}
outputs:
  - for_each: "{{{{ steps.wav }}}}"
    path: "{{{{ index }}}}.wav"
    from: "{{{{ item.file }}}}"
"""
SUBMITS = ("/api/v1/lyrics", "/api/v1/generate", "/api/v1/wav/generate")
FAULTS = [
    # Submits: the service's own "no task was created" answers, and a gateway error in
    # front of it that never reached it (no task either).
    {"match": {"method": "POST", "path": "/api/v1/*"}, "probability": 0.05,
     "action": {"envelope_code": 455}},
    {"match": {"method": "POST", "path": "/api/v1/*"}, "probability": 0.05,
     "action": {"http_status": 503}},
    # Polls: connection resets and gateway errors.
    {"match": {"method": "GET", "path": "/api/v1/*"}, "probability": 0.05,
     "action": {"reset": True}},
    {"match": {"method": "GET", "path": "/api/v1/*"}, "probability": 0.05,
     "action": {"http_status": 502}},
    # Downloads cut short.
    {"match": {"op": "download"}, "probability": 0.1, "action": {"truncate_download": True}},
]


def test_transient_failures_cost_nothing_extra(tmp_path: Path):
    (tmp_path / "r.yaml").write_text(RECIPE)
    env = {**os.environ, "SUNO_API_KEY": KEY}
    with FakeServer("sunoapi", api_key=KEY, faults=FAULTS, seed=11) as srv:
        r = subprocess.run([sys.executable, "-m", "runner", "run", "r.yaml", "--base-url",
                            srv.url, "--report", "report.json"], cwd=tmp_path, env=env,
                           text=True, capture_output=True, timeout=300)
        log = srv.log
    assert r.returncode == 0, r.stderr
    faults = [e for e in log if e.get("fault")]
    assert len(faults) >= 6  # the faults really fired (about 10% of ~170 requests)
    created = Counter(e["path"] for e in log if e["method"] == "POST" and e.get("task_id")
                      and e["path"] in SUBMITS)
    assert created == {p: SONGS for p in SUBMITS}  # exactly one paid task per instance
    for blob in (tmp_path / ".sunoflow" / "blobs").rglob("*"):
        if blob.is_file():
            assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name[:64]
    manifest = json.loads((tmp_path / "out" / "r" / "manifest.json").read_text())
    assert len(manifest["files"]) == SONGS
    for f in manifest["files"]:
        data = (tmp_path / "out" / "r" / f["path"]).read_bytes()
        assert data[:4] == b"RIFF"
        assert hashlib.sha256(data).hexdigest() == f["sha256"]
