"""Shared pieces of the album benchmark: the album, the fake's latency model, the fake as a
subprocess, and what the fake's records say (lower bound, requests, duplicates).

Times come in two units: *model* seconds (what the service takes: a song ~150 s) and *wall*
seconds (model seconds times the scale). The fake draws each task's latency in model
seconds and completes it after `latency * latency_scale` wall seconds.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

KEY = "sk-bench-album"
RATE_REQUESTS = 20  # the service's limit: 20 requests per 10 s (REFERENCE 1.3)
RATE_SECONDS = 10.0
POLL_INTERVAL = 10.0  # sunoflow's defaults (runner.recipe.model.Provider), in model seconds
MAX_POLL_INTERVAL = 60.0
SEED = 7

# Model seconds, lognormal-ish per operation (REFERENCE 1.3: downloadable URLs in 2-3 min,
# streams at ~30-40 s: the fake streams at a quarter of a music task, ~37 s here).
LATENCY: dict[str, dict[str, Any]] = {
    "lyrics": {"dist": "lognormal", "median": 10.0, "sigma": 0.3, "min": 4.0, "max": 30.0},
    "generate": {"dist": "lognormal", "median": 150.0, "sigma": 0.2, "min": 90.0, "max": 300.0},
    "extend": {"dist": "lognormal", "median": 150.0, "sigma": 0.2, "min": 90.0, "max": 300.0},
    "wav": {"dist": "lognormal", "median": 30.0, "sigma": 0.3, "min": 10.0, "max": 90.0},
    "mp4": {"dist": "lognormal", "median": 60.0, "sigma": 0.3, "min": 20.0, "max": 180.0},
    "separate_vocal": {
        "dist": "lognormal",
        "median": 90.0,
        "sigma": 0.3,
        "min": 30.0,
        "max": 240.0,
    },
}

STYLES = [
    "indie folk",
    "surf rock",
    "synth pop",
    "lo-fi hip hop",
    "dream pop",
    "bossa nova",
    "garage rock",
    "chillwave",
    "americana",
    "city pop",
]
THEMES = [
    "first light",
    "heat",
    "the last train",
    "rain on tin",
    "a long drive",
    "old friends",
    "the harbour",
    "winter coats",
    "a radio",
    "the night shift",
]


def song(i: int) -> dict[str, Any]:
    return {
        "i": i,
        "title": f"Song {i + 1:04d}",
        "style": STYLES[i % len(STYLES)],
        "theme": f"{THEMES[i % len(THEMES)]} number {i + 1}",
    }


def lyrics_prompt(s: dict[str, Any]) -> str:
    return f"A song about {s['theme']}"


EXTEND_PROMPT = "a soaring final chorus"
EXTEND_BACK = 10  # continue_at = the first take's duration - 10 s
VIDEO_AUTHOR = "The Band"


def has_stems(i: int) -> bool:
    """Every 10th song (the 10th, 20th, ...) also gets its vocals separated."""
    return i % 10 == 9


def recipe(n: int, scale: float) -> str:
    """The album as a sunoflow recipe: lyrics -> generate -> extend -> WAV for every song,
    a video of the first, stems of every 10th; pacing scaled to wall time."""
    songs = json.dumps([song(i) for i in range(n)])
    return f"""\
version: 1
name: bench-album
provider:
  kind: sunoapi
  rate_limit: {{requests: {RATE_REQUESTS}, per_seconds: {RATE_SECONDS * scale:.6g}}}
  poll_interval: {POLL_INTERVAL * scale:.6g}
  max_poll_interval: {MAX_POLL_INTERVAL * scale:.6g}
vars:
  songs: {songs}
steps:
  words:
    uses: lyrics
    for_each: "{{{{ vars.songs }}}}"
    with: {{prompt: "A song about {{{{ item.theme }}}}"}}
  song:
    uses: generate
    for_each: "{{{{ vars.songs }}}}"
    with:
      title: "{{{{ item.title }}}}"
      style: "{{{{ item.style }}}}"
      prompt: "{{{{ steps.words[index].text }}}}"
  long:
    uses: extend
    for_each: "{{{{ steps.song }}}}"
    with:
      audio: "{{{{ item.tracks[0] }}}}"
      continue_at: "{{{{ item.tracks[0].duration - {EXTEND_BACK} }}}}"
      prompt: {EXTEND_PROMPT}
  master:
    uses: convert
    for_each: "{{{{ steps.long }}}}"
    with: {{audio: "{{{{ item.tracks[0] }}}}", format: wav}}
  teaser:
    uses: video
    with: {{audio: "{{{{ steps.long[0].tracks[0] }}}}", author: {VIDEO_AUTHOR}}}
  stems:
    uses: separate
    for_each: "{{{{ steps.long }}}}"
    if: "{{{{ index % 10 == 9 }}}}"
    with: {{audio: "{{{{ item.tracks[0] }}}}"}}
