"""Where a run lost time and requests, from the fake's records of it.

    python benchmarks/album_inspect.py RUN_DIR/fake.json SCALE

Per operation: tasks, polls per task, how late the first poll that found the task finished
came after the task was ready (model seconds: mean, median, max), how many polls found it
still running, and how long submits waited after their inputs were ready (for music ops:
the previous task's ready time, to the extent the log shows it). All in model seconds.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from typing import Any


def inspect(records: dict[str, Any], scale: float) -> list[str]:
    tasks = {t["task_id"]: t for t in records["tasks"]}
    polls: dict[str, list[float]] = defaultdict(list)
    for e in records["log"]:
        if e["op"] == "poll":
            tid = e["query"].get("taskId")
            if e.get("envelope_code") == 200:
                polls[tid].append(e["t"])
    per_op: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for tid, t in tasks.items():
        ps = polls.get(tid, [])
        done = [p for p in ps if p >= t["t_ready"]]
        d = per_op[t["op"]]
        d["polls"].append(len(ps))
        d["early"].append(len(ps) - len(done))
        if done:
            d["late"].append((done[0] - t["t_ready"]) / scale)
        d["latency"].append(t["latency"])
    out = [
        "| op | tasks | latency median | polls / task | polls too early / task | "
        "late: mean | median | max |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for op, d in sorted(per_op.items(), key=lambda kv: -len(kv[1]["polls"])):
        late = d["late"] or [0.0]
        out.append(
            f"| {op} | {len(d['polls'])} | {statistics.median(d['latency']):.0f} s | "
            f"{statistics.mean(d['polls']):.2f} | {statistics.mean(d['early']):.2f} | "
            f"{statistics.mean(late):.1f} s | {statistics.median(late):.1f} s | "
            f"{max(late):.1f} s |"
        )
    return out


def main(argv: list[str]) -> int:
    with open(argv[0]) as fh:
        records = json.load(fh)
    print("\n".join(inspect(records, float(argv[1]))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
