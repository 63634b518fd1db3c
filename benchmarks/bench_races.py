"""The races a user would run: sunoflow against a thread pool written as a user would,
on the same fake with the same settings, side by side.

    python benchmarks/bench_races.py [--scenes a,b,c] [--runs 5] [--scale 0.05]
    python benchmarks/bench_races.py --scenes b --pool-p b=17.5 --pool-retry
    python benchmarks/bench_races.py pool URL SONGS SCALE P OUTDIR FULL [STAGGER [retry]]

The pool: one thread per song, each around an httpx.Client of its own, running its song's
chain (lyrics > generate > extend > WAV; with FULL also the video of the first song and the
stems of every 10th, as in album_common.recipe) and polling its task every P model seconds
after each submit. Like an SDK, it raises on a "rate limit exceeded" answer: the song is
lost (the run stops at the first one, which is what the user sees). P is tuned the way a
careful user would: the smallest P of a ladder whose run gets no rate-limited answer; past
4 songs the songs also start STAGGER model s apart (the limit's pace for a poll and a
submit per song, 1 s), without which
no P avoids the limit at 16 songs (every song's lyrics poll and generate submit burst).
Measured: at 16 and 100 songs no rung avoids it even so, and the tuning stops with an
error; give P with --pool-p and let the pool retry a 430 (--pool-retry), as
docs/BENCHMARKS.md does.

Scenes (every run on a fresh fake with the same seed; the fake's own process):
  a. 4 independent songs, fixed latencies (lyrics 10, generate 150, extend 150, WAV 30
     model s), the real limit (which never binds here: 4 songs).
  b. 16 songs, ~15 % latency spread (lognormal sigma 0.15 around the same medians), the
     real limit of 20 requests / 10 s; against a host that refuses work on an unfinished
     task (fake `unfinished_work: refuse`) and against one that accepts it.
  c. the 100-song album of bench_album.py (album_common: video of the first song, stems of
     every 10th), polling and callbacks, held to album_bound.rate_aware_bound.

Makespan in model seconds as in bench_album.py (local time before the first and after the
last request counts unscaled). "x bound" is the makespan over max(critical path under the
latencies the fake drew, the rate limit on 2 requests per task) with full latencies; for
c also over the rate-aware bound. Requests per paid task count every API request the fake
saw (rate-limited ones included) plus downloads, over the tasks created; "API" alone in
brackets (what the rate limit counts, and what issue 21 compares). Runtime and
traffic are bounded: loopback only, each run killed after --kill-after wall seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from album_baselines import RATE_LIMITED, Client  # noqa: E402
from album_bound import rate_aware_bound  # noqa: E402
from album_common import (  # noqa: E402
    LATENCY,
    MAX_POLL_INTERVAL,
    POLL_INTERVAL,
    RATE_REQUESTS,
    RATE_SECONDS,
    Analysis,
    Fake,
    Usage,
    analyse,
    child_env,
    recipe,
)
from bench_album import local_time, save, sunoflow_cmd, uptime  # noqa: E402

from runner.fake.state import FIRST_AT  # noqa: E402

FIXED = {
    "lyrics": {"dist": "fixed", "value": 10.0},
    "generate": {"dist": "fixed", "value": 150.0},
    "extend": {"dist": "fixed", "value": 150.0},
    "wav": {"dist": "fixed", "value": 30.0},
}
SPREAD = {
    op: {"dist": "lognormal", "median": d["value"], "sigma": 0.15,
         "min": d["value"] * 0.5, "max": d["value"] * 2.0}
    for op, d in FIXED.items()
}
LADDER = (2.5, 5.0, 7.5, 10.0, 12.5, 15.0, 17.5, 20.0, 25.0, 30.0, 40.0, 50.0, 60.0, 80.0)


# A careful user at the real limit also starts the songs at the limit's pace: a song's step
# is two requests (the poll that finds its input done, its submit), so one song every
# 2 x 10 s / 20 requests (model s). Started together, or 0.5 s apart, 16 songs' lyrics
# polls and generate submits land in bursts over the limit, and no P of the ladder avoids
# a 430 (measured).
STAGGER = 2 * RATE_SECONDS / RATE_REQUESTS


RETRY = False  # --pool-retry


class RateLimited(Exception):
    pass


class SdkClient(Client):
    """album_baselines.Client as an SDK behaves: a rate-limited answer raises."""

    retry = False  # RETRY: a rate-limited answer is retried 2 model s later instead

    def api(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        env = self.http.request(method, path, **kw).json()
        while self.retry and env.get("code") in RATE_LIMITED:
            self.sleep(2.0)
            env = self.http.request(method, path, **kw).json()
        if env.get("code") in RATE_LIMITED:
            raise RateLimited(f"{method} {path}: {env.get('msg')}")
        if env.get("code") != 200:
            raise RuntimeError(f"{method} {path}: {env}")
        return dict(env["data"])


def pool_main(argv: list[str]) -> int:
    url, songs, scale, p = argv[0], int(argv[1]), float(argv[2]), float(argv[3])
    out, full = Path(argv[4]), argv[5] == "1"
    stagger = float(argv[6]) if len(argv) > 6 else 0.0
    retry = len(argv) > 7 and argv[7] == "retry"
    stop = threading.Event()
    lost: list[int] = []

    def one(i: int) -> None:
        time.sleep(i * stagger * scale)
        if stop.is_set():
            lost.append(i)
            return
        d = out / f"{i:04d}"
        d.mkdir(parents=True, exist_ok=True)
        c = SdkClient(url, scale, d, 1)
        c.retry = retry
        try:
            tid, take = c.head(i, p)
            tails = c.tails(i, tid, take) if full else c.tails(i, tid, take)[:1]
            pending = {c.submit(path, json.loads(body)): kind for kind, path, body in tails}
            while pending:
                c.sleep(p)
                for t, kind in list(pending.items()):
                    data = c.done(kind, t)
                    if data is not None:
                        c.fetch_tail(kind, data)
                        del pending[t]
        except RateLimited:
            lost.append(i)
            stop.set()  # the user's script dies with the exception
        finally:
            c.http.close()

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=songs) as pool:
        for f in [pool.submit(one, i) for i in range(songs)]:
            f.result()
    print(json.dumps({"wall": time.perf_counter() - t0, "lost": len(lost)}))
    return 0


def chain_recipe(n: int, scale: float) -> str:
    """album_common.recipe without the video and the stems: lyrics > generate > extend >
    WAV for each song."""
    text = recipe(n, scale)
    head, _, rest = text.partition("  teaser:\n")
    _, _, outputs = rest.partition("outputs:\n")
    outputs = outputs.split("  - path: teaser.mp4")[0]
    return head + "outputs:\n" + outputs


def bounded(fake: Fake, cmd: list[str], kill_after: float, stdout: Any) -> Any:
    """bench_album.timed with a timer that kills the run after `kill_after` wall seconds
    (run_child's own kill_after reaps the child before its wait4 can)."""
    t0 = fake.now()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=child_env(), stdout=stdout, stderr=subprocess.PIPE)
    timer = threading.Timer(kill_after, proc.kill)
    timer.start()
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, ru = os.wait4(proc.pid, 0)
    timer.cancel()
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, -9):
        sys.stderr.write(err.decode(errors="replace")[-2000:])
    return Usage(wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024, code), t0, fake.now()


