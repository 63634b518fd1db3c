"""A step is in the lock from the run that paid for it: a run that failed, or ran `--only`
steps, writes what it finished over the lock's other entries, so a fresh checkout (the state
directory gone) pays for none of it again, and nothing the lock recorded is lost."""

from __future__ import annotations

import shutil
from pathlib import Path

from runner.fake import FakeServer
from tests.test_lock_host import paid, sunoflow
from tests.test_remote_restore import KEY, RECIPE

WAV_FAILS = {"match": {"path": "/api/v1/wav/generate"}, "times": 1,
             "action": {"fail_task": "GENERATE_WAV_FAILED", "message": "no WAV today"}}


def fresh_checkout(tmp: Path) -> None:
    shutil.rmtree(tmp / ".sunoflow")


def test_a_failed_run_records_what_it_paid_for(tmp_path):
    (tmp_path / "r.yaml").write_text(RECIPE)
    with FakeServer("sunoapi", api_key=KEY, faults=[WAV_FAILS]) as srv:
        failed = sunoflow(tmp_path, "run", "r.yaml", "--base-url", srv.url)
        assert failed.returncode == 1, failed.stderr
        assert paid(srv) == ["/api/v1/generate", "/api/v1/wav/generate"]
        text = (tmp_path / "r.lock").read_text()
        assert "\n  song:\n" in text
        assert "\n  master:" not in text
        assert "lock written: r.lock (the steps that finished" in failed.stdout + failed.stderr
        fresh_checkout(tmp_path)
        again = sunoflow(tmp_path, "run", "r.yaml", "--base-url", srv.url)
        assert again.returncode == 0, again.stderr
    # The song came from the lock; only the WAV that failed is paid for again.
    assert paid(srv) == ["/api/v1/generate", "/api/v1/wav/generate", "/api/v1/wav/generate"]


def test_an_only_run_records_its_steps(tmp_path):
    (tmp_path / "r.yaml").write_text(RECIPE)
    with FakeServer("sunoapi", api_key=KEY) as srv:
        only = sunoflow(tmp_path, "run", "r.yaml", "--base-url", srv.url, "--only", "song")
        assert only.returncode == 0, only.stderr
        assert paid(srv) == ["/api/v1/generate"]
        fresh_checkout(tmp_path)
        whole = sunoflow(tmp_path, "run", "r.yaml", "--base-url", srv.url)
        assert whole.returncode == 0, whole.stderr
    assert paid(srv) == ["/api/v1/generate", "/api/v1/wav/generate"]


def test_a_partial_run_keeps_what_the_lock_recorded_of_the_steps_it_did_not_run(tmp_path):
    recipe = tmp_path / "r.yaml"
    two = RECIPE.replace("outputs:", """  other:
    uses: generate
    with: {title: Other, style: dub, prompt: "{{ vars.words }}"}
outputs:""").replace("steps:", "vars: {words: one}\nsteps:")
    recipe.write_text(two)
    with FakeServer("sunoapi", api_key=KEY) as srv:
        assert sunoflow(tmp_path, "run", "r.yaml", "--base-url", srv.url).returncode == 0
        assert len(paid(srv)) == 3
        # Only the other song, with new words: the song and its WAV are not run at all.
        only = sunoflow(tmp_path, "run", "r.yaml", "--base-url", srv.url, "--only", "other",
                        "--var", "words=two")
        assert only.returncode == 0, only.stderr
        assert len(paid(srv)) == 4
        # A fresh checkout: the song and its WAV still come from the lock, and the other
        # song with the new words too.
        fresh_checkout(tmp_path)
        back = sunoflow(tmp_path, "run", "r.yaml", "--base-url", srv.url, "--var",
                        "words=two")
        assert back.returncode == 0, back.stderr
    assert len(paid(srv)) == 4

