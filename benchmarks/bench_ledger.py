"""What `--cache` costs per step: requests to the cache and wall time, measured on the CLI.

    python benchmarks/bench_ledger.py [SONGS] [RUNS]    # default 10 songs, 3 runs; medians
    python benchmarks/bench_ledger.py --cycle [KEYS]     # one paid step's ledger work alone

An album of SONGS songs (lyrics, generate, WAV: three paid steps a song, plus a local
normalize) runs against the sunoapi fake with instant tasks (latency 0, so what is left is
sunoflow's own work and the cache's), on a fresh state directory each time:

- `plain`: no cache;
- `first`: with an empty S3 cache (moto's server on loopback): every paid key is claimed,
  its task id recorded, every file pushed and every key's record published;
- `second`: another fresh state directory with the same cache (a second machine): every
  key is adopted from the cache's records and every file pulled, nothing paid.

`--cycle` times what the ledger adds to one paid step on its own, one step after another
(no concurrency to hide it): acquire (the done record, the claim list, the create-only
claim), the task id, the done record; then a second runner's adoption of the same key;
on moto's S3 server and on a local folder.

It prints the cache requests of each kind (from the run's JSON report, `cache.requests`),
per step instance, and the wall time of each run. moto's server is Python on loopback,
slower per request than S3 in the same region but without the network's round trip:
scale the seconds by your round trip (a request of the ledger is one round trip).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

KEY = "sk-bench-ledger"


def recipe(songs: int) -> str:
    return f"""\
version: 1
name: ledger-bench
provider: {{kind: sunoapi, poll_interval: 0.05, max_poll_interval: 0.2,
           rate_limit: {{requests: 100000, per_seconds: 1}}}}
vars:
  n: {list(range(songs))}
steps:
  words:
    uses: lyrics
    for_each: "{{{{ vars.n }}}}"
    with: {{prompt: "song number {{{{ item }}}}"}}
  song:
    uses: generate
    for_each: "{{{{ steps.words }}}}"
    take: 0
    with: {{title: "Track {{{{ index }}}}", style: synthwave, prompt: "{{{{ item.text }}}}"}}
  master:
    uses: convert
    for_each: "{{{{ steps.song }}}}"
    with: {{audio: "{{{{ item.tracks[0] }}}}", format: wav}}
  loud:
    uses: normalize
    for_each: "{{{{ steps.master }}}}"
    with: {{audio: "{{{{ item.tracks[0] }}}}"}}
"""


def one(folder: Path, url: str, state: str, cache: str | None,
        env: dict[str, str]) -> tuple[float, dict[str, int]]:
    args = [sys.executable, "-m", "runner", "run", str(folder / "r.yaml"), "--base-url", url,
            "--state-dir", str(folder / state), "--out", str(folder / f"out-{state}"), "-q",
            "--report", str(folder / f"{state}.json"), "--cache", cache or ""]
    t0 = time.perf_counter()
    subprocess.run(args, env=env, check=True)
    took = time.perf_counter() - t0
    rep = json.loads((folder / f"{state}.json").read_text())
    return took, rep.get("cache", {}).get("requests", {})


def main() -> None:
    from runner.fake import FakeServer
    from tests.s3server import S3Server

    songs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    steps = songs * 4
    times: dict[str, list[float]] = {"plain": [], "first": [], "second": []}
    reqs: dict[str, dict[str, int]] = {}
    for _ in range(runs):
        s3 = S3Server()
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SUNOFLOW_"))}
        env = {**base, "SUNO_API_KEY": KEY, **s3.env()}
        try:
            with tempfile.TemporaryDirectory() as d, FakeServer("sunoapi", api_key=KEY) as srv:
                folder = Path(d)
                (folder / "r.yaml").write_text(recipe(songs))
                for name, cache, state in (("plain", None, "p"), ("first", s3.url, "a"),
                                           ("second", s3.url, "b")):
                    took, r = one(folder, srv.url, state, cache, env)
                    times[name].append(took)
                    reqs[name] = r
        finally:
            s3.stop()
    print(f"{songs} songs, {steps} step instances ({songs * 3} paid), {runs} runs, medians")
    for name in times:
        r = reqs.get(name, {})
        total = sum(r.values())
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(r.items())) or "none"
        print(f"  {name:<6} {statistics.median(times[name]):6.2f} s   cache requests: {total} "
              f"({total / steps:.2f} per step: {kinds})")
    extra = statistics.median(times["first"]) - statistics.median(times["plain"])
    print(f"  the first run's extra wall time: {extra:+.2f} s, {extra / steps * 1000:+.1f} ms "
          "per step")


def cycle(keys: int) -> None:
    import anyio

    from runner.store.cache import open_cache
    from runner.store.claims import Ledger
    from tests.s3server import S3Server

    async def measure(url: str) -> tuple[float, float, dict[str, int], dict[str, int]]:
        a, b = Ledger(open_cache(url), "a"), Ledger(open_cache(url), "b")
        t0 = time.perf_counter()
        for i in range(keys):
            k = f"{i:032x}"
            verdict = await a.acquire(k, f"s[{i}]", takeover=True)
            assert verdict.claim is not None
            await verdict.claim.task(f"task-{i}")
            await a.finish({"v": 1, "key": k, "step": f"s[{i}]", "task_ids": [f"task-{i}"],
                            "credits": None, "outputs": {"text": "x"}, "files": []})
        paid = (time.perf_counter() - t0) / keys
        t0 = time.perf_counter()
        for i in range(keys):
            assert (await b.acquire(f"{i:032x}", "s", takeover=True)).kind == "done"
        adopted = (time.perf_counter() - t0) / keys
        return paid, adopted, a.cache.stats.requests, b.cache.stats.requests

    s3 = S3Server()
    os.environ.update(s3.env())
    try:
        with tempfile.TemporaryDirectory() as d:
            for name, url in (("moto S3", s3.url), ("folder", f"file://{d}/c")):
                paid, adopted, ra, rb = anyio.run(measure, url)
                per = {k: v / keys for k, v in sorted(ra.items())}
                print(f"{name}: a paid step {paid * 1000:.1f} ms "
                      f"({sum(ra.values()) / keys:.0f} requests: "
                      + ", ".join(f"{k} {v:g}" for k, v in per.items())
                      + f"); adopting a done key {adopted * 1000:.1f} ms "
                      f"({sum(rb.values()) / keys:.0f} request)")
    finally:
        s3.stop()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--cycle"]:
        cycle(int(sys.argv[2]) if len(sys.argv) > 2 else 200)
    else:
        main()