@dataclass
class Result:
    name: str
    makespan: float  # model s
    bound: float  # model s, full latencies
    tight: float | None  # rate-aware bound, model s
    a: Analysis
    lost: int

    def row(self) -> str:
        a = self.a
        tight = f" / {self.makespan / self.tight:.3f}" if self.tight else ""
        return (f"{self.makespan:,.0f} | {self.makespan / self.bound:.3f}{tight} | "
                f"{a.requests / max(1, a.tasks):.2f} ({a.api_requests / max(1, a.tasks):.2f}"
                f" API) | {a.rate_limited} | {self.lost}")


def scene_fake(scene: str, extra: dict[str, Any]) -> dict[str, Any]:
    lat = {"a": FIXED, "b": SPREAD}.get(scene, LATENCY)
    return {"latency": lat, **extra}


def measure(name: str, scene: str, n: int, scale: float, root: Path, work_extra: dict[str, Any],
            cmd_of: Any, kill_after: float, full: bool, polls: bool = True,
            first_at: float | None = None) -> Result:
    work = root / f"{name.replace(' ', '_').replace('/', '')}-{time.monotonic_ns()}"
    work.mkdir(parents=True)
    with Fake(scale, work, scene_fake(scene, work_extra)) as fake:
        cmd, out = cmd_of(work, fake.url)
        with open(work / "stdout.txt", "w") as so:
            usage, t0, t1 = bounded(fake, cmd, kill_after, so)
        tasks, log = save(work, fake)
    lost = 0
    if out == "pool":
        try:
            lost = int(json.loads((work / "stdout.txt").read_text())["lost"])
        except (ValueError, KeyError):
            lost = n
    else:
        rep = work / "report.json"
        ok = rep.exists() and json.loads(rep.read_text()).get("status") == "succeeded"
        lost = 0 if ok and usage.returncode == 0 else n
    if usage.returncode == -9:
        lost = n
    local = local_time(log, t0, t1)
    makespan = max(0.0, usage.wall - local) / scale + local
    a = analyse(tasks, log, scale)
    tight = rate_aware_bound(a.chains, first_at, polls=polls) if scene == "c" else None
    if not polls:  # callbacks: the rate limit counts the submits only
        a = analyse(tasks, log, scale, polls=False)
    return Result(name, makespan, a.bound / scale, tight, a, lost)


