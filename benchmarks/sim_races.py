"""The races of bench_races.py on a virtual clock: sunoflow's real engine, poller and rate
limiter against an in-process service, with no wall time and no machine load in the figures.

    PYTHONHASHSEED=0 python benchmarks/sim_races.py [--scene b-refuse] [--seeds 20] [-v]
    PYTHONPATH=OTHER_TREE python benchmarks/sim_races.py ...   # another build's engine

(Needs trio, from the test extra. -v prints each run and where the last song's time
went: the wait before each submit, the task's latency, how late a poll found it done;
`-v --trace generate` also when each generate task was polled.)

Why: the real benchmark (bench_races.py) runs the CLI against the HTTP fake at 0.05 wall s
per model s, so a 1 % effect drowns in the run-to-run spread of five runs (each run's draws
and the machine's load move the ratio by 2-5 %). Here the same engine (runner.engine:
scheduler, early release, critical-path priorities, pacing.Poller and
pacing.RateLimiter) runs on trio's MockClock, which jumps to the next timer whenever
every task waits: a 16-song album takes a second or two of CPU, and twenty seeds say what
five real runs cannot. What it leaves out, and bench_races.py measures: HTTP, downloads
(results are local files), the journal's fsyncs (on a tmpfs), the CLI. Every request takes
`--rtt` model s on the wire (the rate limiter's slot flies for that long).

The service: each task's latency is drawn as runner.fake draws it (same distributions),
keyed by the seed, the song and the operation, so that every client and every policy meets
the same album on a seed; a music task reaches its first stage at runner.fake.state.FIRST_AT of
it. The service counts requests in a sliding window of RATE_SECONDS and answers a
rate-limited one with a 430 (counted). Scenes: a (4 songs, fixed latencies), b-refuse
(16 songs, 15 % spread, work on an unfinished task's audio is refused with a 400 that says
so, as the fake's `unfinished_work: refuse`), b-accept (the same, accepted), c (the
100-song album of bench_album.py, with the video and the stems; its figure is also given
over album_bound.rate_aware_bound).

With `--listen` the service calls back (the registry of runner.callbacks, as the
listener files bodies) each music task's first stage and every task's end, and the 100-song
figure is also given over the rate-aware bound for callbacks (submits only, first stages).

The bound is bench_races.py's: max(longest song chain of the drawn latencies, the rate
limit on two requests per task).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import trio._core._run as trio_run
import trio.testing
from anyio.abc import TaskGroup

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from album_bound import rate_aware_bound  # noqa: E402
from album_common import (  # noqa: E402
    LATENCY,
    MAX_POLL_INTERVAL,
    RATE_REQUESTS,
    RATE_SECONDS,
    recipe,
)
from bench_races import FIXED, SPREAD, STAGGER, chain_recipe  # noqa: E402

from runner import pacing  # noqa: E402
from runner.callbacks.registry import Callbacks  # noqa: E402
from runner.engine.records import Options  # noqa: E402
from runner.engine.scheduler import Engine  # noqa: E402
from runner.errors import StepError, TransientError  # noqa: E402
from runner.fake.config import draw_latency  # noqa: E402
from runner.fake.state import FIRST_AT  # noqa: E402
from runner.pacing import PRIORITY, SENT_AT, Clock, RateLimiter  # noqa: E402
from runner.plan import build as planner  # noqa: E402
from runner.providers import First, Op, Produced, Result, Submitted  # noqa: E402
from runner.recipe import load as recipes  # noqa: E402
from runner.report.progress import PlainProgress  # noqa: E402
from runner.store.journal import Store  # noqa: E402

FAKE_OP = {"lyrics": "lyrics", "generate": "generate", "extend": "extend", "convert": "wav",
           "video": "mp4", "separate": "separate_vocal"}
MUSIC = {"generate", "extend"}
DEBUG = False
TRACE: set[str] = set()  # --trace: operations whose every task's polls -v prints
LADDER: dict[str, list[tuple[float, float]]] = {}  # op -> (wait, late) of the last songs
SCENES = {  # songs, latencies, host refuses early work
    "a": (4, FIXED, False),
    "b-refuse": (16, SPREAD, True),
    "b-accept": (16, SPREAD, False),
    "c": (100, LATENCY, False),  # the whole album: also a video and stems of every 10th
}


class VirtualClock(Clock):
    """The event loop's clock: trio's MockClock under `anyio.run` below."""

    def now(self) -> float:
        return anyio.current_time()


@dataclass
class Task:
    op: str
    t0: float
    latency: float
    song: int
    polls: int = 0
    found: float | None = None  # when a poll first found it done
    at: list[float] = field(default_factory=list)  # when its polls reached the service


@dataclass
class Service:
    """The service's side: tasks, their latencies, the requests it saw."""

    seed: int
    spec: dict[str, Any]
    refuse: bool
    rtt: float
    tasks: dict[str, Task] = field(default_factory=dict)
    window: deque[float] = field(default_factory=deque)
    requests: int = 0
    limited: int = 0
    refused: int = 0
    polls: int = 0
    drawn: dict[tuple[int, str], int] = field(default_factory=dict)

    def draw(self, song: int, op: str) -> float:
        """The latency of the next task of `op` (runner.fake's operation name) for `song`:
        keyed by the song, the operation and how many such tasks came before, never by the
        order of submissions, so that every client (sunoflow, however it orders its
        requests, and the pool) meets the same album on a seed, and so the same bound."""
        key = (song, op)
        self.drawn[key] = self.drawn.get(key, 0) + 1
        rng = random.Random(f"{self.seed}-{song}-{op}-{self.drawn[key]}")
        return draw_latency(rng, self.spec[op])

    def arrive(self, now: float) -> bool:
        """Count a request; False when it is over the limit (a 430)."""
        self.requests += 1
        while self.window and now - self.window[0] >= RATE_SECONDS:
            self.window.popleft()
        if len(self.window) >= RATE_REQUESTS:
            self.limited += 1
            return False
        self.window.append(now)
        return True


