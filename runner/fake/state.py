"""What the fake remembers: tasks, clips, files, credits, the request log, fault counters.

One `World` per server. Every method that reads or changes it takes `World.lock` (an
RLock, so protocol code may call several methods inside one `with world.lock:`).
Time is `World.now()`: monotonic seconds since start plus an offset that
`POST /_fake/advance` moves, so tests can walk a task through its states without sleeping.
"""

from __future__ import annotations

import copy
import random
import string
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from runner.fake import config as cfg
from runner.fake import media


class NoCredits(Exception):
    """The balance is below the operation's price; the protocol picks the error code."""


# The stages of a music task, as fractions of its run: stream URLs and the text at about a
# quarter (30-40 s of 2-3 min, REFERENCE 1.3), the first clip finished at three quarters.
TEXT_AT = 0.25
FIRST_AT = 0.75

@dataclass
class Clip:
    id: str
    task_id: str
    title: str
    tags: str
    lyrics: str
    model: str  # the request's model (`V4_5`) or the relay's `mv`
    model_name: str  # the service's internal name (`chirp-v4-5`)
    duration: float
    instrumental: bool
    created: float
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Task:
    id: str
    op: str
    protocol: str
    created: float
    latency: float  # model seconds, as drawn
    wall: float  # latency * latency_scale at creation: when the task completes
    params: dict[str, Any]
    price: int
    fail: dict[str, Any] | None = None  # {"status", "code", "message"} once done
    clips: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    refunded: bool = False
    callback_failed: bool = False  # the last stage's callback was not delivered
    lag_refused: int = 0  # work refused while the record lagged (`record_lag_refusals`)

    @property
    def ends(self) -> float:
        """When the task completes, on the fake's clock."""
        return self.created + self.wall

    def fraction(self, now: float) -> float:
        if self.wall <= 0:
            return 1.0
        return min(1.0, max(0.0, (now - self.created) / self.wall))

    def first_ready(self, now: float) -> bool:
        """A music task's first clip is finished (FIRST_SUCCESS): the service reports it,
        and it can be extended, converted or separated like a finished one."""
        return self.fail is None and self.fraction(now) >= FIRST_AT

    def done(self, now: float) -> bool:
        return self.fraction(now) >= 1.0

    def succeeded(self, now: float) -> bool:
        return self.done(now) and self.fail is None


@dataclass
class Resource:
    """A file under /files/: generated media (`fmt` + `duration`) or stored bytes."""

    fmt: str
    duration: float = 0.0
    data: bytes | None = None
    mime: str | None = None

    def content(self) -> bytes:
        return self.data if self.data is not None else media.render(self.fmt, self.duration)

    def content_type(self) -> str:
        return self.mime or media.MIME.get(self.fmt, "application/octet-stream")


def sanitize(body: Any) -> Any:
    """The request body as logged: file payloads shortened to their size."""
    if isinstance(body, dict) and isinstance(body.get("base64Data"), str):
        body = dict(body)
        body["base64Data"] = f"<{len(body['base64Data'])} chars>"
    return copy.deepcopy(body)


