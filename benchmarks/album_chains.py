"""Where each song of a run spent its time, from the fake's records and sunoflow's journal.

    python benchmarks/album_chains.py RUN_DIR SCALE [--top 5]

RUN_DIR is a kept run of bench_callbacks.py or bench_album.py (`--keep`): its `fake.json`
(every task's t_submit / t_ready / latency and the request log with bodies), its
`state/journal.jsonl` (when sunoflow wrote intent / submitted / first / done, wall clock)
and, if there, `callbacks.json` (the fake's deliveries: when each stage was POSTed).

Each song's chain is lyrics -> generate -> extend -> its last task (WAV, stems or video,
or the extend itself when that ends later). With early release (the journal has `first`
events) a step reading tracks[0] follows its parent's `first` stage (FIRST_AT of its run),
otherwise the parent's end. A song's end (its last task `done` in the journal) splits into:

- start: the first request of the run to the song's lyrics submit (the rate-limit queue
  at the start, where 100 lyrics and 100 generate submits compete);
- service: the service's latency along the chain (to the `first` stage where that
  released the next step);
- per link parent -> child, the gap from the parent's release point (ready, or its
  `first` stage) to the child's submit, in three parts: `notice` (to the parent's
  journal line: callback delivery or the poll that found it, the downloads, the fsync;
  with callbacks.json also split into the delivery's delay), `local` (to the child's
  `intent`: scheduling, the --concurrency places) and `pace` (intent to the fake's log of
  the submit: the rate limiter's queue and the request);
- end: the last task's ready to its `done` (its notice and downloads).

start + service + gaps + end = the song's end, exactly. Times in model seconds from the
run's first request. The journal's clock is aligned to the fake's by the submits: each
task's `intent` comes before the fake logs it and its `submitted` after.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from album_bound import clairvoyant, expected_first, rate_aware_bound
from album_common import analyse, critical_path, songs_of

from runner.fake.state import FIRST_AT

MUSIC = ("generate", "extend")
ENDS = ("wav", "separate_vocal", "mp4")
LINKS = ("lyrics>generate", "generate>extend", "extend>end")
PARTS = ("notice", "local", "pace")


@dataclass
class Song:
    index: int
    end: float  # its last task's `done`, model s from the run's first request
    start: float
    service: float
    last: str  # the op whose `done` ended the song
    gaps: dict[str, dict[str, float]] = field(default_factory=dict)  # link -> part -> s
    finish: float = 0.0  # the last task's ready to its `done`
    delivery: dict[str, float] = field(default_factory=dict)  # link -> callback's delay

    def gap(self, link: str) -> float:
        return sum(self.gaps.get(link, {}).values())

    @property
    def gaps_total(self) -> float:
        return sum(self.gap(link) for link in LINKS)


def _journal(path: Path) -> dict[str, dict[str, float]]:
    """task id -> event -> wall time (epoch) of its first such line."""
    by_key: dict[str, dict[str, float]] = {}
    task_of: dict[str, str] = {}
    out: dict[str, dict[str, float]] = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        ev, key = r["e"], r["key"]
        if ev == "submitted":
            task_of[key] = r["task_id"]
            out.setdefault(r["task_id"], {}).update(by_key.get(key, {}))
        target = out.setdefault(task_of[key], {}) if key in task_of else \
            by_key.setdefault(key, {})
        target.setdefault(ev, r["t"])
        if ev == "first":
            out.setdefault(r["task_id"], {}).setdefault("first", r["t"])
    return out


def _offset(tasks: dict[str, dict[str, Any]], jr: dict[str, dict[str, float]]) -> float:
    """journal time - fake time: every intent is before its submit, every `submitted` after."""
    lo = max(j["intent"] - tasks[t]["t_submit"] for t, j in jr.items()
             if t in tasks and "intent" in j)
    hi = min(j["submitted"] - tasks[t]["t_submit"] for t, j in jr.items()
             if t in tasks and "submitted" in j)
    return (lo + hi) / 2 if lo <= hi else hi


def chains(run: Path, scale: float, early: bool | None = None) -> tuple[list[Song], float]:
    """Every song's split, and the run's last request (model s from its first)."""
    rec = json.loads((run / "fake.json").read_text())
    tasks = {t["task_id"]: t for t in rec["tasks"]}
    log = rec["log"]
    t0 = min(e["t"] for e in log)
    t_last = max(e["t"] for e in log)
    jr = _journal(run / "state" / "journal.jsonl")
    if early is None:
        early = any("first" in j for j in jr.values())
    off = _offset(tasks, jr)
    deliveries: dict[tuple[str, str], float] = {}
    cb = run / "callbacks.json"
    if cb.exists():
        for d in json.loads(cb.read_text()):
            if d.get("error") is None:
                deliveries.setdefault((d["task_id"], d["stage"]), d["t"])
    song_of, _ = songs_of(rec["tasks"], log)

    def m(t_fake: float) -> float:
        return (t_fake - t0) / scale

    def mj(t_wall: float) -> float:
        return m(t_wall - off)

    by_song: dict[int, dict[str, dict[str, Any]]] = {}
    for tid, i in song_of.items():
        t = tasks.get(tid)
        if t is not None and t["state"] == "succeeded":
            by_song.setdefault(i, {})[t["op"]] = {**t, **{f"j_{k}": v for k, v in
                                                           jr.get(tid, {}).items()}}

    def release(t: dict[str, Any]) -> tuple[float, float | None, str]:
        """(release point in the fake's time, the journal's notice of it, the stage)."""
        if early and t["op"] in MUSIC and "j_first" in t:
            return t["t_submit"] + FIRST_AT * (t["t_ready"] - t["t_submit"]), \
                t["j_first"], "first"
        return t["t_ready"], t.get("j_done"), "complete"

    songs: list[Song] = []
    for i, ops in sorted(by_song.items()):
        if not all(o in ops for o in ("lyrics", "generate", "extend")):
            continue
        lasts = [o for o in (*ENDS, "extend") if o in ops and "j_done" in ops[o]]
        last = max(lasts, key=lambda o: ops[o]["j_done"])
        path = ["lyrics", "generate", "extend"] + ([last] if last != "extend" else [])
        s = Song(i, mj(ops[last]["j_done"]), m(ops["lyrics"]["t_submit"]), 0.0, last)
        for parent, child, link in zip(path, path[1:], LINKS, strict=False):
            p, c = ops[parent], ops[child]
            at, seen, stage = release(p)
            s.service += (at - p["t_submit"]) / scale
            seen_m = mj(seen) if seen is not None else m(at)
            intent = mj(c["j_intent"]) if "j_intent" in c else m(c["t_submit"])
            s.gaps[link] = {"notice": seen_m - m(at), "local": intent - seen_m,
                            "pace": m(c["t_submit"]) - intent}
            if (p["task_id"], stage) in deliveries:
                s.delivery[link] = m(deliveries[(p["task_id"], stage)]) - m(at)
        x = ops[path[-1]]
        s.service += (x["t_ready"] - x["t_submit"]) / scale
        s.finish = s.end - m(x["t_ready"])
        songs.append(s)
    return songs, m(t_last)


def _stats(xs: list[float]) -> str:
    xs = sorted(xs)
    return (f"{statistics.mean(xs):.1f} | {statistics.median(xs):.1f} | "
            f"{xs[int(0.9 * (len(xs) - 1))]:.1f} | {xs[-1]:.1f}")


def report(songs: list[Song], run_end: float, top: int = 5) -> list[str]:
    """Markdown: the last songs one by one, then the distribution over songs."""
    out = [
        f"Run: first to last request {run_end:.1f} model s; the last song ends at "
        f"{max(s.end for s in songs):.1f}.",
        "",
        "| song | last task | end | start | service | "
        + " | ".join(f"{lk} {p}" for lk in LINKS for p in PARTS)
        + " | end: ready to done |",
        "|---" * (6 + len(LINKS) * len(PARTS)) + "|",
    ]
    for s in sorted(songs, key=lambda s: -s.end)[:top]:
        out.append(
            f"| {s.index + 1} | {s.last} | {s.end:.1f} | {s.start:.1f} | {s.service:.1f} | "
            + " | ".join(f"{s.gaps.get(lk, {}).get(p, 0.0):.1f}" for lk in LINKS
                         for p in PARTS)
            + f" | {s.finish:.1f} |")
    out += ["", "Over all songs (model s): mean | median | p90 | max", "",
            "| part | mean | median | p90 | max |", "|---|---|---|---|---|"]
    rows: list[tuple[str, list[float]]] = [
        ("end", [s.end for s in songs]),
        ("start (before the lyrics submit)", [s.start for s in songs]),
        ("service latency on the chain", [s.service for s in songs]),
        ("all gaps", [s.gaps_total for s in songs]),
    ]
    for lk in LINKS:
        for p in PARTS:
            rows.append((f"{lk}: {p}", [s.gaps.get(lk, {}).get(p, 0.0) for s in songs
                                        if lk in s.gaps]))
        dl = [s.delivery[lk] for s in songs if lk in s.delivery]
        if dl:
            rows.append((f"{lk}: of which callback delivery", dl))
    rows.append(("end: last ready to done", [s.finish for s in songs]))
    for name, xs in rows:
        if xs:
            out.append(f"| {name} | {_stats(xs)} |")
    return out


def ladder(run: Path, scale: float, span: float, early: bool) -> list[str]:
    """From DESIGN's critical path to the run, each step a reason (album_bound)."""
    rec = json.loads((run / "fake.json").read_text())
    chains_ = analyse(rec["tasks"], rec["log"], scale).chains
    fa, polls = (FIRST_AT, False) if early else (None, True)
    rows = [
        ("critical path (every song starts at 0)", critical_path(chains_, fa)),
        ("rate-aware lower bound", rate_aware_bound(chains_, fa, polls=polls)),
        ("clairvoyant schedule (knows the draws)", clairvoyant(chains_, fa, polls=polls)),
        ("longest expected remaining first (sunoflow's order), perfect execution"
         + (", polls at ready" if polls else ""), expected_first(chains_, fa, polls=polls)),
        ("this run: first to last request", span),
    ]
    cp = rows[0][1]
    return ["| | model s | vs critical path |", "|---|---|---|"] + [
        f"| {name} | {v:.1f} | {v / cp:.3f} |" for name, v in rows]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("run", type=Path)
    p.add_argument("scale", type=float)
    p.add_argument("--top", type=int, default=5)
    args = p.parse_args(argv)
    early = any("first" in j for j in _journal(args.run / "state" / "journal.jsonl").values())
    songs, end = chains(args.run, args.scale, early)
    print("\n".join(ladder(args.run, args.scale, end, early) + [""]
                    + report(songs, end, args.top)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