def song_of(op: Op) -> int:
    return int(op.step.split("[")[1].rstrip("]")) if "[" in op.step else 0


class SimProvider:
    """sunoapi as the engine sees it, answered by `Service` on the virtual clock."""

    kind = "sunoapi"
    reports_first = True

    def __init__(self, service: Service, clock: Clock,
                 calls: tuple[Callbacks, TaskGroup] | None = None) -> None:
        self.s, self.clock = service, clock
        self.limiter = RateLimiter(RATE_REQUESTS, RATE_SECONDS, clock)
        self.n = 0
        self.calls = calls  # --listen: the run's registry, and where the senders run

    # With callbacks (`--listen`): the service POSTs a music task's first stage and every
    # task's end to the registry, as runner.callbacks.listener would file them. They cost
    # no request in the rate window (they come in).
    def use_callback_url(self, url: str) -> None:
        return None

    def callback_task_id(self, body: Any) -> str | None:
        return str(body["task_id"])

    def from_callback(self, op: Op, task_id: str, body: Any) -> Result | First | None:
        if body["stage"] == "complete":
            return self._result(op, task_id, 2)
        return First(self._result(op, task_id, 1)) if op.type in MUSIC else None

    async def _call_back(self, task_id: str, task: Task) -> None:
        assert self.calls is not None
        registry = self.calls[0]
        if task.op in MUSIC:
            await anyio.sleep(max(0.0, task.t0 + FIRST_AT * task.latency - self.clock.now()))
            registry.deliver({"task_id": task_id, "stage": "first"})
        await anyio.sleep(max(0.0, task.t0 + task.latency - self.clock.now()))
        if task.found is None:
            task.found = self.clock.now()
        registry.deliver({"task_id": task_id, "stage": "complete"})

    async def _send(self, step: str) -> float:
        """One request through the rate limiter; when it reached the service."""
        slot = await self.limiter.acquire(PRIORITY.get())
        now = self.clock.now()
        SENT_AT.set(now)
        try:
            ok = self.s.arrive(now)
            await anyio.sleep(self.s.rtt)
        finally:
            self.limiter.release(slot)
        if not ok:
            raise TransientError("430 rate limit exceeded", step=step, code=430)
        return now

    async def submit(self, op: Op) -> Submitted:
        at = await self._send(op.step)
        audio = op.inputs.get("audio")
        if self.s.refuse and isinstance(audio, dict):
            src = self.s.tasks.get(str(audio.get("task_id")))
            # (A rounding error's grace: a callback at the very end wakes the engine at a
            # time computed as t0 + latency, which its submit must not be refused at.)
            if src is not None and at < src.t0 + src.latency - 1e-6:
                self.s.refused += 1
                raise StepError("the source task is not finished yet", step=op.step,
                                code=400)
        self.n += 1
        tid = f"t{self.n}"
        task = Task(op.type, at, self.s.draw(song_of(op), FAKE_OP[op.type]), song_of(op))
        self.s.tasks[tid] = task
        if self.calls is not None:
            self.calls[1].start_soon(self._call_back, tid, task)
        return Submitted(tid)

    async def poll(self, op: Op, task_id: str) -> Result | First | None:
        at = await self._send(op.step)
        self.s.polls += 1
        t = self.s.tasks[task_id]
        t.polls += 1
        t.at.append(at - t.t0)
        frac = (at - t.t0) / t.latency
        if frac >= 1.0:
            if t.found is None:
                t.found = at
            return self._result(op, task_id, 2)
        if op.type in MUSIC and frac >= FIRST_AT:
            return First(self._result(op, task_id, 1))
        return None

    def _result(self, op: Op, task_id: str, takes: int) -> Result:
        if op.type in ("video", "separate"):
            f = op.workdir / f"{task_id}.bin"
            f.write_bytes(b"sim")
            return Result({"file": Produced(f), "task_id": task_id}, task_ids=[task_id])
        if op.type == "lyrics":
            return Result({"texts": [{"title": "x", "text": "la"}], "text": "la", "title": "x",
                           "task_id": task_id}, task_ids=[task_id])
        tracks = []
        for k in range(takes):
            f = op.workdir / f"{task_id}-{k}.mp3"
            f.write_bytes(b"sim")
            tracks.append({"id": f"{task_id}-{k}", "task_id": task_id, "title": "t", "tags": "pop",
                           "duration": 120.0, "file": Produced(f)})
        return Result({"tracks": tracks, "task_id": task_id, "file": tracks[0]["file"]},
                      task_ids=[task_id])

    async def refresh(self, op: Op, task_id: str) -> Result | None:
        return None

    async def credits(self) -> float | None:
        return None

    async def aclose(self) -> None:
        return None