def sunoflow(scene: str, n: int, scale: float, listen: bool = False,
             release: str | None = None) -> Any:
    def cmd_of(work: Path, url: str) -> tuple[list[str], str]:
        text = chain_recipe(n, scale) if scene != "c" else recipe(n, scale)
        if release is not None:
            text = text.replace("  kind: sunoapi\n",
                                f"  kind: sunoapi\n  release_on_first: {release}\n")
        (work / "album.yaml").write_text(text)
        extra = ["--listen", "127.0.0.1:0"] if listen else []
        return sunoflow_cmd(work, url) + extra, "sunoflow"
    return cmd_of


def pool(n: int, scale: float, p: float, full: bool) -> Any:
    def cmd_of(work: Path, url: str) -> tuple[list[str], str]:
        return ([sys.executable, str(HERE / "bench_races.py"), "pool", url, str(n), str(scale),
                 str(p), str(work / "files"), "1" if full else "0",
                 str(STAGGER if n > 4 else 0.0)] + (["retry"] if RETRY else []), "pool")
    return cmd_of


def tune(scene: str, n: int, scale: float, root: Path, extra: dict[str, Any], full: bool,
         start: float, kill_after: float) -> tuple[float, list[str]]:
    """The smallest P of the ladder (from `start`) whose run gets no rate-limited answer."""
    notes = []
    for p in [x for x in LADDER if x >= start]:
        r = measure(f"pool P={p:g}", scene, n, scale, root, extra, pool(n, scale, p, full),
                    kill_after, full)
        notes.append(f"P={p:g}: {r.a.rate_limited} rate-limited, {r.lost} songs lost")
        print(f"  tune {scene}: {notes[-1]}", flush=True)
        if r.a.rate_limited == 0 and r.lost == 0:
            return p, notes
    raise SystemExit(f"scene {scene}: no P of the ladder avoids the rate limit")


