"""Memory of `sunoflow run` against the number of step instances (DESIGN section 6: "memory
flat in the number of steps").

    python benchmarks/bench_memory.py                      # both recipes, default sizes, ~3 min
    python benchmarks/bench_memory.py --kind local --sizes 1000 5000 10000
    python benchmarks/bench_memory.py --kind remote --sizes 100 1000 --rss-only
    python benchmarks/bench_memory.py --kind remote --sizes 20 80 --breakdown --top 30

Two recipes, each run as `python -m runner run ... --report` in a fresh process:

- **local**: two chained fan-outs of `boost_style` (pure text, no ffmpeg) on the local
  provider, the recipe of bench_engine.py; a size N is N instances (N/2 of each step).
- **remote**: the album of the album benchmark (lyrics -> generate -> extend -> WAV per
  song, a video, stems of every 10th song) against the sunoapi fake in its own process:
  every task takes 1 s (so a stage's tasks are all in flight together, as in a real album),
  1-second clips, no rate limit to speak of. A size N is N songs (about 5 N instances, of
  which 4.1 N remote, and 9 N downloaded files).

Per size, in fresh state directories:

1. plain: peak RSS of the process (ru_maxrss from wait4, so the fake is not counted), and
   its RSS when the engine starts (imports, plan) and returns; then the same command again,
   which finds everything done in the journal (resume);
2. heap: the same under tracemalloc from the engine's start (1 frame; tracing imports and
   planning too would make a run 10-50 times slower): the peak while the engine runs, what
   is held when it returns (the run's working set: every step's outputs, kept for the
   templates, the lock and the report), and the peak after it (lock, export, report);
3. with --breakdown, the same with 6 frames and snapshots near each peak and when the
   engine returns (several times slower: use small sizes).

The per-instance figures are the slopes between the smallest and the largest size. The
breakdown lists the lines whose allocations grow the most from the smallest to the largest
size, per instance: an allocation is charged to the innermost runner/ frame of its
traceback, or to its own line when no runner/ frame is among the frames kept. Cyclic
garbage not yet collected counts as held.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import album_common as album  # noqa: E402
from bench_engine import recipe as engine_recipe  # noqa: E402

RUNNER = str(HERE.parent / "runner")


def local_recipe(n: int) -> str:
    """n instances: bench_engine's two chained fan-outs of n / 2 each."""
    return engine_recipe(max(1, n // 2))


LATENCY = 1.0  # wall seconds every task of the fake takes: a stage's tasks are in flight together


def remote_recipe(n: int) -> str:
    """The album benchmark's album, with `continue_at` at half the first take (the fake's
    clips here are 1 second long, so `duration - 10` would be refused), polls from 0.2 s to
    1.2 s, and no rate limit to speak of (the fake has none): the run's time is the fake's
    latency and sunoflow's own work, not waiting for a window."""
    text = album.recipe(n, 0.02)
    for old, new in ((f"item.tracks[0].duration - {album.EXTEND_BACK}",
                      "item.tracks[0].duration / 2"),
                     ("rate_limit: {requests: 20, per_seconds: 0.2}",
                      "rate_limit: {requests: 1000, per_seconds: 1}")):
        assert old in text, old
        text = text.replace(old, new)
    return text


# --- the child: one run, in-process ---------------------------------------------------

MODES = {"plain": 0, "heap": 1, "breakdown": 6}  # tracemalloc frames; 0: not traced


def _rss_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process, in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def child(args: list[str], out: Path, mode: str) -> int:
    """`sunoflow run ARGS` in this process; write the figures to `out`. Traced modes start
    tracemalloc when the engine starts (tracing imports and planning too would make a run
    10-50 times slower); `breakdown` also keeps snapshots: one near the heap's peak, one the
    moment the engine returns."""
    import tracemalloc

    from runner.cli.main import main
    from runner.engine import scheduler as engine_mod

    frames = MODES[mode]
    held: dict[str, Any] = {}
    original = engine_mod.Engine.run
    stop = threading.Event()

    def near_peak() -> None:
        """A new snapshot whenever the heap has grown by a quarter since the last one
        (snapshots are slow), so the last one is within a fifth of the peak; one series
        while the engine runs, another after it."""
        size, phase = 0, "engine"
        while not stop.wait(0.05):
            if held.get("phase", "engine") != phase:
                size, phase = 0, held["phase"]
            if tracemalloc.get_traced_memory()[0] > size * 1.25 + 2**20:
                held[f"{phase}_snapshot"] = tracemalloc.take_snapshot()
                size = tracemalloc.get_traced_memory()[0]

    async def run(self: Any) -> str:
        held["rss_start"] = _rss_mb("VmRSS")
        held["instances"] = sum(1 for i in self.selected if i.kind == "step")
        if frames:
            tracemalloc.start(frames)
        if mode == "breakdown":
            threading.Thread(target=near_peak, daemon=True).start()
        status = await original(self)
        held["phase"] = "after"
        held["rss_end"] = _rss_mb("VmRSS")
        if frames:
            held["at_end"], held["engine_peak"] = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()  # from here: the lock, the export and the report
        if mode == "breakdown":
            held["snapshot"] = tracemalloc.take_snapshot()
        return status

    engine_mod.Engine.run = run  # type: ignore[method-assign]
    code = main(args)
    stop.set()
    res: dict[str, Any] = {"code": code, "instances": held.get("instances"),
                           "rss_start": held.get("rss_start"), "rss_end": held.get("rss_end")}
    if frames:
        res["after_peak"] = tracemalloc.get_traced_memory()[1]
        res["engine_peak"] = held.get("engine_peak")
        res["at_end"] = held.get("at_end")
    if mode == "breakdown":
        res["lines"] = _by_line(held.get("snapshot"))
        res["peak_lines"] = _by_line(held.get("engine_snapshot"))
        res["after_lines"] = _by_line(held.get("after_snapshot"))
    out.write_text(json.dumps(res))
    return code


def _by_line(snap: Any) -> dict[str, int]:
    """Bytes held per line: an allocation is charged to the innermost runner/ frame of its
    traceback, or to its own line when no runner/ frame is among the frames kept."""
    lines: dict[str, int] = {}
    for tr in snap.traces if snap is not None else ():
        frames = tr.traceback  # oldest frame first
        at = next((f for f in reversed(frames) if f.filename.startswith(RUNNER)), frames[-1])
        where = f"{os.path.relpath(at.filename, HERE.parent)}:{at.lineno}"
        lines[where] = lines.get(where, 0) + tr.size
    return lines


# --- the parent ------------------------------------------------------------------------


def run_child(args: list[str], cwd: Path, env: dict[str, str], mode: str) -> dict[str, Any]:
    """One run in a fresh process; its wall time and, from wait4, its peak RSS (so the fake,
    a process of its own, is not counted)."""
    out = cwd / "figures.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(out), mode, "--",
           *args]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    data: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {"code": -1}
    if os.waitstatus_to_exitcode(status) != 0 or data["code"] != 0:
        sys.stderr.write(err.decode(errors="replace")[-3000:])
        raise SystemExit(f"sunoflow failed: {' '.join(cmd)}")
    out.unlink()
    return {**data, "wall": wall, "maxrss": ru.ru_maxrss / 1024}


def measure(kind: str, n: int, url: str | None, env: dict[str, str],
            modes: tuple[str, ...]) -> dict[str, Any]:
    """A plain run (RSS), a run with the heap traced, and with `breakdown` a run keeping
    snapshots (as `modes` says); each in a fresh state directory."""
    with tempfile.TemporaryDirectory(prefix="sunoflow-mem-") as d:
        cwd = Path(d)
        (cwd / "r.yaml").write_text(local_recipe(n) if kind == "local" else remote_recipe(n))
        row: dict[str, Any] = {"kind": kind, "n": n}
        row.update(peak=math.nan, at_end=math.nan, after=math.nan)
        for mode in modes:
            # A lock file would make the next run a rerun of the last one's work.
            (cwd / "r.lock").unlink(missing_ok=True)
            args = ["run", "r.yaml", "-q", "--state-dir", f"state-{mode}", "--out",
                    f"out-{mode}", "--report", f"report-{mode}.json",
                    *([] if url is None else ["--base-url", url])]
            got = run_child(args, cwd, env, mode)
            if mode == "plain":
                row.update(instances=got["instances"], wall=got["wall"], rss=got["maxrss"],
                           rss_start=got["rss_start"], rss_end=got["rss_end"])
                # The same command again: everything is cached, read back from the journal.
                again = run_child(args, cwd, env, mode)
                row.update(resume_wall=again["wall"], resume_rss=again["maxrss"])
            elif mode == "heap":
                row.update(peak=got["engine_peak"] / 2**20, at_end=got["at_end"] / 2**20,
                           after=got["after_peak"] / 2**20)
            else:
                row.update(lines=got["lines"], peak_lines=got["peak_lines"],
                           after_lines=got["after_lines"])
    return row


def report(rows: list[dict[str, Any]], top: int) -> None:
    print("RSS (MB): at the engine's start (imports, plan), when it returns, and the peak of\n"
          "the process. Heap (MB), what tracemalloc saw allocated from the engine's start:\n"
          "its peak while the engine runs, what is held when it returns, and the peak after\n"
          "it (the lock, the export and the report).\n")
    print(f"{'recipe':<7} {'size':>6} {'instances':>9} {'wall':>7} {'RSS start':>9} "
          f"{'RSS end':>8} {'RSS peak':>8} {'heap peak':>9} {'heap end':>8} {'after':>6}  "
          f"{'resume: RSS peak':>16} {'wall':>6}")
    for r in rows:
        print(f"{r['kind']:<7} {r['n']:>6} {r['instances']:>9,} {r['wall']:>6.1f}s "
              f"{r['rss_start']:>9.1f} {r['rss_end']:>8.1f} {r['rss']:>8.1f} "
              f"{r['peak']:>9.1f} {r['at_end']:>8.1f} {r['after']:>6.1f}  "
              f"{r['resume_rss']:>16.1f} {r['resume_wall']:>5.1f}s")
    for kind in ("local", "remote"):
        rs = [r for r in rows if r["kind"] == kind]
        if len(rs) < 2:
            continue
        a, b = rs[0], rs[-1]
        di = b["instances"] - a["instances"]

        def per(f: str, a: dict[str, Any] = a, b: dict[str, Any] = b, di: int = di) -> str:
            return f"{(b[f] - a[f]) * 1024 / di:.2f} KB"

        print(f"\n{kind}: per instance, from {a['instances']:,} to {b['instances']:,} "
              f"instances: RSS peak {per('rss')}; heap: peak in the engine {per('peak')}, "
              f"held when it returns {per('at_end')}, peak after it {per('after')}; "
              f"resume: RSS peak {per('resume_rss')}")
        for field, when in (("peak_lines", "near the engine's heap peak"),
                            ("lines", "held when the engine returns"),
                            ("after_lines", "near the heap's peak after the engine")):
            if field not in a:
                continue
            growth = {k: b[field].get(k, 0) - a[field].get(k, 0)
                      for k in set(a[field]) | set(b[field])}
            print(f"  what grows, bytes per instance {when} (top {top}):")
            for where, g in sorted(growth.items(), key=lambda kv: -kv[1])[:top]:
                if g <= 0:
                    break
                print(f"  {g / di:>9.0f}  {where}")


def main() -> None:
    if len(sys.argv) > 4 and sys.argv[1] == "--child":
        raise SystemExit(child(sys.argv[5:], Path(sys.argv[2]), sys.argv[3]))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kind", choices=("local", "remote", "both"), default="both")
    ap.add_argument("--sizes", type=int, nargs="+",
                    help="local: instances (default 1000 5000 10000); remote: songs "
                         "(default 20 100 200)")
    ap.add_argument("--breakdown", action="store_true",
                    help="also a run with snapshots per size, for what grows by line "
                         "(several times slower: use two small sizes)")
    ap.add_argument("--rss-only", action="store_true",
                    help="only the plain runs (no heap figures): for large sizes")
    ap.add_argument("--top", type=int, default=15, help="lines in the breakdown")
    a = ap.parse_args()
    modes = ("plain",) if a.rss_only else \
        ("plain", "heap", "breakdown") if a.breakdown else ("plain", "heap")
    env = {**album.child_env(), "PYTHONPATH": str(HERE.parent)}
    rows: list[dict[str, Any]] = []
    if a.kind in ("local", "both"):
        for n in a.sizes if a.sizes and a.kind == "local" else (1000, 5000, 10000):
            rows.append(measure("local", n, None, env, modes))
    if a.kind in ("remote", "both"):
        sizes = a.sizes if a.sizes and a.kind == "remote" else (20, 100, 200)
        with tempfile.TemporaryDirectory(prefix="sunoflow-fake-") as d, \
                album.Fake(LATENCY, Path(d), {
                    "rate_limit": None, "clip_duration": 1.0, "continuation_duration": 1.0,
                    "latency": {"*": {"dist": "fixed", "value": 1.0}}}) as fake:
            for n in sizes:
                rows.append(measure("remote", n, fake.url, env, modes))
    report(rows, a.top)


if __name__ == "__main__":
    main()