@dataclass
class Run:
    makespan: float
    bound: float
    requests: int
    tasks: int
    limited: int
    refused: int
    status: str
    service: Service
    listen: bool = False  # callbacks: the rate-aware bound counts submits only

    @property
    def x(self) -> float:
        return self.makespan / self.bound

    @property
    def tight(self) -> float:
        """Over album_bound.rate_aware_bound (with polls): the bound that counts the rate
        limit on every request a polling client must send, in order."""
        if self.listen:
            return self.makespan / rate_aware_bound(chains(self.service), FIRST_AT,
                                                    polls=False)
        return self.makespan / rate_aware_bound(chains(self.service), None, polls=True)


def chains(service: Service) -> dict[int, dict[str, float]]:
    """album_common.Analysis.chains: per song, the latency of each operation."""
    out: dict[int, dict[str, float]] = {}
    for t in service.tasks.values():
        out.setdefault(t.song, {})[FAKE_OP[t.op]] = t.latency
    return out


def bound(service: Service) -> float:
    """max(the longest song, the rate limit on two requests a task); a song's last stage
    (WAV, video, stems) runs side by side."""
    def song(c: dict[str, float]) -> float:
        return c.get("lyrics", 0) + c.get("generate", 0) + c.get("extend", 0) + max(
            c.get("wav", 0), c.get("mp4", 0), c.get("separate_vocal", 0))
    rate = 2 * len(service.tasks) * RATE_SECONDS / RATE_REQUESTS
    return max(max(song(c) for c in chains(service).values()), rate)