class World:
    def __init__(self, protocol: str, config: dict[str, Any]) -> None:
        self.protocol = protocol
        self.lock = threading.RLock()
        # Notified when the clock jumps, the configuration changes or the server stops:
        # the callback courier waits on it for its next delivery.
        self.changed = threading.Condition(self.lock)
        self.stopping = threading.Event()  # set on shutdown; every sleep waits on it
        self.initial = cfg.validate(config)
        self.base_url = "http://127.0.0.1"
        self.reset()

    # -- configuration ---------------------------------------------------------------------

    def reset(self) -> None:
        """Forget every task, file and log entry, and return to the startup config."""
        with self.lock:
            self.config: dict[str, Any] = copy.deepcopy(self.initial)
            self._seed(self.config["seed"])
            self._t0 = time.monotonic()
            self._offset = 0.0
            self._epoch = time.time()
            self.log: list[dict[str, Any]] = []
            self.tasks: dict[str, Task] = {}
            self.clips: dict[str, Clip] = {}
            self.resources: dict[str, Resource] = {}
            self.generation: dict[str, int] = {}
            self.expired: dict[tuple[str, int], int] = {}  # dead URL -> its status
            self.credits: int = self.config["credits"]
            self.fault_left: list[int | None] = [r.get("times") for r in self.config["faults"]]
            self.window: deque[float] = deque()
            self.refunds: list[Task] = []
            # Records that exist at most once: ("wav", audioId) -> task id, and so on.
            self.singletons: dict[tuple[str, str], str] = {}
            # Callbacks waiting for their time (a heap of (due, seq, delivery)) and what
            # became of those sent.
            self.outbox: list[tuple[float, int, Any]] = []
            self.deliveries: list[dict[str, Any]] = []
            self.changed.notify_all()

    def configure(self, patch: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            full = cfg.validate(cfg.merge(self.config, patch))
            self.config = full
            if "faults" in patch:
                self.fault_left = [r.get("times") for r in full["faults"]]
            if "seed" in patch:
                self._seed(full["seed"])
            if "credits" in patch:
                self.credits = full["credits"]
            self.changed.notify_all()
            return self.public_config()

    def _seed(self, seed: int) -> None:
        # Separate streams, so that adding a fault rule or a request does not shift the
        # latencies that a benchmark draws for the same sequence of submissions.
        self.rng = random.Random(f"{seed}-latency")
        self.id_rng = random.Random(f"{seed}-ids")
        self.fault_rng = random.Random(f"{seed}-faults")
        self.callback_rng = random.Random(f"{seed}-callbacks")

    def public_config(self) -> dict[str, Any]:
        with self.lock:
            out = copy.deepcopy(self.config)
        if out["api_key"] is not None:
            out["api_key"] = "***"
        return out

    # -- time and ids ----------------------------------------------------------------------

    def now(self) -> float:
        return time.monotonic() - self._t0 + self._offset

    def advance(self, seconds: float) -> float:
        with self.lock:
            self._offset += seconds
            self.changed.notify_all()
            return self.now()

    def wake(self) -> None:
        """Wake whatever waits on `changed` (on shutdown)."""
        with self.lock:
            self.changed.notify_all()

    def epoch_ms(self, t: float) -> int:
        return int((self._epoch + t) * 1000)

    def new_hex(self) -> str:
        with self.lock:
            return f"{self.id_rng.getrandbits(128):032x}"

    def new_uuid(self) -> str:
        with self.lock:
            return str(uuid.UUID(int=self.id_rng.getrandbits(128), version=4))

    def new_relay_id(self) -> str:
        alphabet = string.ascii_letters + string.digits
        with self.lock:
            return "task_" + "".join(self.id_rng.choice(alphabet) for _ in range(24))

    # -- credits, tasks, clips -------------------------------------------------------------

    def price(self, op: str) -> int:
        with self.lock:
            return cfg.price(self.config, op)

    def balance(self) -> int:
        with self.lock:
            self.settle()
            return self.credits

    def create_task(
        self,
        entry: dict[str, Any],
        fault: dict[str, Any] | None,
        *,
        task_id: str,
        op: str,
        params: dict[str, Any],
        refund_on_fail: str = "531",
        data: dict[str, Any] | None = None,
    ) -> Task:
        """Charge for `op` (or raise NoCredits), draw its latency and record the task.

        `refund_on_fail` says which failures give the credits back: "531" (sunoapi: only
        a failure with code 531) or "all" (the relay refunds every failed task).
        """
        with self.lock:
            self.settle()
            price = cfg.price(self.config, op)
            if price > self.credits:
                raise NoCredits(f"insufficient credits: {op} costs {price}, balance {self.credits}")
            self.credits -= price
            latency = cfg.draw_latency(self.rng, cfg.latency_spec(self.config, op))
            task = Task(
                id=task_id,
                op=op,
                protocol=self.protocol,
                created=self.now(),
                latency=latency,
                wall=latency * self.config["latency_scale"],
                params=params,
                price=price,
                data=data or {},
            )
            if fault is not None and "fail_task" in fault:
                task.fail = {
                    "status": fault["fail_task"],
                    "code": fault.get("code"),
                    "message": fault.get("message"),
                }
                if refund_on_fail == "all" or fault.get("code") == 531:
                    self.refunds.append(task)
            self.tasks[task_id] = task
            entry["task_id"] = task_id
            entry["latency"] = latency
            return task

    def settle(self) -> None:
        """Refund failed tasks whose failure has become visible."""
        with self.lock:
            now = self.now()
            for task in [t for t in self.refunds if t.done(now)]:
                self.credits += task.price
                task.refunded = True
                self.refunds.remove(task)

    def add_clip(self, clip: Clip) -> Clip:
        with self.lock:
            self.clips[clip.id] = clip
            self.tasks[clip.task_id].clips.append(clip.id)
            return clip

    def task(self, task_id: Any, ops: frozenset[str] | None = None) -> Task | None:
        with self.lock:
            task = self.tasks.get(task_id) if isinstance(task_id, str) else None
        if task is None or (ops is not None and task.op not in ops):
            return None
        return task

    # -- files -----------------------------------------------------------------------------

    def add_file(self, key: str, resource: Resource) -> None:
        with self.lock:
            self.resources[key] = resource

    def url(self, base: str, key: str) -> str:
        with self.lock:
            gen = self.generation.get(key, 1)
        return f"{base}/files/{key}?v={gen}"

    def lookup(self, key: str, version: str | None) -> tuple[Resource | None, int, int | None]:
        """(resource, generation asked for, the HTTP status if that generation expired)."""
        with self.lock:
            resource = self.resources.get(key)
            current = self.generation.get(key, 1)
            try:
                gen = int(version) if version is not None else current
            except ValueError:
                return None, current, None
            if resource is None or not 1 <= gen <= current:
                return None, gen, None
            return resource, gen, self.expired.get((key, gen))

    def so_far(self, key: str, resource: Resource) -> Resource:
        """What a stream link plays: while its music task runs, the part of the take made
        so far (its first half: real audio, shorter than the take, as a stream that is
        still growing); the whole take once the task has ended."""
        if not key.startswith("stream/") or resource.data is not None:
            return resource
        with self.lock:
            clip = self.clips.get(key[len("stream/"):].rsplit(".", 1)[0])
            task = self.tasks.get(clip.task_id) if clip is not None else None
        if task is None or task.done(self.now()):
            return resource
        return Resource(resource.fmt, resource.duration / 2)

    def expire(self, key: str, gen: int, status: int = 403) -> None:
        """Make this URL generation dead (as a CDN link past its date); mint a fresh one."""
        with self.lock:
            self.expired[(key, gen)] = status
            if self.generation.get(key, 1) == gen:
                self.generation[key] = gen + 1

    def expire_all(self, status: int = 403) -> int:
        """Every link handed out so far dies at once (as after the ~15 days result links
        live); the record-info recovery mints fresh ones. Returns how many died."""
        with self.lock:
            for key in self.resources:
                gen = self.generation.get(key, 1)
                self.expired[(key, gen)] = status
                self.generation[key] = gen + 1
            return len(self.resources)

    def own_resource(self, url: str, base: str) -> tuple[bool, Resource | None]:
        """(whether `url` points at this server's /files/, the live resource or None)."""
        parts = urlsplit(url)
        ours = {urlsplit(base).netloc, urlsplit(self.base_url).netloc}
        if parts.netloc not in ours or not parts.path.startswith("/files/"):
            return False, None
        version = dict(parse_qsl(parts.query)).get("v")
        resource, _, expired = self.lookup(unquote(parts.path)[len("/files/") :], version)
        return True, None if expired is not None else resource

    def duration_of(self, resource: Resource) -> float | None:
        """Seconds of audio in a resource; uploaded bytes are probed once with ffmpeg."""
        if resource.data is not None and resource.duration <= 0:
            probed = media.probe_duration(resource.data)
            if probed is None or probed <= 0:
                return None
            resource.duration = probed
        return resource.duration if resource.duration > 0 else None

    def charge(self, op: str) -> int:
        """Take the price of a synchronous operation (no task) or raise NoCredits."""
        with self.lock:
            self.settle()
            price = cfg.price(self.config, op)
            if price > self.credits:
                raise NoCredits(f"insufficient credits: {op} costs {price}, balance {self.credits}")
            self.credits -= price
            return price

    # -- request log, rate limit, faults ---------------------------------------------------

    def begin(
        self, method: str, path: str, query: dict[str, str], body: Any, op: str
    ) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "t": round(self.now(), 6),
            "method": method,
            "path": path,
            "query": query,
            "json": sanitize(body),
            "status": None,
            "envelope_code": None,
            "task_id": None,
            "op": op,
        }
        with self.lock:
            self.log.append(entry)
        return entry

    def annotate(self, entry: dict[str, Any], **fields: Any) -> None:
        """Add to a log entry; under the lock, since GET /_fake/log may be copying it."""
        with self.lock:
            entry.update(fields)

    def rate_ok(self) -> bool:
        """Count one API request against the sliding window; False when it is full."""
        with self.lock:
            limit = self.config["rate_limit"]
            if limit is None:
                return True
            now = self.now()
            while self.window and self.window[0] <= now - limit["per_seconds"]:
                self.window.popleft()
            if len(self.window) >= limit["requests"]:
                return False
            self.window.append(now)
            return True

    def pick_fault(self, method: str, path: str, op: str, body: Any) -> dict[str, Any] | None:
        """The action of the first matching rule that fires, counting it against `times`."""
        with self.lock:
            for i, rule in enumerate(self.config["faults"]):
                left = self.fault_left[i]
                if left is not None and left <= 0:
                    continue
                match = rule.get("match", {})
                if "method" in match and match["method"].upper() != method:
                    continue
                if "path" in match and not fnmatchcase(path, match["path"]):
                    continue
                if "op" in match and match["op"] != op:
                    continue
                if "json" in match and not (
                    isinstance(body, dict)
                    and all(body.get(k) == v for k, v in match["json"].items())
                ):
                    continue
                probability = rule.get("probability", 1.0)
                if probability < 1.0 and self.fault_rng.random() >= probability:
                    continue
                if left is not None:
                    self.fault_left[i] = left - 1
                return dict(rule["action"])
            return None

    # -- snapshots for the control endpoints -----------------------------------------------

    def snapshot_log(self) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(self.log)

    def snapshot_deliveries(self) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(self.deliveries)

    def snapshot_tasks(self) -> list[dict[str, Any]]:
        with self.lock:
            self.settle()
            now = self.now()
            out = []
            for task in self.tasks.values():
                state = "running"
                if task.done(now):
                    state = "failed" if task.fail else "succeeded"
                out.append(
                    {
                        "task_id": task.id,
                        "protocol": task.protocol,
                        "op": task.op,
                        "t_submit": round(task.created, 6),
                        "latency": task.latency,
                        "wall_latency": round(task.wall, 6),
                        "t_ready": round(task.ends, 6),
                        "state": state,
                        "fail_status": task.fail["status"] if task.fail else None,
                        "price": task.price,
                        "refunded": task.refunded,
                        "callback_failed": task.callback_failed,
                        "clips": list(task.clips),
                    }
                )
            return out
