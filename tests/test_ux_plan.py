"""What `plan`, `validate` and `--max-credits` tell a user (issue 20, "The plan and the
budget"): paid tasks in flight after an interruption cost nothing more, the two commands
count the same instances, plurals agree with their numbers, the columns line up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from waiting import until

from runner.fake import FakeServer

KEY = "sk-ux-plan-Key-5e1"

RECIPE = """\
version: 1
name: budget
provider: {kind: sunoapi, poll_interval: 0.05, max_poll_interval: 0.2,
           rate_limit: {requests: 1000, per_seconds: 1}}
vars:
  titles: [Rain, Snow]
steps:
  song:
    uses: generate
    for_each: "{{ vars.titles }}"
    with: {title: "{{ item }}", style: pop, prompt: "la la"}
  long:
    uses: extend
    for_each: "{{ steps.song }}"
    with: {audio: "{{ item.tracks[0] }}", continue_at: 20, prompt: outro}
"""


def cli(tmp: Path, *args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
    extra = ["--base-url", url] if url else []
    return subprocess.run([sys.executable, "-m", "runner", *args, *extra],
                          env={**os.environ, "SUNO_API_KEY": KEY}, capture_output=True,
                          text=True, timeout=120, check=False, cwd=tmp)


def test_paid_tasks_in_flight_cost_nothing_more_in_plan_and_budget(tmp_path):
    (tmp_path / "b.yaml").write_text(RECIPE)
    config = {"latency_scale": 1.0, "latency": {"*": {"dist": "fixed", "value": 60}}}
    with FakeServer("sunoapi", api_key=KEY, **config) as srv:
        journal = tmp_path / ".sunoflow" / "journal.jsonl"
        with subprocess.Popen([sys.executable, "-m", "runner", "run", "b.yaml", "--quiet",
                               "--base-url", srv.url], cwd=tmp_path,
                              env={**os.environ, "SUNO_API_KEY": KEY},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as proc:
            try:
                # Both songs' task ids journaled: they are paid and the next run polls them.
                until(lambda: journal.exists()
                      and journal.read_text().count('"e":"submitted"') == 2,
                      "both generate task ids to be journaled")
                proc.send_signal(signal.SIGINT)
                assert proc.wait(timeout=30) == 130
            finally:
                if proc.poll() is None:
                    proc.kill()
        plan = cli(tmp_path, "plan", "b.yaml", "--provider", "sunoapi", url=srv.url)
        assert plan.returncode == 0, plan.stderr
        lines = plan.stdout.splitlines()
        assert lines[1].split() == ["INSTANCE", "TYPE", "WAITS", "FOR", "STATUS", "PAID"]
        song0 = next(x for x in lines if x.startswith("song[0]"))
        assert "in flight" in song0
        assert song0.endswith("paid, in flight")
        long0 = next(x for x in lines if x.startswith("long[0]"))
        # The columns line up: each row's STATUS starts where the header's does.
        col = lines[1].index("STATUS")
        assert song0[col:].startswith("in flight")
        assert long0[col:].startswith("to run")
        assert lines[-1] == ("total: 2 paid submissions, 24 credits; 0 reused from the state "
                             "store; 2 paid tasks in flight (already paid: the run polls "
                             "them, at no further cost)")
        srv.configure(latency_scale=0)
        srv.advance(120)
        # 24 credits of new work fits a cap of 30, though the whole album is 48.
        run = cli(tmp_path, "run", "b.yaml", "--quiet", "--max-credits", "30", url=srv.url)
        assert run.returncode == 0, run.stderr
        created = [e for e in srv.log if e["method"] == "POST"
                   and e["path"] in ("/api/v1/generate", "/api/v1/generate/extend")]
    assert sorted(e["path"] for e in created) == ["/api/v1/generate"] * 2 + \
        ["/api/v1/generate/extend"] * 2


def test_the_cap_still_counts_what_is_not_paid_yet(tmp_path):
    (tmp_path / "b.yaml").write_text(RECIPE)
    run = cli(tmp_path, "run", "b.yaml", "--max-credits", "40", url="http://127.0.0.1:9")
    assert run.returncode == 1
    assert "--max-credits 40: this run is estimated at 48 credits" in run.stderr


def test_validate_and_plan_count_the_same_instances_with_right_plurals(tmp_path):
    (tmp_path / "lib.yaml").write_text("""\
version: 1
inputs:
  title: {type: string}
steps:
  first:
    uses: generate
    with: {title: "{{ inputs.title }}", style: folk, prompt: hi}
outputs:
  track: "{{ steps.first.tracks[0] }}"
""")
    (tmp_path / "one.yaml").write_text("""\
version: 1
steps:
  song:
    uses: ./lib.yaml
    with: {title: Sea}
""")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    v = cli(tmp_path, "validate", "one.yaml")
    assert v.returncode == 0, v.stderr
    assert v.stdout == "one.yaml: ok (1 step, 1 step instance, provider local)\n"
    p = cli(tmp_path, "plan", "one.yaml")
    assert p.stdout.splitlines()[0] == "one.yaml: 1 step instance on provider local"
    assert p.stdout.splitlines()[-1] == ("total: 0 paid submissions, 0 credits; 0 reused "
                                         "from the state store")


def test_counts_read_as_words_and_never_in_exponent_form():
    from runner.terminal import plural

    assert plural(1, "step instance") == "1 step instance"
    assert plural(2, "step instance") == "2 step instances"
    assert plural(1_000_000, "credit") == "1000000 credits"  # not "1e+06 credits"
    assert plural(2.5, "credit") == "2.5 credits"
