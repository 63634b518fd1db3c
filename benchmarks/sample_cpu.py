"""A sampling CPU profiler for one process, low overhead (unlike cProfile, whose cost per
call hides where the time really goes in code made of many small calls):

    python benchmarks/sample_cpu.py OUT.json -m runner run ...

Every 2 ms of the process's CPU time (ITIMER_PROF: all threads) the main thread's stack is
recorded. A sample taken while the main thread waits in the selector is CPU that a worker
thread used (downloads' writes and hashes). OUT.json: the folded stacks and their counts;
`python benchmarks/sample_cpu.py --show OUT.json` prints the top functions, self and total.
"""

from __future__ import annotations

import atexit
import json
import runpy
import signal
import sys
from collections import Counter
from types import FrameType

INTERVAL = 0.002


def frames(frame: FrameType | None) -> list[str]:
    out = []
    while frame is not None:
        code = frame.f_code
        path = code.co_filename
        short = path.split("site-packages/")[-1] if "site-packages/" in path else \
            "/".join(path.rsplit("/", 2)[-2:])
        out.append(f"{short}:{code.co_name}")
        frame = frame.f_back
    return out[::-1]


def record(out: str, argv: list[str]) -> None:
    stacks: Counter[str] = Counter()

    def on_prof(signum: int, frame: FrameType | None) -> None:
        stacks[";".join(frames(frame))] += 1

    def dump() -> None:
        signal.setitimer(signal.ITIMER_PROF, 0)
        with open(out, "w") as f:
            json.dump({"interval": INTERVAL, "stacks": stacks}, f)

    atexit.register(dump)
    signal.signal(signal.SIGPROF, on_prof)
    signal.setitimer(signal.ITIMER_PROF, INTERVAL, INTERVAL)
    assert argv[0] == "-m", "usage: sample_cpu.py OUT.json -m MODULE ARGS..."
    sys.argv = [argv[1], *argv[2:]]
    runpy.run_module(argv[1], run_name="__main__", alter_sys=True)


def show(path: str, n: int = 40) -> None:
    data = json.load(open(path))
    stacks: dict[str, int] = data["stacks"]
    total = sum(stacks.values())
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    for stack, c in stacks.items():
        parts = stack.split(";")
        own[parts[-1]] += c
        for p in set(parts):
            incl[p] += c
    ms = data["interval"] * 1000
    print(f"{total} samples, {total * ms / 1000:.1f} s CPU")
    print("self:")
    for k, c in own.most_common(n):
        print(f"  {c * 100 / total:5.1f}%  {k}")
    print("total:")
    for k, c in incl.most_common(n):
        print(f"  {c * 100 / total:5.1f}%  {k}")


if __name__ == "__main__":
    if sys.argv[1] == "--show":
        show(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 40)
    else:
        record(sys.argv[1], sys.argv[2:])