async def _inline(fn: Any, *args: Any, **_: Any) -> Any:
    return fn(*args)


def seeded(seed: int, main: Any, clock: trio.testing.MockClock) -> Any:
    """anyio.run(main) on trio with `clock`, the run a function of `seed` alone. trio
    shuffles each batch of runnable tasks (to shake out races): the shuffle is seeded, and
    the batch is first sorted by the tasks' creation, as trio does under Hypothesis.
    Without the sort, tasks woken together (timers due at one virtual instant are common
    here) come in an order that follows memory addresses (trio's timer heap breaks ties by
    id), which differ run to run: one 100-song seed measured 571 s in one run and 621 s in
    the next. (The flag is put back: a test process goes on to other tests.)"""
    trio_run._r.seed(seed)
    before = trio_run._ALLOW_DETERMINISTIC_SCHEDULING
    trio_run._ALLOW_DETERMINISTIC_SCHEDULING = True  # type: ignore[misc]
    try:
        return anyio.run(main, backend="trio", backend_options={"clock": clock})
    finally:
        trio_run._ALLOW_DETERMINISTIC_SCHEDULING = before  # type: ignore[misc]


def run_once(scene: str, seed: int, rtt: float, root: Path, release: str | None,
             listen: bool = False) -> Run:
    songs, spec, refuse = SCENES[scene]
    work = Path(tempfile.mkdtemp(dir=root))
    text = recipe(songs, 1.0) if scene == "c" else chain_recipe(songs, 1.0)
    if release is not None:
        text = text.replace("  kind: sunoapi\n",
                            f"  kind: sunoapi\n  release_on_first: {release}\n")
    (work / "album.yaml").write_text(text)
    service = Service(seed, spec, refuse, rtt)

    async def main() -> tuple[float, str]:
        clock = VirtualClock()
        plan = planner.build(recipes.load(work / "album.yaml"))
        store = Store(work / "state").open()
        async with anyio.create_task_group() as senders:
            registry = Callbacks(lambda body: str(body["task_id"]), MAX_POLL_INTERVAL) \
                if listen else None
            prov = SimProvider(service, clock,
                               (registry, senders) if registry is not None else None)
            eng = Engine(plan, store, {"sunoapi": prov, "local": prov},
                         Options(state_dir=work / "state", clock=clock, handle_signals=False,
                                 callbacks=registry),
                         PlainProgress(quiet=True))
            t0 = clock.now()
            status = await eng.run()
            senders.cancel_scope.cancel()  # callbacks of tasks no one waits for any more
        store.close()
        if status != "succeeded" and DEBUG:
            for r in eng.records.values():
                if r.error:
                    print(r.id, r.error, file=sys.stderr)
                    break
        return clock.now() - t0, status

    mock = trio.testing.MockClock(autojump_threshold=0.002)
    # Work handed to threads (files, the journal) runs inline: it takes no virtual time,
    # and no jump of the clock can overtake it.
    # (Put back after the run: a test process goes on to other tests.)
    threads = anyio.to_thread.run_sync
    anyio.to_thread.run_sync = _inline  # type: ignore[assignment]
    pacing._JITTER.seed(seed)  # the retry jitter
    try:
        took, status = seeded(seed, main, mock)
    finally:
        anyio.to_thread.run_sync = threads  # type: ignore[assignment]
    return Run(took, bound(service), service.requests, len(service.tasks), service.limited,
               service.refused, status, service, listen)


