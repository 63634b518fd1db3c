"""The lock records paid work at one provider (its kind and base URL); keys name them, so at
another provider none of it is known. A run there would pay for the whole album again: it
refuses (exit 2, nothing sent) unless --new-host says to, and a run at another provider (a
free local preview included) never replaces the lock that is that work's ledger."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from runner.fake import FakeServer
from tests.test_remote_restore import KEY, RECIPE, SUBMITS

# A song and its WAV (a paid convert on sunoapi): two paid steps, 13 credits.


def sunoflow(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SUNO_API_KEY": KEY}
    return subprocess.run([sys.executable, "-m", "runner", *args], cwd=tmp, env=env,
                          text=True, capture_output=True, timeout=120)


def paid(srv: FakeServer, since: int = 0) -> list[str]:
    return [e["path"] for e in srv.log[since:]
            if e["method"] == "POST" and e["path"] in SUBMITS]


def test_a_run_at_another_host_refuses_to_pay_again_for_what_the_lock_records(tmp_path):
    (tmp_path / "r.yaml").write_text(RECIPE)
    with FakeServer("sunoapi", api_key=KEY) as a, FakeServer("sunoapi", api_key=KEY) as b:
        first = sunoflow(tmp_path, "run", "r.yaml", "--base-url", a.url)
        assert first.returncode == 0, first.stderr
        assert sorted(paid(a)) == sorted(SUBMITS)
        locked = (tmp_path / "r.lock").read_bytes()
        # The --base-url forgotten, or another host's: the lock's work is not known there.
        moved = sunoflow(tmp_path, "run", "r.yaml", "--base-url", b.url)
        assert moved.returncode == 2, moved.stderr
        assert b.log == []  # not even the balance was asked
        assert (
            f"r.lock records 2 steps paid for at sunoapi at {a.url} (song, master); this "
            f"run's provider is sunoapi at {b.url}, where none of them is recorded, so they "
            "would be paid for again (about 13 credits): nothing was submitted. To build "
            f"from what the lock records, run with --base-url {a.url}") in moved.stderr
        assert "add --new-host" in moved.stderr
        assert "Traceback" not in moved.stderr
        # plan and status say it before anything is run.
        plan = sunoflow(tmp_path, "plan", "r.yaml", "--base-url", b.url)
        assert plan.returncode == 0, plan.stderr
        assert (f"note: r.lock records 2 of these as paid for at sunoapi at {a.url}; at "
                f"sunoapi at {b.url} they would be paid for again (about 13 credits): `run` "
                "refuses that without --new-host") in plan.stdout
        status = sunoflow(tmp_path, "status", "r.yaml", "--base-url", b.url)
        assert f"note: r.lock records 2 of these as paid for at sunoapi at {a.url}" \
            in status.stdout
        # With the lock's host the album is there, and nothing is paid.
        back = sunoflow(tmp_path, "run", "r.yaml", "--base-url", a.url)
        assert back.returncode == 0, back.stderr
        assert sorted(paid(a)) == sorted(SUBMITS)
        assert "note: r.lock" not in sunoflow(tmp_path, "plan", "r.yaml", "--base-url",
                                              a.url).stdout
    assert (tmp_path / "r.lock").read_bytes() == locked


def test_new_host_pays_once_at_the_new_host_and_moves_the_lock(tmp_path):
    (tmp_path / "r.yaml").write_text(RECIPE)
    with FakeServer("sunoapi", api_key=KEY) as a, FakeServer("sunoapi", api_key=KEY) as b:
        assert sunoflow(tmp_path, "run", "r.yaml", "--base-url", a.url).returncode == 0
        moved = sunoflow(tmp_path, "run", "r.yaml", "--base-url", b.url, "--new-host")
        assert moved.returncode == 0, moved.stderr
        assert sorted(paid(b)) == sorted(SUBMITS)  # each step once, at the new host
        assert f'base_url: "{b.url}"' in (tmp_path / "r.lock").read_text()
        # The lock is the new host's ledger now: a fresh checkout there pays nothing.
        shutil.rmtree(tmp_path / ".sunoflow")
        again = sunoflow(tmp_path, "run", "r.yaml", "--base-url", b.url)
        assert again.returncode == 0, again.stderr
        assert sorted(paid(b)) == sorted(SUBMITS)
        assert sorted(paid(a)) == sorted(SUBMITS)  # and nothing more at the old one


def test_a_local_preview_keeps_the_paid_lock_and_a_fresh_checkout_pays_nothing(tmp_path):
    (tmp_path / "r.yaml").write_text(RECIPE)
    with FakeServer("sunoapi", api_key=KEY) as a:
        assert sunoflow(tmp_path, "run", "r.yaml", "--base-url", a.url).returncode == 0
        locked = (tmp_path / "r.lock").read_bytes()
        # A free preview of the same recipe (as a pull request's CI would run it).
        local = sunoflow(tmp_path, "run", "r.yaml", "--provider", "local")
        assert local.returncode == 0, local.stderr
        assert (tmp_path / "r.lock").read_bytes() == locked
        assert (f"lock not written: r.lock records 2 steps paid for at sunoapi at {a.url}, "
                "which this run's lock (the local provider) would replace (run with "
                "--new-host to replace it)") in local.stdout + local.stderr
        # The committed lock is still the ledger: a fresh checkout pays nothing.
        shutil.rmtree(tmp_path / ".sunoflow")
        before = len(a.log)
        fresh = sunoflow(tmp_path, "run", "r.yaml", "--base-url", a.url)
        assert fresh.returncode == 0, fresh.stderr
        assert paid(a, before) == []


def test_a_reroll_at_another_host_refuses_too_and_takes_new_host(tmp_path):
    (tmp_path / "r.yaml").write_text(RECIPE)
    with FakeServer("sunoapi", api_key=KEY) as a, FakeServer("sunoapi", api_key=KEY) as b:
        assert sunoflow(tmp_path, "run", "r.yaml", "--base-url", a.url).returncode == 0
        # A reroll of the WAV at b would also pay again for the song the lock records
        # (and reroll has its own --new-host: the message names it).
        moved = sunoflow(tmp_path, "reroll", "r.yaml", "master", "--base-url", b.url, "--yes")
        assert moved.returncode == 2, moved.stderr
        assert f"r.lock records 2 steps paid for at sunoapi at {a.url} (song, master)" \
            in moved.stderr
        assert b.log == []
        again = sunoflow(tmp_path, "reroll", "r.yaml", "master", "--base-url", b.url, "--yes",
                         "--new-host")
        assert again.returncode == 0, again.stderr
        assert sorted(paid(b)) == sorted(SUBMITS)
        assert sorted(paid(a)) == sorted(SUBMITS)
