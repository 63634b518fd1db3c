"""`sunoflow run examples/album.yaml` end to end on the local provider, from a fresh state.

    python benchmarks/bench_local_album.py [RUNS]      # default 3 runs; medians

Each run copies the example into a new temporary folder (no state, no output), runs the
CLI as a subprocess, and reads the wall time and the CPU time of it and its ffmpeg
children. A second invocation in the same folder (everything cached) is timed too.
"""

from __future__ import annotations

import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(cwd: Path) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "runner", "run", "album.yaml", "-q"], cwd=cwd,
                   check=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    fresh, cached = [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "examples").mkdir()
            shutil.copy(ROOT / "examples" / "album.yaml", Path(d) / "examples")
            shutil.copytree(ROOT / "recipes", Path(d) / "recipes")  # the album uses them
            fresh.append(timed(Path(d) / "examples"))
            cached.append(timed(Path(d) / "examples"))
    print(f"runs: {runs}")
    print(f"fresh run:  wall {statistics.median(w for w, _ in fresh):.1f} s, "
          f"cpu {statistics.median(c for _, c in fresh):.1f} s "
          f"(min {min(w for w, _ in fresh):.1f}, max {max(w for w, _ in fresh):.1f})")
    print(f"cached run: wall {statistics.median(w for w, _ in cached):.2f} s")


if __name__ == "__main__":
    main()
