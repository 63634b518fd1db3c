"""`--cache`: stored files and the paid-work ledger shared through a real S3-compatible
server (moto's server mode on loopback, tests/s3server.py), driven by real `sunoflow`
processes against the sunoapi fake.

What is proved here: push/pull round trips byte for byte; two runners on one album pay
for every key exactly once; a runner killed with -9 is finished by the other; a claim
whose lease expired without a task id is "possibly submitted"; a fresh machine rebuilds
an old album from the cache alone, with no request to the music service; an unreachable
cache is a warning for files and a stop before paying for the ledger; the credentials
appear in no file and no message.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from runner.fake import FakeServer
from tests.s3server import ACCESS_KEY, SECRET_KEY, S3Server
from tests.waiting import until

KEY = "sk-cache-test-5d1e"
RECIPE = """\
version: 1
name: shared-ep
provider: {kind: sunoapi, poll_interval: 0.05, max_poll_interval: 0.2,
           rate_limit: {requests: 1000, per_seconds: 1}}
vars:
  titles: [Ash, Birch, Cedar]
steps:
  words:
    uses: lyrics
    for_each: "{{ vars.titles }}"
    with: {prompt: "a tree called {{ item }}"}
  song:
    uses: generate
    for_each: "{{ vars.titles }}"
    with: {title: "{{ item }}", style: folk, prompt: "{{ steps.words[index].text }}"}
  master:
    uses: convert
    for_each: "{{ steps.song }}"
    with: {audio: "{{ item.tracks[0] }}", format: wav}
  loud:
    uses: normalize
    for_each: "{{ steps.master }}"
    with: {audio: "{{ item.tracks[0] }}"}
outputs:
  - for_each: "{{ steps.song }}"
    path: "{{ index + 1 }} - {{ vars.titles[index] }}.mp3"
    from: "{{ item.file }}"
  - for_each: "{{ steps.loud }}"
    path: "{{ index + 1 }} - {{ vars.titles[index] }}.wav"
    from: "{{ item.file }}"
"""
PAID = ("/api/v1/lyrics", "/api/v1/generate", "/api/v1/wav/generate")
PAID_KEYS = 9  # 3 lyrics, 3 generate, 3 wav; normalize is local and free


@pytest.fixture
def s3():
    server = S3Server()
    try:
        yield server
    finally:
        server.stop()


def env_for(s3: S3Server, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("AWS_", "SUNOFLOW_"))}
    return {**base, "SUNO_API_KEY": KEY, **s3.env(), **extra}


def cmd(tmp: Path, url: str, s3: S3Server, *args: str, state: str = "state",
        out: str = "out", cache: str | None = None, **extra: str) -> list[str]:
    return [sys.executable, "-m", "runner", "run", str(tmp / "ep.yaml"), "--base-url", url,
            "--state-dir", str(tmp / state), "--out", str(tmp / out),
            "--cache", s3.url if cache is None else cache,
            "--report", str(tmp / f"{state}.json"), *args]


def run(tmp: Path, url: str, s3: S3Server, *args: str, state: str = "state",
        out: str = "out", cache: str | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd(tmp, url, s3, *args, state=state, out=out, cache=cache),
                          env=env or env_for(s3), text=True, capture_output=True, timeout=240)


def sunoflow(tmp: Path, s3: S3Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runner", *args], cwd=tmp, env=env_for(s3),
                          text=True, capture_output=True, timeout=240)


def paid(log: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Every created (paid) task's submit: its path and body."""
    return [(e["path"], json.dumps(e["json"], sort_keys=True)) for e in log
            if e["method"] == "POST" and e["path"] in PAID and e.get("task_id")]


def album(out: Path) -> dict[str, bytes]:
    """The album's files (the manifest names the folder it was written to: left out)."""
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())
            if p.is_file() and p.name != "manifest.json"}


def report(tmp: Path, state: str = "state") -> dict[str, Any]:
    return json.loads((tmp / f"{state}.json").read_text())


def journal_tasks(state: Path) -> dict[str, str]:
    """key -> the task id the journal recorded for it."""
    tasks: dict[str, str] = {}
    path = state / "journal.jsonl"
    for raw in path.read_bytes().splitlines() if path.exists() else []:
        try:
            ev = json.loads(raw)
        except ValueError:
            continue
        if ev.get("e") == "submitted":
            tasks[ev["key"]] = ev["task_id"]
    return tasks


