"""The fake's callbacks: POST each stage of a task to its callBackUrl when it falls due on
the fake's clock (configuration key `callbacks`).

A protocol schedules the stages of a task when it creates it; the courier thread sleeps
until the earliest is due (waking early when `POST /_fake/advance` moves the clock) and
hands it to a small pool of senders, so one slow receiver does not hold up the others.
The body is built when it is sent, from the task as it then stands. Every delivery is
recorded in `World.deliveries` (GET /_fake/callbacks).

Only loopback URLs are called (the fake stays off the network); any other URL, a lost
delivery, a refused connection, a timeout or a non-2xx answer is a failed delivery, and a
failed last stage sets `Task.callback_failed`, which record-info reports as
CALLBACK_EXCEPTION (REFERENCE 2.22).
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from runner.fake.state import Task, World

Build = Callable[[Task, str, str], dict[str, Any]]  # (task, stage, base URL) -> body


@dataclass(frozen=True)
class Delivery:
    task: Task
    stage: str
    url: str
    base: str  # this server's address as the submit saw it, for file URLs in the body
    last: bool  # the task's final stage (complete or error)
    copy: int  # 0 for the original, 1 for a duplicate
    lost: bool


def loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Courier:
    def __init__(self, world: World, build: Build) -> None:
        self.world = world
        self.build = build
        self.seq = itertools.count()
        self.thread: threading.Thread | None = None
        self.pool: ThreadPoolExecutor | None = None
        # One client for every sender (httpx clients are thread-safe), made when the first
        # task is scheduled: a client per sender thread, made on its first callback, cost
        # each first callback a fresh SSL context, seconds in all on a busy machine.
        self.client: httpx.Client | None = None

    def schedule(self, task: Task, url: str, base: str, stages: list[tuple[float, str]]) -> None:
        """Queue `stages`: (fraction of the task's run at which it is reached, name)."""
        world = self.world
        with world.lock:
            spec = world.config["callbacks"]
            if spec is None:
                return
            rng = world.callback_rng
            for i, (fraction, stage) in enumerate(stages):
                last = i == len(stages) - 1
                copies = 2 if rng.random() < spec["duplicate"] else 1
                for copy in range(copies):
                    due = task.created + fraction * task.wall + spec["delay"]
                    due += rng.uniform(0.0, spec["jitter"])
                    lost = rng.random() < spec["loss"]
                    item = Delivery(task, stage, url, base, last, copy, lost)
                    heapq.heappush(world.outbox, (due, next(self.seq), item))
            world.changed.notify_all()
            self._start()

    def _start(self) -> None:
        if self.thread is None or not self.thread.is_alive():
            self.pool = self.pool or ThreadPoolExecutor(8, thread_name_prefix="fake-callback")
            self.client = self.client or httpx.Client(
                trust_env=False, limits=httpx.Limits(max_connections=16))
            self.thread = threading.Thread(target=self._run, name="fake-courier", daemon=True)
            self.thread.start()

    def _run(self) -> None:
        world = self.world
        with world.changed:
            while not world.stopping.is_set():
                now = world.now()
                if world.outbox and world.outbox[0][0] <= now:
                    _, _, item = heapq.heappop(world.outbox)
                    assert self.pool is not None
                    self.pool.submit(self._send, item)
                    continue
                wait = world.outbox[0][0] - now if world.outbox else None
                world.changed.wait(timeout=wait)
        # Outside the world's lock, which the senders take to record their deliveries.
        if self.pool is not None:
            # Deliveries not begun are dropped; those on the wire end (loopback: quickly)
            # before their client is closed.
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
        if self.client is not None:
            self.client.close()
            self.client = None

    def _send(self, item: Delivery) -> None:
        world = self.world
        with world.lock:
            spec = world.config["callbacks"] or {}
            body = self.build(item.task, item.stage, item.base)
        record: dict[str, Any] = {
            "t": round(world.now(), 6), "task_id": item.task.id, "stage": item.stage,
            "url": item.url, "copy": item.copy, "status": None, "error": None,
        }
        if item.lost:
            record["error"] = "lost"
        elif not loopback(item.url):
            record["error"] = "not sent: the fake only calls back to loopback"
        else:
            try:
                assert self.client is not None
                resp = self.client.post(item.url, json=body,
                                        timeout=float(spec.get("timeout", 15.0)))
                record["status"] = resp.status_code
                if not 200 <= resp.status_code < 300:
                    record["error"] = f"HTTP {resp.status_code}"
            except httpx.HTTPError as exc:
                record["error"] = f"{type(exc).__name__}: {exc}"
        with world.lock:
            world.deliveries.append(record)
            if record["error"] and item.last and item.copy == 0 and item.task.fail is None:
                item.task.callback_failed = True
