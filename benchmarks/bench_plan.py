"""Validate and plan a generated recipe of 10,000 step instances; report time and memory.

    python benchmarks/bench_plan.py            # every shape, 3 runs each: median and best
    python benchmarks/bench_plan.py 9          # 9 runs each

Each measurement runs in a fresh interpreter (`sunoflow validate` as a subprocess would),
timing load + schema validation + reference checks + planning, and reading the peak
resident memory of that process. Shapes:

- fan-out: 100 steps, each a for_each of 100, chained step to step by index
  (10,000 instances, 9,900 instance-level dependencies).
- flat: 10,000 literal steps, each referring to the one before it (a 1 MB recipe).
- flat with filters: the same, but every template uses a filter, so each of the 10,000
  distinct templates goes through Jinja's own parser (plain references take a fast path).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from runner.plan import build as plan
from runner.recipe import load as recipe
t1 = time.perf_counter()
p = plan.build(recipe.load(sys.argv[1]))
t2 = time.perf_counter()
print(json.dumps({"instances": len(p.instances), "import_s": t1 - t0, "plan_s": t2 - t1,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def fan_out_recipe(steps: int = 100, width: int = 100) -> str:
    lines = ["version: 1", "name: bench-fan", "vars:", f"  n: {list(range(width))}", "steps:"]
    for s in range(steps):
        lines.append(f"  s{s}:")
        lines.append("    uses: lyrics" if s == 0 else "    uses: generate")
        lines.append('    for_each: "{{ vars.n }}"')
        if s == 0:
            lines.append('    with: {prompt: "song {{ item }}"}')
        else:
            lines.append(f'    with: {{prompt: "{{{{ steps.s{s - 1}[index].text }}}}", '
                         f'title: "T{{{{ index }}}}", style: pop}}' if s == 1 else
                         f'    with: {{prompt: "{{{{ steps.s{s - 1}[index].tracks[0].title }}}}",'
                         f' title: "T{{{{ index }}}}", style: pop}}')
    return "\n".join(lines) + "\n"


def flat_recipe(steps: int = 10_000) -> str:
    lines = ["version: 1", "name: bench-flat", "steps:", "  s0:", "    uses: lyrics",
             "    with: {prompt: start}"]
    for s in range(1, steps):
        lines += [f"  s{s}:", "    uses: boost_style",
                  f'    with: {{content: "more {{{{ steps.s{s - 1}.text }}}}"}}']
    return "\n".join(lines) + "\n"


def measure(text: str, runs: int = 3) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "bench.yaml"
        path.write_text(text)
        samples = []
        for _ in range(runs):
            out = subprocess.run([sys.executable, "-c", CHILD, str(path)], check=True,
                                 capture_output=True, text=True).stdout
            samples.append(json.loads(out))
    return {
        "instances": samples[0]["instances"],
        "bytes": len(text.encode()),
        "plan_s": statistics.median(s["plan_s"] for s in samples),
        "best_s": min(s["plan_s"] for s in samples),
        "import_s": statistics.median(s["import_s"] for s in samples),
        "peak_rss_mb": statistics.median(s["peak_rss_mb"] for s in samples),
    }


def jinja_recipe(steps: int = 10_000) -> str:
    """Like flat, but every template needs Jinja's own parser (a filter): the slow path."""
    return flat_recipe(steps).replace(".text }}", ".text | upper }}")


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    print(f"| shape | instances | recipe size | validate + plan (median of {runs}) | best | "
          "import | peak RSS |")
    print("|---|---|---|---|---|---|---|")
    for name, text in (("fan-out 100x100", fan_out_recipe()), ("flat 10,000", flat_recipe()),
                       ("flat 10,000, filters", jinja_recipe())):
        m = measure(text, runs)
        print(f"| {name} | {m['instances']:,} | {m['bytes'] / 1e6:.2f} MB | "
              f"{m['plan_s']:.2f} s | {m['best_s']:.2f} s | {m['import_s']:.2f} s | "
              f"{m['peak_rss_mb']:.0f} MB |")


if __name__ == "__main__":
    main()