def test_the_server_honours_create_only_writes(s3: S3Server, monkeypatch: pytest.MonkeyPatch):
    """The ledger stands on S3's If-None-Match: * (obstore's mode="create"): the second
    create of an object must fail. If this server ignored it, every other test here would
    prove nothing."""
    import obstore
    from obstore.exceptions import AlreadyExistsError

    from runner.store.cache import open_cache

    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    c = open_cache(s3.url)
    obstore.put(c._store, "probe", b"one", mode="create")
    with pytest.raises(AlreadyExistsError):
        obstore.put(c._store, "probe", b"two", mode="create")
    assert s3.read("probe") == b"one"


def test_push_then_pull_round_trips_every_file_byte_for_byte(tmp_path: Path, s3: S3Server):
    (tmp_path / "ep.yaml").write_text(RECIPE)
    with FakeServer("sunoapi", api_key=KEY) as srv:
        made = run(tmp_path, srv.url, s3, cache="")  # no cache: made here only
        assert made.returncode == 0, made.stderr
    assert s3.keys() == []
    blobs = {p.name: p.read_bytes() for p in (tmp_path / "state").rglob("blobs/**/*")
             if p.is_file()}

    pushed = sunoflow(tmp_path, s3, "push", "ep.yaml", "--state-dir", "state",
                      "--cache", s3.url)
    assert pushed.returncode == 0, pushed.stderr
    assert "push: " in pushed.stderr  # progress
    from runner.store import lock

    referenced = lock.referenced(lock.read(tmp_path / "ep.lock"))
    in_cache = {k.removeprefix("blobs/")[:64] for k in s3.keys("blobs/")}
    assert referenced
    assert referenced <= in_cache
    assert len(s3.keys("done/")) == 12  # every step instance's record
    # A second push costs one existence check per file and uploads nothing.
    again = sunoflow(tmp_path, s3, "push", "ep.yaml", "--state-dir", "state",
                     "--cache", s3.url)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("pushed 0 of ")

    pulled = sunoflow(tmp_path, s3, "pull", "ep.yaml", "--state-dir", "fresh",
                      "--cache", s3.url)
    assert pulled.returncode == 0, pulled.stderr
    assert "pull: " in pulled.stderr
    fresh = {p.name: p.read_bytes() for p in (tmp_path / "fresh").rglob("blobs/**/*")
             if p.is_file()}
    # Every file the lock references came back with the same bytes.
    assert {n: b for n, b in blobs.items() if n[:64] in referenced} == fresh
    for name, data in fresh.items():
        assert hashlib.sha256(data).hexdigest() == name[:64]


