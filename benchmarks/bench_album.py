"""A whole album against the sunoapi fake with a realistic latency model: sunoflow against
two plain clients, and resume after a finished run and after kill -9.

    python benchmarks/bench_album.py [--songs 10,100,1000] [--scale S] [--resume-songs 100]
                                     [--sunoflow 'default;1000'] [--baseline-songs 10,100]

The album: N songs, each lyrics -> generate -> extend -> WAV, a video of the first song and
the vocals separated from every 10th. The fake draws each task's latency (model seconds:
lyrics ~10 s, a song or an extension ~150 s, WAV ~30 s, video ~60 s, stems ~90 s; see
album_common.LATENCY) and runs its clock `scale` wall seconds per model second. The rate
limit (20 requests per 10 s) and sunoflow's poll intervals are scaled by the same factor.

Three ways, each against a fresh fake with the same seed:

1. `sunoflow run --provider sunoapi --base-url URL` as a subprocess (peak RSS and CPU from
   wait4 on that process alone);
2. sequential: a song at a time, submit, sleep 30 s, poll (album_baselines.py);
3. a pool of 20 threads, a song's chain per worker, polling every 10 s.

Makespan in model seconds: the time from the process's start to its first request and from
its last request to its exit is local work (startup, the lock, copying the album out) that
takes the same wall time at any scale, so it counts unscaled; the rest is divided by the
scale. That is what the run would take against the real service.

The lower bound of a run is the larger of (a) the critical path under the latencies the
fake actually drew (per song: lyrics + generate + extend + the longest of its WAV, video,
stems; the max over songs) and (b) the rate limit: request k (0-based) of the 2 per task
that any client needs (a submit, a final poll) cannot leave before floor(k / 20) windows.
Downloads are not rate limited and not in the bound. The oracle (album_oracle.py) is what
a client that knew every latency in advance could reach with the same draws.

The baselines are slow by design (sequential takes ~7 model minutes a song), so they run on
at most 10 (sequential) and 100 (pool) songs, at a smaller scale when the scale is chosen
automatically; larger albums are extrapolated linearly, and the tables say so.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from album_common import (  # noqa: E402 (scripts beside their helpers)
    RATE_REQUESTS,
    RATE_SECONDS,
    Analysis,
    Fake,
    Usage,
    analyse,
    critical_path,
    recipe,
    run_child,
)
from album_oracle import oracle  # noqa: E402

from runner.fake.state import FIRST_AT  # noqa: E402

HERE = Path(__file__).resolve().parent
SEQ_MAX, POOL_MAX = 10, 100  # songs the baselines really run; more are extrapolated
CHAIN = 420.0  # model seconds of a song's chain with a plain client's polling, for scales


def auto_scale(n: int) -> float:
    """About a minute per sunoflow run at 10 and 100 songs. At 1000 songs the rate limit
    alone is 4,100 model seconds; 0.02 keeps the run near 4 minutes as sunoflow stands
    (its default --concurrency makes it ~3x the bound) and the fake under its ~300 requests
    per second on two cores."""
    if n <= 10:
        return 0.1
    if n <= 100:
        return 0.06
    return round(max(0.01, min(0.06, 80.0 / (4.1 * n))), 3)


def baseline_scale(mode: str, k: int, scale: float | None, main: float) -> float:
    if scale is not None:
        return scale
    if mode == "sequential":  # ~45 s for 10 songs; polls every 30 s, overhead ~1 %
        return min(main, 0.01)
    rounds = math.ceil(k / 20)
    return min(main, round(45.0 / (rounds * CHAIN), 3))


@dataclass
class Row:
    name: str
    songs_run: int
    scale: float
    usage: Usage
    a: Analysis
    local: float  # wall seconds before the first and after the last request
    extrapolate: float = 1.0  # N / songs_run
    bound: float | None = None  # model seconds, when not the run's own
    early: float | None = None  # the early-release bound, model seconds, when not the run's own
    oracle_ref: float | None = None  # model seconds, when not the run's own
    note: str = ""

    @property
    def makespan_model(self) -> float:
        service = max(0.0, self.usage.wall - self.local)
        return (service / self.scale + self.local) * self.extrapolate

    @property
    def bound_model(self) -> float:
        return self.bound if self.bound is not None else self.a.bound / self.scale

    @property
    def early_model(self) -> float:
        """The bound of a client that starts a song's next steps at its first stage, as
        sunoflow does (album_common.analyse, `first_at`): the honest one for sunoflow."""
        if self.early is not None:
            return self.early
        return max(critical_path(self.a.chains, FIRST_AT), self.a.rate_bound / self.scale)

    @property
    def oracle_model(self) -> float:
        if self.oracle_ref is not None:
            return self.oracle_ref
        return oracle(self.a.chains, RATE_REQUESTS, RATE_SECONDS)


def sunoflow_cmd(work: Path, url: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "runner",
        "run",
        str(work / "album.yaml"),
        "--provider",
        "sunoapi",
        "--base-url",
        url,
        "--out",
        str(work / "out"),
        "--state-dir",
        str(work / "state"),
        "--report",
        str(work / "report.json"),
        "--quiet",
    ]


def save(work: Path, fake: Fake) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    tasks, log = fake.tasks(), fake.log()
    (work / "fake.json").write_text(json.dumps({"tasks": tasks, "log": log}))
    return tasks, log


def timed(fake: Fake, cmd: list[str], **kw: Any) -> tuple[Usage, float, float]:
    """Run `cmd`; (its usage, its start and end on the fake's clock)."""
    t0 = fake.now()
    usage = run_child(cmd, **kw)
    return usage, t0, fake.now()


def local_time(log: list[dict[str, Any]], t0: float, t1: float) -> float:
    mine = [e["t"] for e in log if t0 <= e["t"] <= t1]
    return (min(mine) - t0) + (t1 - max(mine)) if mine else t1 - t0


def run_sunoflow(
    n: int, scale: float, root: Path, *, concurrency: str, rerun: bool, profile: bool = False
) -> tuple[Row, str | None]:
    """One sunoflow run on a fresh fake; with `rerun`, the same command again on the same
    fake (the same base URL, so the same step keys): the resume of a finished run."""
    label = "sunoflow" + (f" --concurrency {concurrency}" if concurrency != "default" else "")
    work = root / f"sunoflow-{n}-{concurrency}"
    work.mkdir(parents=True)
    (work / "album.yaml").write_text(recipe(n, scale))
    extra = [] if concurrency == "default" else ["--concurrency", concurrency]
    with Fake(scale, work) as fake:
        cmd = sunoflow_cmd(work, fake.url) + extra
        if profile:  # the same process under a sampling profiler (sample_cpu.py)
            cmd[1:3] = [str(HERE / "sample_cpu.py"), str(work / "cpu-samples.json"), "-m",
                        "runner"]
        usage, t0, t1 = timed(fake, cmd)
        tasks, log = save(work, fake)
        report = json.loads((work / "report.json").read_text())
        if usage.returncode != 0 or report["status"] != "succeeded":
            raise SystemExit(f"sunoflow failed on {n} songs: see {work}")
        line = None
        if rerun:
            again = run_child(sunoflow_cmd(work, fake.url) + extra)
            report = json.loads((work / "report.json").read_text())
            statuses = {s["status"] for s in report["steps"]}
            new = fake.log()[len(log) :]
            line = (
                f"| finished run, all cached | {again.wall:.2f} s | {len(new)} "
                f"({', '.join(sorted({e['op'] for e in new})) or 'none'}) | "
                f"{sum(1 for e in new if e['method'] == 'POST')} | "
                f"steps: {'/'.join(sorted(statuses))}, status {report['status']} | "
                f"{again.maxrss_mb:.0f} MB |"
            )
    row = Row(label, n, scale, usage, analyse(tasks, log, scale), local_time(log, t0, t1))
    return row, line


def run_baseline(mode: str, k: int, scale: float, root: Path) -> Row:
    work = root / f"{mode}-{k}-{scale:g}"
    work.mkdir(parents=True)
    cmd = [sys.executable, str(HERE / "album_baselines.py"), mode]
    with Fake(scale, work) as fake, open(work / "result.json", "w") as out:
        usage, t0, t1 = timed(
            fake, [*cmd, fake.url, str(k), str(scale), str(work / "files")], stdout=out
        )
        tasks, log = save(work, fake)
    if usage.returncode != 0:
        raise SystemExit(f"the {mode} baseline failed: see {work}")
    name = "sequential, poll 30 s" if mode == "sequential" else "pool of 20, poll 10 s"
    return Row(name, k, scale, usage, analyse(tasks, log, scale), local_time(log, t0, t1))


def killed(
    n: int, scale: float, root: Path, makespan: float, concurrency: str
) -> str:
    """kill -9 a fresh run at half its makespan, then run the same command again."""
    extra = [] if concurrency == "default" else ["--concurrency", concurrency]
    with Fake(scale, root) as fake:
        work = root / f"killed-{n}"
        work.mkdir()
        (work / "album.yaml").write_text(recipe(n, scale))
        cmd = sunoflow_cmd(work, fake.url) + extra
        first = run_child(cmd, kill_after=makespan / 2)
        restart_t = fake.now()
        usage = run_child(cmd)
        tasks, log = save(work, fake)
    report = json.loads((work / "report.json").read_text())
    after = analyse(tasks, log, scale, since=restart_t)
    whole = analyse(tasks, log, scale)
    finished = sum(1 for s in report["steps"] if s["status"] == "succeeded")
    return (
        f"| killed (-9 at {first.wall:.1f} s, exit {first.returncode}), then resumed | "
        f"{usage.wall:.2f} s (total {first.wall + usage.wall:.1f} s vs {makespan:.1f} s "
        f"uninterrupted) | {after.requests} ({after.api_requests} API of which "
        f"{after.per_op.get('poll', 0)} polls, {after.downloads} downloads) | "
        f"{after.submits} | {whole.duplicates} duplicate tasks of {whole.tasks}; "
        f"{report['counts']['possibly_submitted']} possibly submitted; {finished} steps "
        f"finished by the restart; status {report['status']} | {usage.maxrss_mb:.0f} MB |"
    )


def table(n: int, rows: list[Row]) -> list[str]:
    out = [
        f"### {n} songs",
        "",
        "| run | scale | songs run | wall | local | makespan (model s) | vs lower bound | "
        "vs early-release bound | vs oracle | HTTP requests / task (min) | vs min | "
        "polls / task | rate-limited | peak RSS | CPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        a = r.a
        ext = f" (x{r.extrapolate:g})" if r.extrapolate != 1 else ""
        out.append(
            f"| {r.name} | {r.scale:g} | {r.songs_run} | {r.usage.wall:.1f} s{ext} | "
            f"{r.local:.1f} s | {r.makespan_model:,.0f}{r.note} | "
            f"{r.makespan_model / r.bound_model:.3f} | "
            f"{r.makespan_model / r.early_model:.3f} | "
            f"{r.makespan_model / r.oracle_model:.3f} | "
            f"{a.requests / a.tasks:.2f} ({a.min_requests / a.tasks:.2f}) | "
            f"{a.requests / a.min_requests:.2f} | {a.per_op.get('poll', 0) / a.tasks:.2f} | "
            f"{a.rate_limited} | {r.usage.maxrss_mb:.0f} MB | {r.usage.cpu:.1f} s |"
        )
    r = rows[0]
    a, s = r.a, r.scale
    out += [
        "",
        f"Lower bound ({n} songs, the draws of the first run): critical path "
        f"{a.critical_path / s:,.0f} model s, rate limit {a.rate_bound / s:,.0f} model s "
        f"({2 * a.tasks:,} requests for {a.tasks:,} tasks): the {a.binds} binds; "
        f"early-release bound (next steps start at the first stage, {FIRST_AT:g} of a "
        f"song) {r.early_model:,.0f} model s; "
        f"oracle {r.oracle_model:,.0f} model s. {r.name}: {a.api_requests:,} API requests "
        f"({a.rate_limited} answered 'rate limit exceeded'), {a.downloads:,} downloads "
        f"(minimum {a.min_downloads:,}), {a.submits:,} submits, {a.duplicates} duplicate "
        f"tasks; first to last request {a.span / s:,.0f} model s.",
        "",
    ]
    return out


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--songs", default="10,100,1000", help="album sizes (default 10,100,1000)")
    p.add_argument(
        "--scale",
        type=float,
        help="wall seconds per model second "
        "(default: per size: 0.1, 0.06, 0.02 for 10, 100, 1000 songs)",
    )
    p.add_argument(
        "--resume-songs",
        type=int,
        default=100,
        help="album size of the resume figures (0: skip; default 100)",
    )
    p.add_argument(
        "--sunoflow",
        default="default",
        metavar="VARIANTS",
        help="sunoflow rows, ';'-separated --concurrency values ('default': not given)",
    )
    p.add_argument(
        "--baseline-songs",
        default=f"{SEQ_MAX},{POOL_MAX}",
        metavar="SEQ,POOL",
        help=f"the most songs each baseline really runs; larger albums are extrapolated "
        f"(default {SEQ_MAX},{POOL_MAX})",
    )
    p.add_argument("--no-baselines", action="store_true", help="sunoflow only")
    p.add_argument("--keep", metavar="DIR", help="keep every run's files and fake records")
    p.add_argument("--profile", action="store_true",
                   help="sample each first sunoflow run's CPU (benchmarks/sample_cpu.py): "
                   "cpu-samples.json in its folder (use with --keep)")
    args = p.parse_args(argv)
    given = sys.argv[1:] if argv is None else argv
    sizes = [int(s) for s in args.songs.split(",") if s.strip()]
    variants = [v.strip() for v in args.sunoflow.split(";") if v.strip()]
    seq_max, pool_max = (int(x) for x in args.baseline_songs.split(","))
    head = [
        f"machine: {os.cpu_count()} cores, {platform.platform()}, "
        f"Python {platform.python_version()}",
        f"load before: {uptime()}",
        f"command: python benchmarks/bench_album.py {' '.join(given)}",
        "",
    ]
    print("\n".join(head), flush=True)
    root = Path(args.keep or tempfile.mkdtemp(prefix="bench-album-"))
    root.mkdir(parents=True, exist_ok=True)
    baselines: dict[tuple[str, int, float], Row] = {}
    resume_lines: list[str] = []
    rows_name = ""
    t_start = time.perf_counter()
    for n in sizes:
        scale = args.scale or auto_scale(n)
        print(f"{n} songs: scale {scale:g} wall seconds per model second", flush=True)
        rows: list[Row] = []
        for i, conc in enumerate(variants):
            rerun = i == 0 and n == args.resume_songs
            row, cached = run_sunoflow(
                n, scale, root, concurrency=conc, rerun=rerun, profile=args.profile
            )
            rows.append(row)
            if cached is not None:
                rows_name = row.name
                resume_lines = [cached, killed(n, scale, root, row.usage.wall, conc)]
        first = rows[0]
        for mode, cap in (("pool", pool_max), ("sequential", seq_max)):
            if args.no_baselines:
                break
            k = min(n, cap)
            bscale = baseline_scale(mode, k, args.scale, scale)
            if (mode, k, bscale) not in baselines:
                baselines[(mode, k, bscale)] = run_baseline(mode, k, bscale, root)
            b = baselines[(mode, k, bscale)]
            rows.append(
                Row(
                    b.name,
                    k,
                    bscale,
                    b.usage,
                    b.a,
                    b.local,
                    extrapolate=n / k,
                    bound=None if k == n else first.bound_model,
                    early=None if k == n else first.early_model,
                    oracle_ref=None if k == n else first.oracle_model,
                    note="" if k == n else "*",
                )
            )
        block = table(n, rows)
        if any(r.note for r in rows):
            block += [
                "\\* extrapolated linearly from the songs run, and compared with the lower bound "
                "and the oracle of the first run (the whole album).",
                "",
            ]
        print("\n".join(block), flush=True)
    if resume_lines:
        block = [
            f"### Resume ({args.resume_songs} songs, {rows_name})",
            "",
            "| case | time to completion | requests | submits | check | peak RSS |",
            "|---|---|---|---|---|---|",
            *resume_lines,
            "",
        ]
        print("\n".join(block))
    tail = [
        f"load after: {uptime()}",
        f"total benchmark time: {time.perf_counter() - t_start:.0f} s; files in {root}",
    ]
    print("\n".join(tail))
    return 0


if __name__ == "__main__":
    sys.exit(main())
