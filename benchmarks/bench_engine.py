"""Scheduler overhead per step, and resume of a finished 10,000-step run.

    python benchmarks/bench_engine.py [N]        # default N = 10,000

A recipe of two chained fan-outs of N `boost_style` instances each (the second reads the
first by index: 2N instances in all) runs on the local provider. boost_style is pure text
(no ffmpeg), so the run measures the engine: rendering, keys, journal writes, scheduling.
The work itself is timed separately and subtracted.

Figures: wall time of `sunoflow run` as a fresh process (so imports count), the
per-instance overhead, and the wall time of the same command again when everything is
already done (resume of a finished run).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from runner.studio import textgen


def recipe(n: int) -> str:
    return f"""\
version: 1
name: bench-engine
vars:
  n: {list(range(n))}
steps:
  a:
    uses: boost_style
    for_each: "{{{{ vars.n }}}}"
    with: {{content: "style {{{{ item }}}}"}}
  b:
    uses: boost_style
    for_each: "{{{{ steps.a }}}}"
    with: {{content: "{{{{ item.text }}}} and more"}}
"""


def run(cwd: Path) -> tuple[float, dict]:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "runner", "run", "r.yaml", "-q", "--report",
                    "report.json"], cwd=cwd, check=True)
    wall = time.perf_counter() - t0
    return wall, json.loads((cwd / "report.json").read_text())


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    t0 = time.perf_counter()
    for i in range(n):
        textgen.boost_style(f"style {i}")
        textgen.boost_style(f"style {i} expanded and more")
    work = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as d:
        cwd = Path(d)
        (cwd / "r.yaml").write_text(recipe(n))
        cold, rep = run(cwd)
        assert rep["status"] == "succeeded", rep["status"]
        warm, rep2 = run(cwd)
        assert {s["status"] for s in rep2["steps"]} == {"cached"}
    instances = 2 * n
    print(f"instances: {instances:,}")
    print(f"full run, fresh process:        {cold:.2f} s")
    print(f"  of which the text work:       {work:.2f} s")
    print(f"  engine overhead per instance: {(cold - work) / instances * 1000:.3f} ms "
          "(imports and planning included)")
    print(f"resume of the finished run:     {warm:.2f} s "
          f"({warm / instances * 1000:.3f} ms per instance)")


if __name__ == "__main__":
    main()