def run_pool(scene: str, seed: int, rtt: float, p: float) -> Run:
    """bench_races.py's thread pool on the same service and draws: one worker per song
    (started STAGGER model s apart past 4 songs), each submitting its chain's next step
    when the last is done and polling it every `p`; a rate-limited answer is retried 2 s
    later (--pool-retry). No limiter of its own: that is what a user would write."""
    songs, spec, refuse = SCENES[scene]
    service = Service(seed, spec, refuse, rtt)
    ops = ["lyrics", "generate", "extend", "convert"]

    async def request() -> None:
        while True:
            ok = service.arrive(anyio.current_time())
            await anyio.sleep(rtt)
            if ok:
                return
            await anyio.sleep(2.0)

    async def worker(i: int) -> None:
        await anyio.sleep(i * STAGGER if songs > 4 else 0.0)
        for op in ops:
            await request()
            task = Task(op, anyio.current_time() - rtt,
                        service.draw(i, FAKE_OP[op]), i)
            service.tasks[f"p{i}-{op}"] = task
            while True:
                await anyio.sleep(p)
                await request()
                service.polls += 1
                task.polls += 1
                if anyio.current_time() - rtt - task.t0 >= task.latency:
                    task.found = anyio.current_time() - rtt
                    break

    async def main() -> float:
        t0 = anyio.current_time()
        async with anyio.create_task_group() as tg:
            for i in range(songs):
                tg.start_soon(worker, i)
        return anyio.current_time() - t0

    took = seeded(seed, main, trio.testing.MockClock(autojump_threshold=0))
    return Run(took, bound(service), service.requests, len(service.tasks), service.limited,
               0, "succeeded", service)