outputs:
  - for_each: "{{{{ steps.master }}}}"
    path: "{{{{ '%04d' % (index + 1) }}}} - {{{{ vars.songs[index].title }}}}.wav"
    from: "{{{{ item.file }}}}"
    tags: {{title: "{{{{ vars.songs[index].title }}}}", album: Bench Album,
           track: "{{{{ index + 1 }}}}"}}
  - path: teaser.mp4
    from: "{{{{ steps.teaser.file }}}}"
"""


def fake_config(scale: float) -> dict[str, Any]:
    return {
        "latency": LATENCY,
        "latency_scale": scale,
        "seed": SEED,
        "api_key": KEY,
        "rate_limit": {"requests": RATE_REQUESTS, "per_seconds": RATE_SECONDS * scale},
    }


class Fake:
    """`python -m runner.fake` in its own process (its CPU is not the client's), with the
    control endpoints as methods."""

    def __init__(self, scale: float, workdir: Path, extra: dict[str, Any] | None = None) -> None:
        self.scale = scale
        cfg = workdir / f"fake-{time.monotonic_ns()}.json"
        cfg.write_text(json.dumps({**fake_config(scale), **(extra or {})}))
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "runner.fake",
                "--protocol",
                "sunoapi",
                "--port",
                "0",
                "--config",
                str(cfg),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http"):
            raise RuntimeError("the fake did not start")
        self.http = httpx.Client(base_url=self.url, timeout=120)

    def get(self, what: str) -> Any:
        return self.http.get(f"/_fake/{what}").json()

    def tasks(self) -> list[dict[str, Any]]:
        return list(self.get("tasks"))

    def log(self) -> list[dict[str, Any]]:
        return list(self.get("log"))

    def now(self) -> float:
        return float(self.get("state")["now"])

    def close(self) -> None:
        self.http.close()
        self.proc.terminate()
        self.proc.wait(timeout=10)

    def __enter__(self) -> Fake:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["SUNO_API_KEY"] = KEY
    return env


@dataclass
class Usage:
    wall: float
    cpu: float  # user + system seconds of the child process
    maxrss_mb: float
    returncode: int


def run_child(
    cmd: list[str],
    *,
    cwd: Path | None = None,
    kill_after: float | None = None,
    stdout: Any = subprocess.DEVNULL,
) -> Usage:
    """Run a process and read its own rusage with wait4 (not RUSAGE_CHILDREN, which would
    mix in the fake). `kill_after` seconds: SIGKILL it then."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=child_env(), stdout=stdout, stderr=subprocess.PIPE)
    if kill_after is not None:
        try:
            proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, -9):
        sys.stderr.write(err.decode(errors="replace")[-3000:])
    return Usage(wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024, proc.returncode)


# --- what the fake's records say -------------------------------------------------------

SUBMIT_OPS = {"lyrics", "generate", "extend", "wav", "mp4", "separate_vocal"}


@dataclass
class Analysis:
    tasks: int
    api_requests: int  # every API request the fake saw, rejected ones included
    rate_limited: int  # answered "rate limit exceeded"
    downloads: int
    min_downloads: int  # files the album needs: 2 audio + 2 images per music task, ...
    submits: int  # POSTs to paid endpoints (answered or not)
    duplicates: int  # tasks created for a step that already had one
    critical_path: float  # wall seconds, from the latencies the fake drew
    rate_bound: float  # wall seconds: `per_task` requests per task through the window
    span: float  # first to last request the fake saw, wall seconds
    per_op: dict[str, int] = field(default_factory=dict)
    chains: dict[int, dict[str, float]] = field(default_factory=dict)  # model s, per song
    per_task: int = 2  # requests a task needs at least: submit + final poll, or 1 (callbacks)

    @property
    def min_requests(self) -> int:
        return 2 * self.tasks + self.min_downloads

    @property
    def requests(self) -> int:
        return self.api_requests + self.downloads

    @property
    def bound(self) -> float:
        return max(self.critical_path, self.rate_bound)

    @property
    def binds(self) -> str:
        return "rate limit" if self.rate_bound >= self.critical_path else "critical path"


FILES_PER_TASK = {"lyrics": 0, "generate": 4, "extend": 4, "wav": 1, "mp4": 1, "separate_vocal": 2}


