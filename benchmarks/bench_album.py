"""A whole album against the sunoapi fake with a realistic latency model: sunoflow against
two plain clients, and resume after a finished run and after kill -9.

    python benchmarks/bench_album.py [--songs 10,100,1000] [--scale S] [--resume-songs 100]

The album: N songs, each lyrics -> generate -> extend -> WAV, a video of the first song and
the vocals separated from every 10th. The fake draws each task's latency (model seconds:
lyrics ~10 s, a song or an extension ~150 s, WAV ~30 s, video ~60 s, stems ~90 s; see
album_common.LATENCY) and runs the clock `scale` times faster. The rate limit (20 requests
per 10 s) and sunoflow's poll intervals are scaled by the same factor, so every figure in
model seconds is what the real service would show; ratios do not depend on the scale.

Three ways, each against a fresh fake with the same seed:

1. `sunoflow run --provider sunoapi --base-url URL` as a subprocess (peak RSS and CPU from
   wait4 on that process alone);
2. sequential: a song at a time, submit, sleep 30 s, poll (album_baselines.py);
3. a pool of 20 threads, a song's chain per worker, polling every 10 s.

The lower bound of a run is the larger of (a) the critical path under the latencies the
fake actually drew (per song: lyrics + generate + extend + the longest of its WAV, video,
stems; the max over songs) and (b) the rate limit: request k (0-based) of the 2 per task
that any client needs (a submit, a final poll) cannot leave before floor(k / 20) windows.
Downloads are not rate limited and not in the bound.

The baselines are slow by design (sequential takes ~7 model minutes a song), so they run on
at most 10 (sequential) and 100 (pool) songs, at a smaller scale when the scale is chosen
automatically, and larger albums are extrapolated linearly; the tables say so.
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
from album_common import (  # noqa: E402 (a script beside its helper)
    Analysis,
    Fake,
    Usage,
    analyse,
    recipe,
    run_child,
)

HERE = Path(__file__).resolve().parent
SEQ_MAX, POOL_MAX = 10, 100  # songs the baselines really run; more are extrapolated
CHAIN = 420.0  # model seconds of a song's chain with a plain client's polling, for scales


def auto_scale(n: int) -> float:
    """About a minute per sunoflow run; for big albums the rate limit sets the makespan
    (n * 4.1 tasks * 2 requests / 2 per s) and the fake's throughput (~300 requests/s on two
    cores, downloads included) sets a floor: keep the run under ~2.5 minutes."""
    if n <= 150:
        return 0.1
    return round(min(0.1, max(0.03, 150.0 / (4.11 * n))), 3)


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
    extrapolate: float = 1.0  # N / songs_run
    bound: float | None = None  # wall seconds at `scale`, when not the run's own
    note: str = ""

    @property
    def makespan_model(self) -> float:
        return self.usage.wall / self.scale * self.extrapolate

    @property
    def bound_model(self) -> float:
        return self.bound if self.bound is not None else self.a.bound / self.scale


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


def run_sunoflow(
    n: int, scale: float, root: Path, *, rerun: bool = False
) -> tuple[Row, str | None]:
    """One sunoflow run on a fresh fake; with `rerun`, the same command again on the same
    fake (the same base URL, so the same step keys): the resume of a finished run."""
    work = root / f"sunoflow-{n}"
    work.mkdir(parents=True)
    (work / "album.yaml").write_text(recipe(n, scale))
    with Fake(scale, work) as fake:
        usage = run_child(sunoflow_cmd(work, fake.url))
        tasks, log = save(work, fake)
        report = json.loads((work / "report.json").read_text())
        if usage.returncode != 0 or report["status"] != "succeeded":
            raise SystemExit(f"sunoflow failed on {n} songs: see {work}")
        line = None
        if rerun:
            again = run_child(sunoflow_cmd(work, fake.url))
            report = json.loads((work / "report.json").read_text())
            statuses = {s["status"] for s in report["steps"]}
            extra = fake.log()[len(log) :]
            line = (
                f"| finished run, all cached | {again.wall:.2f} s | {len(extra)} "
                f"({', '.join(sorted({e['op'] for e in extra})) or 'none'}) | "
                f"{sum(1 for e in extra if e['method'] == 'POST')} | "
                f"steps: {'/'.join(sorted(statuses))}, status {report['status']} | "
                f"{again.maxrss_mb:.0f} MB |"
            )
    return Row("sunoflow", n, scale, usage, analyse(tasks, log, scale)), line


def run_baseline(mode: str, k: int, scale: float, root: Path) -> Row:
    work = root / f"{mode}-{k}-{scale:g}"
    work.mkdir(parents=True)
    with Fake(scale, work) as fake, open(work / "result.json", "w") as out:
        usage = run_child(
            [
                sys.executable,
                str(HERE / "album_baselines.py"),
                mode,
                fake.url,
                str(k),
                str(scale),
                str(work / "files"),
            ],
            stdout=out,
        )
        tasks, log = save(work, fake)
    if usage.returncode != 0:
        raise SystemExit(f"the {mode} baseline failed: see {work}")
    name = "sequential, poll 30 s" if mode == "sequential" else "pool of 20, poll 10 s"
    return Row(name, k, scale, usage, analyse(tasks, log, scale))


def killed(n: int, scale: float, root: Path, makespan: float) -> str:
    """kill -9 a fresh run at half its makespan, then run the same command again."""
    with Fake(scale, root) as fake:
        work = root / f"killed-{n}"
        work.mkdir()
        (work / "album.yaml").write_text(recipe(n, scale))
        first = run_child(sunoflow_cmd(work, fake.url), kill_after=makespan / 2)
        restart_t = fake.now()
        usage = run_child(sunoflow_cmd(work, fake.url))
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
        "| run | scale | songs run | makespan (wall) | makespan (model) | vs lower bound | "
        "HTTP requests / task (min) | ratio to min | polls / task | rate-limited | "
        "peak RSS | CPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        a = r.a
        ext = f" (x{r.extrapolate:g}: extrapolated)" if r.extrapolate != 1 else ""
        ratio = r.makespan_model / r.bound_model
        out.append(
            f"| {r.name} | {r.scale:g} | {r.songs_run} | {r.usage.wall * r.extrapolate:.1f} s"
            f"{ext} | {r.makespan_model:,.0f} s | {ratio:.3f}{r.note} | "
            f"{a.requests / a.tasks:.2f} ({a.min_requests / a.tasks:.2f}) | "
            f"{a.requests / a.min_requests:.2f} | {a.per_op.get('poll', 0) / a.tasks:.2f} | "
            f"{a.rate_limited} | {r.usage.maxrss_mb:.0f} MB | {r.usage.cpu:.1f} s |"
        )
    a = rows[0].a
    s = rows[0].scale
    out += [
        "",
        f"Lower bound ({n} songs, sunoflow's draws): critical path "
        f"{a.critical_path / s:,.0f} model s, rate limit {a.rate_bound / s:,.0f} model s "
        f"({2 * a.tasks:,} requests for {a.tasks:,} tasks); the {a.binds} binds. "
        f"sunoflow: {a.api_requests:,} API requests "
        f"({a.rate_limited} answered 'rate limit exceeded'), {a.downloads:,} downloads "
        f"(minimum {a.min_downloads:,}), {a.submits:,} submits, {a.duplicates} duplicate "
        f"tasks; first to last request {a.span / s:,.0f} model s.",
        "",
    ]
    return out


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--songs", default="10,100,1000", help="album sizes (default 10,100,1000)")
    p.add_argument(
        "--scale",
        type=float,
        help="wall seconds per model second (default: per size, ~1 minute per sunoflow run)",
    )
    p.add_argument(
        "--resume-songs",
        type=int,
        default=100,
        help="album size of the resume figures (0: skip; default 100)",
    )
    p.add_argument("--no-baselines", action="store_true", help="sunoflow only")
    p.add_argument("--keep", metavar="DIR", help="keep every run's files and fake records")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.songs.split(",") if s.strip()]
    lines = [
        f"machine: {os.cpu_count()} cores, {platform.platform()}, "
        f"Python {platform.python_version()}",
        f"load before: {uptime()}",
        "",
    ]
    print("\n".join(lines), flush=True)
    root = Path(args.keep or tempfile.mkdtemp(prefix="bench-album-"))
    root.mkdir(parents=True, exist_ok=True)
    baselines: dict[tuple[str, int, float], Row] = {}
    resume_lines: list[str] = []
    t_start = time.perf_counter()
    for n in sizes:
        scale = args.scale or auto_scale(n)
        print(
            f"{n} songs: scale {scale:g} (wall seconds per model second)",
            file=sys.stderr,
            flush=True,
        )
        row, cached = run_sunoflow(n, scale, root, rerun=n == args.resume_songs)
        rows = [row]
        if not args.no_baselines:
            for mode, cap in (("pool", POOL_MAX), ("sequential", SEQ_MAX)):
                k = min(n, cap)
                bscale = baseline_scale(mode, k, args.scale, scale)
                key = (mode, k, bscale)
                if key not in baselines:
                    baselines[key] = run_baseline(mode, k, bscale, root)
                b = baselines[key]
                rows.append(
                    Row(
                        b.name,
                        k,
                        bscale,
                        b.usage,
                        b.a,
                        extrapolate=n / k,
                        bound=None if k == n else row.bound_model,
                        note="" if k == n else "*",
                    )
                )
        block = table(n, rows)
        if any(r.note for r in rows):
            block.append(
                "\\* extrapolated from the songs run, against the lower bound of "
                "sunoflow's run of the whole album."
            )
            block.append("")
        print("\n".join(block), flush=True)
        lines += block
        if cached is not None:
            resume_lines = [cached, killed(n, scale, root, row.usage.wall)]
    if resume_lines:
        block = [
            f"### Resume ({args.resume_songs} songs)",
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