def test_two_runners_at_once_pay_for_every_key_exactly_once(tmp_path: Path, s3: S3Server):
    (tmp_path / "ep.yaml").write_text(RECIPE)
    # Tasks take 100 s of the fake's clock, which stands still until the test moves it: both
    # runners reach the first steps (one submits, the other finds its claim) before any
    # task can finish.
    config = {"latency": {"*": {"dist": "fixed", "value": 100}}, "latency_scale": 1.0}
    with FakeServer("sunoapi", api_key=KEY, **config) as srv:
        a = subprocess.Popen(cmd(tmp_path, srv.url, s3, state="a", out="out-a"),
                             env=env_for(s3), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
        b = subprocess.Popen(cmd(tmp_path, srv.url, s3, state="b", out="out-b"),
                             env=env_for(s3), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
        # Both journals hold a task id for all three lyrics: one runner's own, the other's
        # taken from the ledger.
        until(lambda: len(journal_tasks(tmp_path / "a")) >= 3
              and len(journal_tasks(tmp_path / "b")) >= 3, "both runners at the lyrics",
              timeout=120)
        srv.configure(latency_scale=0)
        srv.advance(10_000)
        err_a, err_b = a.communicate(timeout=240)[1], b.communicate(timeout=240)[1]
        assert a.returncode == 0, err_a
        assert b.returncode == 0, err_b
        log = srv.log
    created = paid(log)
    assert len(created) == PAID_KEYS, Counter(p for p, _ in created)
    assert Counter(created).most_common(1)[0][1] == 1
    # Where both journaled a task for a key (one submitted it, the other polled it by the
    # id the ledger gave), it is the same task; the rest one of them took as done.
    ta, tb = journal_tasks(tmp_path / "a"), journal_tasks(tmp_path / "b")
    assert all(ta[k] == tb[k] for k in ta.keys() & tb.keys())
    assert len(ta.keys() & tb.keys()) >= 3
    assert album(tmp_path / "out-a") == album(tmp_path / "out-b")
    # Together they submitted each key once: the counts of their reports add up.
    subs = report(tmp_path, "a")["counts"]["submissions"] + \
        report(tmp_path, "b")["counts"]["submissions"]
    assert subs == PAID_KEYS
    assert "another runner" in err_a + err_b


def test_kill_9_of_one_runner_and_the_other_finishes_the_album(tmp_path: Path, s3: S3Server):
    (tmp_path / "ep.yaml").write_text(RECIPE)
    config = {"latency": {"*": {"dist": "fixed", "value": 100}}, "latency_scale": 1.0}
    with FakeServer("sunoapi", api_key=KEY, **config) as srv:
        a = subprocess.Popen(cmd(tmp_path, srv.url, s3, state="a", out="out-a"),
                             env=env_for(s3), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        # A has submitted the lyrics and recorded their task ids in the ledger.
        until(lambda: len([k for k in s3.keys("ledger/") if "/task-" in k]) >= 3,
              "runner A's task ids in the ledger", timeout=120)
        a.send_signal(signal.SIGKILL)
        a.wait()
        ledger_tasks = {k.split("/")[1]: json.loads(s3.read(k))["task_id"]
                        for k in s3.keys("ledger/") if "/task-" in k}
        srv.configure(latency_scale=0)
        srv.advance(10_000)
        # B's lease is a second: any claim A held without a task id is taken over fast.
        b = run(tmp_path, srv.url, s3, state="b", out="out-b",
                env=env_for(s3, SUNOFLOW_CACHE_LEASE="1"))
        assert b.returncode == 0, b.stderr
        log = srv.log
    # B polled every task A had recorded (by its id) and paid for none of them again.
    b_tasks = journal_tasks(tmp_path / "b")
    for k, task in ledger_tasks.items():
        assert b_tasks[k] == task
    created = paid(log)
    rep = report(tmp_path, "b")
    # Each key once, except what A may have sent in the instant between its claim and
    # recording the task id, which B counts as possibly submitted.
    assert len(created) <= PAID_KEYS + rep["counts"]["possibly_submitted"]
    assert len({body for body in created}) == PAID_KEYS
    assert {"1 - Ash.mp3", "1 - Ash.wav", "2 - Birch.mp3", "2 - Birch.wav", "3 - Cedar.mp3",
            "3 - Cedar.wav"} <= set(album(tmp_path / "out-b"))


def _root_key(tmp: Path, url: str) -> str:
    """The key of words[0] (a step that needs no other), as sunoflow computes it."""
    from runner.plan import build as planner
    from runner.recipe import load as recipe
    from runner.store.journal import Store
    from runner.store.status import resolve

    r = recipe.load(str(tmp / "ep.yaml"), overrides={"base_url": url})
    rows = resolve(planner.build(r), Store(tmp / "nothing"))
    return str(rows["words[0]"]["key"])


def test_a_claim_whose_lease_expired_without_a_task_is_possibly_submitted(
        tmp_path: Path, s3: S3Server):
    (tmp_path / "ep.yaml").write_text(RECIPE)
    with FakeServer("sunoapi", api_key=KEY) as srv:
        k = _root_key(tmp_path, srv.url)
        # A runner claimed words[0] and died before it had a task id (no renewals since).
        s3.write(f"ledger/{k}/claim-0.json", json.dumps(
            {"v": 1, "runner": "dead-runner", "nonce": "x", "step": "words[0]",
             "at": 0, "lease": 1}).encode())
        lease = env_for(s3, SUNOFLOW_CACHE_LEASE="1")
        stopped = run(tmp_path, srv.url, s3, "--no-resubmit-uncertain", env=lease)
        assert stopped.returncode == 1
        assert "possibly submitted by another runner (dead-runner) whose claim expired " \
            "without a task id; not resubmitting" in stopped.stderr
        assert [p for p, body in paid(srv.log) if "tree called Ash" in body] == []

        resumed = run(tmp_path, srv.url, s3, env=lease)
        assert resumed.returncode == 0, resumed.stderr
        assert "waiting for its task id" in resumed.stderr
        assert "possibly submitted by another runner whose claim expired" in resumed.stderr
        assert [p for p, body in paid(srv.log) if "tree called Ash" in body] == \
            ["/api/v1/lyrics"]
    assert report(tmp_path)["counts"]["possibly_submitted"] == 1
    assert f"ledger/{k}/claim-1.json" in s3.keys("ledger/")


@pytest.mark.parametrize("frozen", [False, True])
@pytest.mark.parametrize("with_lock", [True, False], ids=["lock", "cache-alone"])
def test_a_fresh_machine_rebuilds_the_album_from_the_cache_without_the_service(
        tmp_path: Path, s3: S3Server, frozen: bool, with_lock: bool):
    (tmp_path / "ep.yaml").write_text(RECIPE)
    with FakeServer("sunoapi", api_key=KEY) as srv:
        made = run(tmp_path, srv.url, s3)
        assert made.returncode == 0, made.stderr
        first = album(tmp_path / "out")
        # A fresh checkout: the recipe and its lock only (or, a lock never committed, the
        # recipe alone: the cache's records are the ledger). The service's links have
        # expired, and any request to it would be counted.
        shutil.rmtree(tmp_path / "state")
        shutil.rmtree(tmp_path / "out")
        if not with_lock:
            (tmp_path / "ep.lock").unlink()
        srv.configure(faults=[{"match": {"method": "GET", "op": "download"},
                               "action": {"expired": True}}])
        before = len(srv.log)
        again = run(tmp_path, srv.url, s3, *(["--frozen"] if frozen else []))
        assert again.returncode == 0, again.stderr
        assert srv.log[before:] == []  # not one request: no submit, poll, link or balance
    assert album(tmp_path / "out") == first
    assert report(tmp_path)["counts"]["submissions"] == 0


def test_an_unreachable_cache_is_a_warning_for_files(tmp_path: Path, s3: S3Server):
    (tmp_path / "ep.yaml").write_text(RECIPE)
    with FakeServer("sunoapi", api_key=KEY) as srv:
        made = run(tmp_path, srv.url, s3)
        assert made.returncode == 0, made.stderr
        first = album(tmp_path / "out")
        # Files gone here, the cache gone too: the run says so once and restores the files
        # from the service (its recorded links), paying nothing.
        shutil.rmtree(tmp_path / "state" / "blobs")
        shutil.rmtree(tmp_path / "out")
        s3.stop()
        before = len(srv.log)
        again = run(tmp_path, srv.url, s3)
        assert again.returncode == 0, again.stderr
        assert paid(srv.log[before:]) == []
    assert again.stderr.count("going on without the cache for files") == 1
    assert album(tmp_path / "out") == first


def test_an_unreachable_cache_stops_the_ledger_before_paying(tmp_path: Path, s3: S3Server):
    (tmp_path / "ep.yaml").write_text(RECIPE)
    s3.stop()
    with FakeServer("sunoapi", api_key=KEY) as srv:
        res = run(tmp_path, srv.url, s3)
        log = srv.log
    assert res.returncode == 1
    assert paid(log) == []
    assert "without the ledger another runner's claim cannot be checked" in res.stderr
    assert f"cache {s3.url}: cannot" in res.stderr
    assert "Traceback" not in res.stderr


def test_credentials_appear_in_no_file_and_no_message(tmp_path: Path, s3: S3Server):
    (tmp_path / "ep.yaml").write_text(RECIPE)
    with FakeServer("sunoapi", api_key=KEY) as srv:
        made = run(tmp_path, srv.url, s3)
        assert made.returncode == 0, made.stderr
        pushed = sunoflow(tmp_path, s3, "push", "ep.yaml", "--state-dir", "state",
                          "--cache", s3.url)
        status = sunoflow(tmp_path, s3, "status", "ep.yaml", "--state-dir", "state",
                          "--cache", s3.url, "--base-url", srv.url)
        assert status.returncode == 0, status.stderr
        secrets = (SECRET_KEY.encode(), ACCESS_KEY.encode())
        objects = s3.keys()
        assert objects
        for name in objects:  # what the cache holds, read back
            assert not any(s in s3.read(name) for s in secrets), name
        s3.stop()
        down = run(tmp_path, srv.url, s3, "--force", "words")
        assert down.returncode == 1
    for proc in (made, pushed, status, down):
        for secret in secrets:
            assert secret.decode() not in proc.stdout + proc.stderr
    for path in tmp_path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(s in data for s in secrets), path


def test_status_counts_what_the_cache_holds(tmp_path: Path, s3: S3Server):
    (tmp_path / "ep.yaml").write_text(RECIPE)
    with FakeServer("sunoapi", api_key=KEY) as srv:
        made = run(tmp_path, srv.url, s3)
        assert made.returncode == 0, made.stderr
        shutil.rmtree(tmp_path / "state")
        (tmp_path / "state").mkdir()
        # Without the lock too (it would say done itself: the lock is the ledger).
        (tmp_path / "ep.lock").unlink()
        plain = sunoflow(tmp_path, s3, "status", "ep.yaml", "--state-dir", "state",
                         "--base-url", srv.url, "--cache", "")
        shared = sunoflow(tmp_path, s3, "status", "ep.yaml", "--state-dir", "state",
                          "--base-url", srv.url, "--cache", s3.url)
    assert "done" not in plain.stdout
    assert shared.returncode == 0, shared.stderr
    counts = dict(reversed(part.split(" ", 1))
                  for part in shared.stdout.splitlines()[-1].split(", "))
    assert set(counts) <= {"done", "in cache"}
    assert int(counts["in cache"]) >= 9
    assert not (tmp_path / "state" / "journal.jsonl").exists()  # status writes nothing


def test_a_folder_cache_shares_work_between_state_directories(tmp_path: Path, s3: S3Server):
    (tmp_path / "ep.yaml").write_text(RECIPE)
    folder = f"file://{tmp_path / 'shared'}"
    with FakeServer("sunoapi", api_key=KEY) as srv:
        one = run(tmp_path, srv.url, s3, state="one", out="out-one", cache=folder)
        assert one.returncode == 0, one.stderr
        before = len(srv.log)
        two = run(tmp_path, srv.url, s3, state="two", out="out-two", cache=folder)
        assert two.returncode == 0, two.stderr
        assert srv.log[before:] == []
    assert album(tmp_path / "out-one") == album(tmp_path / "out-two")


@pytest.mark.parametrize(("url", "env", "message"), [
    ("ftp://host/x", {}, "use s3://bucket/prefix"),
    ("s3://", {}, "no bucket named"),
    ("s3://b/p", {"AWS_ENDPOINT_URL": "http://cache.example.com"},
     "plain http is allowed only for a loopback endpoint"),
])
def test_a_bad_cache_is_a_usage_error(tmp_path: Path, s3: S3Server, url: str,
                                      env: dict[str, str], message: str):
    (tmp_path / "ep.yaml").write_text(RECIPE)
    res = subprocess.run([sys.executable, "-m", "runner", "run", "ep.yaml", "--cache", url,
                          "--base-url", "http://127.0.0.1:9"], cwd=tmp_path,
                         env={**env_for(s3), **env}, text=True, capture_output=True,
                         timeout=60)
    assert res.returncode == 2
    assert message in res.stderr


def test_a_recipe_may_not_name_a_folder_cache(tmp_path: Path, s3: S3Server):
    (tmp_path / "ep.yaml").write_text(RECIPE.replace(
        "rate_limit: {requests: 1000, per_seconds: 1}}",
        "rate_limit: {requests: 1000, per_seconds: 1}, cache: 'file:///etc'}"))
    res = subprocess.run([sys.executable, "-m", "runner", "validate", "ep.yaml"],
                         cwd=tmp_path, env=env_for(s3), text=True, capture_output=True,
                         timeout=60)
    assert res.returncode == 2
    assert res.stderr.startswith("ep.yaml:4:65: provider.cache: 'file:///etc' does not match")


def test_a_claim_of_this_state_directory_s_own_dead_run_is_taken_over_at_once(
        tmp_path: Path, s3: S3Server):
    """A run killed between its claim and its task id, run again on the same machine: its
    own earlier claim is known dead (one run per state directory), so it does not wait for
    the lease (60 s here): possibly submitted, as the journal alone would say."""
    (tmp_path / "ep.yaml").write_text(RECIPE)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "runner-id").write_text("0123456789abcdef\n")
    with FakeServer("sunoapi", api_key=KEY) as srv:
        k = _root_key(tmp_path, srv.url)
        s3.write(f"ledger/{k}/claim-0.json", json.dumps(
            {"v": 1, "runner": "0123456789abcdef", "nonce": "x", "step": "words[0]",
             "at": 0, "lease": 60}).encode())
        res = run(tmp_path, srv.url, s3)
        assert res.returncode == 0, res.stderr
    assert "waiting for its task id" not in res.stderr
    assert report(tmp_path)["counts"]["possibly_submitted"] == 1


def test_clean_with_a_cache_deletes_a_file_only_once_the_cache_holds_it(
        tmp_path: Path, s3: S3Server):
    (tmp_path / "ep.yaml").write_text(RECIPE)
    with FakeServer("sunoapi", api_key=KEY) as srv:
        made = run(tmp_path, srv.url, s3, cache="")
        assert made.returncode == 0, made.stderr
    # A file no step of the lock references any more (an edited step's old result).
    data = b"an old take, paid for once"
    sha = hashlib.sha256(data).hexdigest()
    old = tmp_path / "state" / "blobs" / "sha256" / sha[:2] / f"{sha}.mp3"
    old.parent.mkdir(parents=True, exist_ok=True)
    old.write_bytes(data)
    s3.stop()
    kept = sunoflow(tmp_path, s3, "clean", "ep.yaml", "--state-dir", "state",
                    "--cache", s3.url)
    assert kept.returncode == 0, kept.stderr
    assert old.exists()  # the cache could not take it: not deleted
    assert "the remaining files are kept" in kept.stdout + kept.stderr

    live = S3Server()
    try:
        cleaned = sunoflow(tmp_path, live, "clean", "ep.yaml", "--state-dir", "state",
                           "--cache", live.url)
        assert cleaned.returncode == 0, cleaned.stderr
        assert not old.exists()
        assert live.read(f"blobs/{sha}.mp3") == data
    finally:
        live.stop()


def test_force_pays_again_on_purpose_with_a_cache(tmp_path: Path, s3: S3Server):
    """--force (and reroll) asks for a fresh, paid result: the cache's record of the step
    must not stand in for it."""
    (tmp_path / "ep.yaml").write_text(RECIPE)
    with FakeServer("sunoapi", api_key=KEY) as srv:
        made = run(tmp_path, srv.url, s3)
        assert made.returncode == 0, made.stderr
        before = len(srv.log)
        forced = run(tmp_path, srv.url, s3, "--force", "words")
        assert forced.returncode == 0, forced.stderr
        again = [p for p, _ in paid(srv.log[before:])]
    assert again.count("/api/v1/lyrics") == 3


def test_review_with_a_cache_pulls_the_takes_it_plays(tmp_path: Path, s3: S3Server):
    (tmp_path / "ep.yaml").write_text(RECIPE)
    with FakeServer("sunoapi", api_key=KEY) as srv:
        made = run(tmp_path, srv.url, s3)
        assert made.returncode == 0, made.stderr
        shutil.rmtree(tmp_path / "state" / "blobs")
        before = len(srv.log)
        page = sunoflow(tmp_path, s3, "review", "ep.yaml", "--state-dir", "state",
                        "--base-url", srv.url, "--export", "page", "--cache", s3.url)
        assert page.returncode == 0, page.stderr
        assert srv.log[before:] == []
    assert "pull: " in page.stderr
    assert list((tmp_path / "state").rglob("blobs/**/*.mp3"))  # pulled back
    exported = {p.name for p in (tmp_path / "page").rglob("*") if p.is_file()}
    assert any(name.endswith(".mp3") for name in exported), sorted(exported)
