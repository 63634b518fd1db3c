"""The two baselines of the album benchmark, as a plain client would write them.

    python benchmarks/album_baselines.py sequential|pool URL SONGS SCALE OUTDIR [WORKERS]

- sequential: one song after another, one task at a time; after each submit, sleep 30 s
  then poll, until done (the provider's quick-start sample: "sleep 30 s").
- pool: a thread pool of WORKERS (default 20) around one httpx.Client; each worker takes the
  next song and runs its chain, polling every 10 s; a song's last tasks (WAV, and the video
  or stems where the album has them) are submitted together and polled in one loop.

Both make the requests the service needs (the same endpoints and bodies as sunoflow) and
download every file sunoflow downloads (both takes' audio and artwork, the WAV, the video,
the vocal and instrumental stems) into OUTDIR. A "rate limit exceeded" answer is retried
after 2 s (model time). Times are model seconds multiplied by SCALE. Prints one JSON line.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from album_common import (  # noqa: E402 (a script beside its helper)
    EXTEND_BACK,
    EXTEND_PROMPT,
    KEY,
    VIDEO_AUTHOR,
    has_stems,
    lyrics_prompt,
    song,
)

CALLBACK = "https://localhost.invalid/callback"
V1 = "/api/v1"
RATE_LIMITED = (405, 429)  # classic / newer endpoints; credits are ample in the fake


class Client:
    def __init__(self, url: str, scale: float, out: Path, workers: int) -> None:
        self.http = httpx.Client(
            base_url=url,
            timeout=60,
            headers={"Authorization": f"Bearer {KEY}"},
            limits=httpx.Limits(max_connections=workers + 4),
        )
        self.scale, self.out = scale, out
        self.lock = threading.Lock()
        self.count = 0

    def sleep(self, model_seconds: float) -> None:
        time.sleep(model_seconds * self.scale)

    def api(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        while True:
            env = self.http.request(method, path, **kw).json()
            if env.get("code") not in RATE_LIMITED:
                if env.get("code") != 200:
                    raise RuntimeError(f"{method} {path}: {env}")
                return dict(env["data"])
            self.sleep(2.0)

    def submit(self, path: str, body: dict[str, Any]) -> str:
        return str(self.api("POST", path, json={**body, "callBackUrl": CALLBACK})["taskId"])

    def done(self, kind: str, task_id: str) -> dict[str, Any] | None:
        """One poll: the details when the task is finished, else None."""
        path = {
            "lyrics": f"{V1}/lyrics/record-info",
            "music": f"{V1}/generate/record-info",
            "wav": f"{V1}/wav/record-info",
            "mp4": f"{V1}/mp4/record-info",
            "stems": f"{V1}/vocal-removal/record-info",
        }[kind]
        data = self.api("GET", path, params={"taskId": task_id})
        state = data.get("status") or data.get("successFlag")
        if state == "SUCCESS":
            return data
        if state not in ("PENDING", "TEXT_SUCCESS", "FIRST_SUCCESS"):
            raise RuntimeError(f"task {task_id} failed: {state}")
        return None

    def wait(self, kind: str, task_id: str, interval: float) -> dict[str, Any]:
        while True:
            self.sleep(interval)
            data = self.done(kind, task_id)
            if data is not None:
                return data

    def fetch(self, url: str) -> None:
        resp = self.http.get(url)
        resp.raise_for_status()
        with self.lock:
            self.count += 1
            n = self.count
        (self.out / f"{n:06d}{Path(url.split('?')[0]).suffix}").write_bytes(resp.content)

    def fetch_music(self, data: dict[str, Any]) -> dict[str, Any]:
        items = data["response"]["sunoData"]
        for it in items:
            self.fetch(it["audioUrl"])
            self.fetch(it["imageUrl"])
        return dict(items[0])

    # -- the chain of one song ------------------------------------------------------------

    def head(self, i: int, interval: float) -> tuple[str, dict[str, Any]]:
        """lyrics -> generate -> extend: (the extend task id, its first take)."""
        s = song(i)
        tid = self.submit(f"{V1}/lyrics", {"prompt": lyrics_prompt(s)})
        text = self.wait("lyrics", tid, interval)["response"]["data"][0]["text"]
        tid = self.submit(
            f"{V1}/generate",
            {
                "customMode": True,
                "instrumental": False,
                "model": "V4_5",
                "prompt": text,
                "style": s["style"],
                "title": s["title"],
            },
        )
        first = self.fetch_music(self.wait("music", tid, interval))
        tid = self.submit(
            f"{V1}/generate/extend",
            {
                "audioId": first["id"],
                "defaultParamFlag": True,
                "model": "V4_5",
                "continueAt": first["duration"] - EXTEND_BACK,
                "style": s["style"],
                "title": s["title"],
                "prompt": EXTEND_PROMPT,
            },
        )
        return tid, self.fetch_music(self.wait("music", tid, interval))

    def tails(self, i: int, tid: str, take: dict[str, Any]) -> list[tuple[str, str, str]]:
        """The derived products of a song: [(kind, submit path, extra body)]."""
        ids = {"taskId": tid, "audioId": take["id"]}
        out = [("wav", f"{V1}/wav/generate", json.dumps(ids))]
        if i == 0:
            out.append(("mp4", f"{V1}/mp4/generate", json.dumps({**ids, "author": VIDEO_AUTHOR})))
        if has_stems(i):
            out.append(
                (
                    "stems",
                    f"{V1}/vocal-removal/generate",
                    json.dumps({**ids, "type": "separate_vocal"}),
                )
            )
        return out

    def fetch_tail(self, kind: str, data: dict[str, Any]) -> None:
        r = data["response"]
        urls = {
            "wav": [r.get("audioWavUrl")],
            "mp4": [r.get("videoUrl")],
            "stems": [r.get("vocalUrl"), r.get("instrumentalUrl")],
        }[kind]
        for u in urls:
            if u:
                self.fetch(u)

    def sequential_song(self, i: int) -> None:
        tid, take = self.head(i, 30.0)
        for kind, path, body in self.tails(i, tid, take):
            t = self.submit(path, json.loads(body))
            self.fetch_tail(kind, self.wait(kind, t, 30.0))

    def pool_song(self, i: int) -> None:
        tid, take = self.head(i, 10.0)
        pending = {
            self.submit(path, json.loads(body)): kind
            for kind, path, body in self.tails(i, tid, take)
        }
        while pending:
            self.sleep(10.0)
            for t, kind in list(pending.items()):
                data = self.done(kind, t)
                if data is not None:
                    self.fetch_tail(kind, data)
                    del pending[t]


def main(argv: list[str]) -> int:
    mode, url, songs, scale, out = argv[0], argv[1], int(argv[2]), float(argv[3]), Path(argv[4])
    workers = int(argv[5]) if len(argv) > 5 else 20
    out.mkdir(parents=True, exist_ok=True)
    client = Client(url, scale, out, workers if mode == "pool" else 1)
    t0 = time.perf_counter()
    finished: list[float] = []
    if mode == "sequential":
        for i in range(songs):
            client.sequential_song(i)
            finished.append(time.perf_counter() - t0)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for f in [pool.submit(client.pool_song, i) for i in range(songs)]:
                f.result()
        finished.append(time.perf_counter() - t0)
    print(
        json.dumps({"wall": time.perf_counter() - t0, "files": client.count, "finished": finished})
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