def rate_bound(requests: int, scale: float) -> float:
    """Wall seconds the sliding window needs for `requests` requests: request k (0-based)
    cannot go out before floor(k / R) windows have passed."""
    if requests <= 0:
        return 0.0
    return math.floor((requests - 1) / RATE_REQUESTS) * RATE_SECONDS * scale


def critical_path(chains: dict[int, dict[str, float]], first_at: float | None = None) -> float:
    """The longest song chain in model seconds (see `analyse` for `first_at`)."""
    f = 1.0 if first_at is None else first_at
    return max(
        (
            c.get("lyrics", 0.0)
            + f * c.get("generate", 0.0)
            + max(
                c.get("extend", 0.0),
                f * c.get("extend", 0.0)
                + max(c.get("wav", 0.0), c.get("mp4", 0.0), c.get("separate_vocal", 0.0)),
            )
            for c in chains.values()
        ),
        default=0.0,
    )


def songs_of(
    tasks: list[dict[str, Any]], log: list[dict[str, Any]]
) -> tuple[dict[str, int], Counter[tuple[str, str]]]:
    """Which song (0-based) each task belongs to, from the submit bodies: the lyrics prompt
    ends with the theme's "number N", generate carries the title "Song NNNN", extend names
    its parent's clip and the other operations its parent's task. Also how many tasks each
    submission identity (operation, what it names) created: more than one is a duplicate."""
    clip_task = {c: t["task_id"] for t in tasks for c in t["clips"]}
    song_of: dict[str, int] = {}
    identity: Counter[tuple[str, str]] = Counter()
    for e in log:  # the whole log: a resumed run's tasks may chain to earlier ones
        tid, body, op = e.get("task_id"), e.get("json") or {}, e.get("op")
        if not tid or op not in SUBMIT_OPS:
            continue
        if op == "lyrics":
            i = int(body["prompt"].rsplit(" ", 1)[1]) - 1
            ident = body["prompt"]
        elif op == "generate":
            i = int(body["title"].split()[1]) - 1
            ident = body["title"]
        else:
            parent = clip_task.get(body["audioId"]) if op == "extend" else body["taskId"]
            i = song_of.get(parent or "", -1)
            ident = body["audioId"]
        song_of[tid] = i
        identity[(op, ident)] += 1
    return song_of, identity


def analyse(
    tasks: list[dict[str, Any]], log: list[dict[str, Any]], scale: float, since: float = -math.inf,
    first_at: float | None = None, polls: bool = True,
) -> Analysis:
    """Figures for the requests the fake logged at or after `since` (its clock) and the tasks
    those requests created; the lower bound is over every task of the album.

    `first_at`: a client that starts the next step of a song when the music task reports its
    first track (a `first` callback, at this fraction of the task's run) has a shorter
    critical path: every step after generate and extend reads only `tracks[0]`, so a song
    takes lyrics + first_at * generate + the longer of (extend) and (first_at * extend +
    its WAV, video or stems).

    `polls`: the rate-limit bound counts a submit and a final poll per task (DESIGN
    section 6); False for a client with callbacks, whose minimum is the submit alone (the
    callback is not a request)."""
    entries = [e for e in log if e["t"] >= since]
    by_id = {t["task_id"]: t for t in tasks}
    song_of, identity = songs_of(tasks, log)
    duplicates = sum(n - 1 for n in identity.values())
    chains: dict[int, dict[str, float]] = defaultdict(dict)
    for tid, i in song_of.items():
        t = by_id.get(tid)
        if t is None or t["state"] == "failed":
            continue
        chains[i][t["op"]] = t["latency"]
    critical = scale * critical_path(chains, first_at)
    n_tasks = sum(1 for t in tasks if t["op"] in SUBMIT_OPS)
    created = {e["task_id"] for e in entries if e.get("task_id")}
    new_tasks = [by_id[t] for t in created if t in by_id]
    api = [e for e in entries if e["op"] != "download"]
    limited = [e for e in api if e.get("envelope_code") in (405, 429)]
    times = [e["t"] for e in entries]
    return Analysis(
        tasks=len(new_tasks),
        api_requests=len(api),
        rate_limited=len(limited),
        downloads=sum(1 for e in entries if e["op"] == "download"),
        min_downloads=sum(FILES_PER_TASK.get(t["op"], 0) for t in new_tasks),
        submits=sum(1 for e in api if e["method"] == "POST"),
        duplicates=duplicates,
        critical_path=critical,
        rate_bound=rate_bound((2 if polls else 1) * n_tasks, scale),
        span=(max(times) - min(times)) if times else 0.0,
        per_op=dict(Counter(e["op"] for e in entries)),
        chains=dict(chains),
        per_task=2 if polls else 1,
    )
