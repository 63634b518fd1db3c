"""Callbacks against polling on the same album: requests per task and makespan.

    python benchmarks/bench_callbacks.py [--songs 10] [--scale 0.05] [--loss 0.1]

The album and the fake are those of bench_album.py (album_common: lyrics -> generate ->
extend -> WAV per song, a video of the first, stems of every 10th; the service's latency
model and its rate limit, 20 requests per 10 s, both scaled to wall time). The fake runs as
its own process with callbacks on, and each run gets a fresh fake with the same seed:

1. polling: `sunoflow run` as it stands without --listen (the fake cannot reach the
   placeholder callback URL, so record-info says CALLBACK_EXCEPTION, which is a success);
2. callbacks: the same with `--listen 127.0.0.1:0`; the fake POSTs every stage to the
   listener;
3. callbacks with a share `--loss` of the deliveries dropped (0 skips it): what the
   fallback polls cost when callbacks go missing.

A song's `first` stage (three quarters of its run, in the fake) starts the steps that read
only its first track, reported by a callback or found by a poll (FIRST_SUCCESS), so every
run is held to the shorter critical path of a client that does so (album_common.analyse,
`first_at`).

Lower bounds: "vs lower bound" is DESIGN section 6's, max(critical path, rate limit),
where the rate limit counts the requests a task needs at least: a submit and a final
poll with polling, the submit alone with callbacks (the callback is not a request).
"vs rate-aware" is album_bound.rate_aware_bound, still a valid lower bound, which also
counts that a rate-limited client cannot start every song at 0; "clairvoyant" is the
makespan album_bound.clairvoyant reaches with the same draws knowing them all in advance
(achievable: no client can need more than that from perfect foresight); the last note
also gives album_bound.expected_first, sunoflow's order (longest expected remaining
first) executed perfectly on the same draws: what is left between it and the run is the
client's execution. `album_chains.py RUN_DIR SCALE` on a kept run splits each song's time.

Makespan is in the service's model seconds, computed as in bench_album.py (local time
before the first and after the last request counts unscaled). Requests per task count
every API request the fake saw plus downloads; the minimum is a submit and a final poll
per task plus the files, which a run with callbacks can beat: its final poll is the
callback, which does not touch the rate limit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from album_bound import clairvoyant, expected_first, rate_aware_bound  # noqa: E402
from album_common import Analysis, Fake, Usage, analyse, recipe  # noqa: E402
from bench_album import local_time, save, sunoflow_cmd, timed, uptime  # noqa: E402

from runner.fake.state import FIRST_AT  # noqa: E402


def run(n: int, scale: float, root: Path, name: str, callbacks: dict[str, Any],
        listen: bool) -> tuple[str, Usage, Analysis, float, dict[str, Any]]:
    work = root / name
    work.mkdir(parents=True)
    (work / "album.yaml").write_text(recipe(n, scale))
    extra = ["--listen", "127.0.0.1:0"] if listen else []
    with Fake(scale, work, {"callbacks": callbacks}) as fake:
        usage, t0, t1 = timed(fake, sunoflow_cmd(work, fake.url) + extra)
        tasks, log = save(work, fake)
        deliveries = fake.get("callbacks")
    # When each stage was POSTed, for album_chains.py (the callback's own delay).
    (work / "callbacks.json").write_text(json.dumps(deliveries))
    report = json.loads((work / "report.json").read_text())
    if usage.returncode != 0 or report["status"] != "succeeded":
        raise SystemExit(f"{name}: sunoflow failed; see {work}")
    report["deliveries"] = deliveries
    # The `first` stage starts what reads only the first track (a callback, or a poll that
    # finds it): the bound is the critical path of a client that does so (first_at).
    # The rate limit's minimum is one request per task with callbacks, two with polling.
    a = analyse(tasks, log, scale, first_at=FIRST_AT, polls=not listen)
    return name, usage, a, local_time(log, t0, t1), report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--songs", type=int, default=10)
    p.add_argument("--scale", type=float, default=0.05, help="wall seconds per model second")
    p.add_argument("--loss", type=float, default=0.1,
                   help="share of callbacks lost in the third run (0: skip it)")
    p.add_argument("--keep", metavar="DIR", help="keep every run's files and fake records")
    args = p.parse_args(argv)
    given = sys.argv[1:] if argv is None else argv
    print(f"machine: {os.cpu_count()} cores, {platform.platform()}, "
          f"Python {platform.python_version()}")
    print(f"load before: {uptime()}")
    print(f"command: python benchmarks/bench_callbacks.py {' '.join(given)}\n", flush=True)
    root = Path(args.keep or tempfile.mkdtemp(prefix="bench-callbacks-"))
    root.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    n, scale = args.songs, args.scale
    runs = [run(n, scale, root, "polling", {}, False),
            run(n, scale, root, "callbacks", {}, True)]
    if args.loss > 0:
        runs.append(run(n, scale, root, f"callbacks, {args.loss:.0%} lost",
                        {"loss": args.loss}, True))
    print(f"### {n} songs, scale {scale:g}\n")
    print("| run | tasks | makespan (model s) | vs lower bound | vs rate-aware | "
          "vs clairvoyant | API requests / task | "
          "polls / task | requests / task incl. downloads (min) | rate-limited | "
          "callbacks used / sent | wall |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    notes = []
    for name, usage, a, local, report in runs:
        makespan = max(0.0, usage.wall - local) / scale + local
        sent = len(report["deliveries"])
        used = report.get("callbacks", {}).get("used", 0)
        polls = a.per_task == 2
        first_at = None if polls else FIRST_AT
        tight = rate_aware_bound(a.chains, first_at, polls=polls)
        best = clairvoyant(a.chains, first_at, polls=polls)
        print(f"| {name} | {a.tasks} | {makespan:,.0f} | {makespan / (a.bound / scale):.3f} | "
              f"{makespan / tight:.3f} | {makespan / best:.3f} | "
              f"{a.api_requests / a.tasks:.2f} | {a.per_op.get('poll', 0) / a.tasks:.2f} | "
              f"{a.requests / a.tasks:.2f} ({a.min_requests / a.tasks:.2f}) | "
              f"{a.rate_limited} | {used} / {sent} | {usage.wall:.1f} s |")
        notes.append(
            f"\nLower bound of '{name}' (its draws): critical path "
            f"{a.critical_path / scale:,.0f} model s"
            + (" (steps start on a song's first track)" if not polls else "")
            + f", rate limit {a.rate_bound / scale:,.0f} model s ({a.per_task} request"
            + ("s" if a.per_task > 1 else "") + f" per task): the {a.binds} binds. "
            f"Rate-aware bound {tight:,.0f} model s; clairvoyant {best:,.0f} model s; "
            f"sunoflow's order without foresight, executed perfectly "
            f"{expected_first(a.chains, first_at, polls=polls):,.0f} model s.")
    print("".join(notes))
    print(f"load after: {uptime()}")
    print(f"total benchmark time: {time.perf_counter() - t_start:.0f} s; files in {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