def ladder(r: Run) -> str:
    """Where the last song's time went: per task, the wait before its submit (since the
    one before it was found done), its latency, and how late a poll found it done."""
    s = r.service
    songs: dict[int, list[Task]] = {}
    for t in s.tasks.values():
        songs.setdefault(t.song, []).append(t)
    last = max(songs, key=lambda k: max(t.found or 0.0 for t in songs[k]))
    prev, parts = 0.0, []
    for t in sorted(songs[last], key=lambda t: t.t0):
        LADDER.setdefault(t.op, []).append((t.t0 - prev, (t.found or 0.0) - t.t0 - t.latency))
        found = t.found if t.found is not None else float("nan")
        parts.append(f"{t.op} wait {t.t0 - prev:.1f} + {t.latency:.1f} + late "
                     f"{found - t.t0 - t.latency:.1f} ({t.polls} polls)")
        prev = found
    late = [(t.found or 0) - t.t0 - t.latency for t in s.tasks.values()]
    per: dict[str, list[int]] = {}
    for t in s.tasks.values():
        per.setdefault(t.op, []).append(t.polls)
    polls = ", ".join(f"{op} {statistics.mean(v):.2f}" for op, v in per.items())
    for t in sorted(s.tasks.values(), key=lambda t: t.t0):
        if t.op in TRACE:
            print(f"    {t.op} of song {t.song}: submitted {t.t0:.1f}, latency {t.latency:.1f}, "
                  "polled at " + " ".join(f"{a:.1f}" for a in t.at))
    return (f"  polls per task: {polls}\n  last song {last}: " + "; ".join(parts) +
            f"\n  all tasks: late mean {statistics.mean(late):.1f}, polls/task "
            f"{s.polls / len(s.tasks):.2f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--scene", default="b-refuse", choices=sorted(SCENES))
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--first-seed", type=int, default=7)
    p.add_argument("--rtt", type=float, default=0.2, help="model s a request takes")
    p.add_argument("--release", default=None, help="release_on_first: auto | true | false")
    p.add_argument("--listen", action="store_true",
                   help="callbacks instead of polls (the service calls back each task's "
                   "first stage and end), as `sunoflow run --listen`")
    p.add_argument("-v", action="store_true", help="one line per run")
    p.add_argument("--trace", action="append", default=[], metavar="OP",
                   help="with -v: when each task of OP (lyrics, generate, ...) was polled")
    p.add_argument("--pool", type=float, default=None, metavar="P",
                   help="also run the thread pool polling every P model s on each seed "
                   "(scenes a and b), side by side")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="try another value of a runner.pacing constant (FINE, "
                   "COHORT_PROBES, DONE_AT_FIRST, ...): what-if runs for tuning")
    args = p.parse_args(argv)
    for kv in args.set:
        name, _, value = kv.partition("=")
        if not hasattr(pacing, name):
            p.error(f"--set {kv}: runner.pacing has no {name}")
        setattr(pacing, name, type(getattr(pacing, name))(float(value)))
    global DEBUG
    DEBUG = args.v
    TRACE.update(args.trace)
    root = Path(tempfile.mkdtemp(prefix="sim-races-", dir="/dev/shm"
                                 if Path("/dev/shm").is_dir() else None))
    runs: list[Run] = []
    pools: list[Run] = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        r = run_once(args.scene, seed, args.rtt, root, args.release, args.listen)
        runs.append(r)
        if args.pool is not None:
            pools.append(run_pool(args.scene, seed, args.rtt, args.pool))
        if args.v:
            print(f"seed {seed}: {r.makespan:.1f} / {r.bound:.1f} = {r.x:.3f}, "
                  f"{r.requests / r.tasks:.2f} req/task, {r.limited} limited, "
                  f"{r.refused} refused, {r.status}", flush=True)
            print(ladder(r))
    if args.v:
        print("last songs, mean wait before submit / late found: " + "; ".join(
            f"{op} {statistics.mean(w for w, _ in v):.1f} / {statistics.mean(x for _, x in v):.1f}"
            for op, v in LADDER.items()))
    if args.scene == "c":
        ts = sorted(r.tight for r in runs)
        print(f"c: x rate-aware bound mean {statistics.mean(ts):.3f} median "
              f"{statistics.median(ts):.3f} [{ts[0]:.3f}-{ts[-1]:.3f}], within 5 % in "
              f"{sum(x <= 1.05 for x in ts)}/{len(ts)}, within 10 % in "
              f"{sum(x <= 1.10 for x in ts)}/{len(ts)}")
    if pools:
        px = sorted(r.x for r in pools)
        preq = statistics.mean(r.requests / r.tasks for r in pools)
        below = sum(r.x < q.x for r, q in zip(runs, pools, strict=True))
        flow = statistics.mean(r.requests / r.tasks for r in runs)
        print(f"pool P={args.pool:g}: x bound mean {statistics.mean(px):.3f} median "
              f"{statistics.median(px):.3f} [{px[0]:.3f}-{px[-1]:.3f}]; API requests/task "
              f"{preq:.2f}; limited {sum(r.limited for r in pools)}. sunoflow below the "
              f"pool in {below}/{len(runs)} runs, with {flow / preq:.2f}x its requests")
    xs = sorted(r.x for r in runs)
    req = statistics.mean(r.requests / r.tasks for r in runs)
    print(f"{args.scene}: x bound mean {statistics.mean(xs):.3f} median "
          f"{statistics.median(xs):.3f} [{xs[0]:.3f}-{xs[-1]:.3f}], "
          f"<=1.10 in {sum(x <= 1.10 for x in xs)}/{len(xs)}, <=1.00 in "
          f"{sum(x <= 1.0 for x in xs)}/{len(xs)}; API requests/task {req:.2f}; "
          f"limited {sum(r.limited for r in runs)}; failed "
          f"{sum(r.status != 'succeeded' for r in runs)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