def summary(results: list[Result]) -> str:
    ms = [r.makespan for r in results]
    xs = [r.makespan / r.bound for r in results]
    tx = [r.makespan / r.tight for r in results if r.tight]
    req = [r.a.requests / max(1, r.a.tasks) for r in results]
    api = [r.a.api_requests / max(1, r.a.tasks) for r in results]
    tight = f" / {statistics.median(tx):.3f} [{min(tx):.3f}-{max(tx):.3f}]" if tx else ""
    return (f"{statistics.median(ms):,.0f} | {statistics.median(xs):.3f} "
            f"[{min(xs):.3f}-{max(xs):.3f}]{tight} | {statistics.median(req):.2f} "
            f"({statistics.median(api):.2f} API) | "
            f"{sum(r.a.rate_limited for r in results)} | {sum(r.lost for r in results)}")


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == ["pool"]:
        return pool_main(args_in[1:])
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--scenes", default="a,b,c")
    p.add_argument("--runs", type=int, default=5, help="runs per row of scenes a, b")
    p.add_argument("--runs-c", type=int, default=3, help="runs per row of scene c")
    p.add_argument("--scale", type=float, default=0.05, help="wall s per model s (a, b)")
    p.add_argument("--scale-c", type=float, default=0.04, help="wall s per model s (c)")
    p.add_argument("--pool-p", type=str, default="",
                   help="skip the tuning: 'a=2.5,b=17.5,c=50'")
    p.add_argument("--kill-after", type=float, default=300.0, help="wall s per run at most")
    p.add_argument("--keep", metavar="DIR")
    p.add_argument("--pool-retry", action="store_true",
                   help="the pool retries a rate-limited answer 2 model s later (with "
                   "--pool-p: measured, no P of the ladder avoids the limit at 16 or 100 "
                   "songs without it)")
    args = p.parse_args(args_in)
    print(f"machine: {os.cpu_count()} cores, {platform.platform()}, "
          f"Python {platform.python_version()}")
    print(f"load before: {uptime()}")
    print(f"command: python benchmarks/bench_races.py {' '.join(args_in)}", flush=True)
    print(f"sunoflow: poll {POLL_INTERVAL:g} s backing off to {MAX_POLL_INTERVAL:g} s; "
          f"limit {RATE_REQUESTS} / {RATE_SECONDS:g} s\n", flush=True)
    root = Path(args.keep or tempfile.mkdtemp(prefix="bench-races-"))
    root.mkdir(parents=True, exist_ok=True)
    given = dict(kv.split("=") for kv in args.pool_p.split(",") if kv)
    global RETRY
    RETRY = args.pool_retry
    rows: list[str] = []
    t_start = time.perf_counter()
    ka = args.kill_after
    for scene in args.scenes.split(","):
        n = {"a": 4, "b": 16, "c": 100}[scene]
        scale = args.scale_c if scene == "c" else args.scale
        runs = args.runs_c if scene == "c" else args.runs
        full = scene == "c"
        hosts = [("refuse", {"unfinished_work": "refuse"}), ("accept", {})] if scene == "b" \
            else [("accept", {})]
        for host, extra in hosts:
            if scene in given:
                pp, notes = float(given[scene]), ["given"]
            else:
                pp, notes = tune(scene, n, scale, root, extra, full,
                                 {"a": 2.5, "b": 2.5, "c": 25.0}[scene], ka)
            pools, flows, offs, cbs = [], [], [], []
            for k in range(runs):
                pools.append(measure(f"pool {scene}", scene, n, scale, root, extra,
                                     pool(n, scale, pp, full), ka, full))
                flows.append(measure(f"sunoflow {scene}", scene, n, scale, root, extra,
                                     sunoflow(scene, n, scale), ka, full))
                if scene == "a":
                    offs.append(measure("sunoflow off", scene, n, scale, root, extra,
                                        sunoflow(scene, n, scale, release="false"), ka, full))
                if scene == "c":
                    cbs.append(measure("sunoflow cb", scene, n, scale, root,
                                       {**extra, "callbacks": {}},
                                       sunoflow(scene, n, scale, listen=True), ka, full,
                                       polls=False, first_at=FIRST_AT))
                print(f"  {scene}/{host} run {k + 1}: pool {pools[-1].row()} ; "
                      f"sunoflow {flows[-1].row()}"
                      + (f" ; off {offs[-1].row()}" if offs else "")
                      + (f" ; callbacks {cbs[-1].row()}" if cbs else ""), flush=True)
            label = f"{scene}: {n} songs, host {host}s early work"
            rows.append(f"| {label} | pool, P={pp:g} | {summary(pools)} |")
            rows.append(f"| {label} | sunoflow | {summary(flows)} |")
            if offs:
                rows.append(f"| {label} | sunoflow, release_on_first: false | "
                            f"{summary(offs)} |")
            if cbs:
                rows.append(f"| {label} | sunoflow --listen (callbacks) | {summary(cbs)} |")
            rows.append(f"| {label} | (pool tuning) | {'; '.join(notes)} | | | | |")
    print("\n| scene | client | makespan (model s, median) | x bound (median [range])"
          "; c: / x rate-aware | requests / paid task | rate-limited (all runs) | "
          "songs lost (all runs) |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"\nload after: {uptime()}")
    print(f"total benchmark time: {time.perf_counter() - t_start:.0f} s; files in {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
