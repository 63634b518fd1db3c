"""What the review page shows, read from the recipe, its takes file, the state directory
and the album folder: one card per song, the graph's nodes and the last run's timeline.
Nothing here writes or spends; `Album.load` is called for every page and live update, so
the page follows a `sunoflow run` writing the same state directory."""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner import paths
from runner.engine.force import rerun
from runner.plan import build as planner
from runner.plan.cost import price
from runner.plan.model import Instance, Plan
from runner.review.history import History, KeyHistory
from runner.review.history import read as read_history
from runner.store.journal import Store
from runner.store.status import resolve

BLOB = re.compile(r"[0-9a-f]{64}(\.[a-z0-9]{1,6})?\Z")
MUSIC = "music"


@dataclass
class Take:
    index: int  # 0 or 1: the recipe's `take:` value
    blob: str | None  # `<sha256><ext>` of the audio in the store, None when not stored
    duration: float | None
    title: str
    model: str
    task_id: str
    image: str | None  # `<sha256><ext>` of its cover art
    in_album: bool = False
    preview: bool = False  # a first take or a stream, before the task finished
    stream_url: str | None = None  # the service's stream before the task finished


@dataclass
class Card:
    id: str  # the music instance: `song[1]/whole`
    n: int  # 1-based position on the album
    title: str
    style: str
    lyrics: str
    state: str  # done | cached | running | failed | to run
    takes: list[Take]
    kept: int | None  # the take NAME.takes.yaml keeps, if any
    used: int  # the take the album uses
    cover: str | None
    uses: str
    credits: float | None
    task_ids: list[str]
    earlier: list[list[Take]]  # results before a reroll, newest first
    form: str  # freshness of this card's forms (stale form: 409)
    reroll_cost: float
    reroll_steps: list[str]
    price: float
    error: str | None = None
    # Keeping the other take re-makes what reads the song; these of them are paid.
    keep_paid: list[str] = field(default_factory=list)
    keep_cost: float = 0.0


@dataclass
class Node:
    id: str
    label: str
    state: str
    deps: list[str]
    paid: bool = False  # a submission of it costs credits on this provider


@dataclass
class Span:
    """One instance's bar on the timeline, in seconds from the run's start."""

    id: str
    queued: float
    sent: float | None  # the submit left the rate limiter
    submitted: float | None
    first: float | None
    finished: float | None
    done: float
    intent: float | None = None
    started: float | None = None  # local work: when it got a place on this machine
    running: bool = False  # still under way (live): drawn up to now
    critical: bool = False
    remote: bool = False


@dataclass
class Album:
    name: str
    recipe: Path
    provider: str
    cards: list[Card]
    nodes: list[Node]
    spans: list[Span]
    run_started: float | None
    counts: dict[str, int]
    out_files: list[str]
    version: str  # changes whenever anything the page shows may have
    takes_file: str
    notes: list[str] = field(default_factory=list)


def blob_name(path: Any) -> str | None:
    if not isinstance(path, str) or "/blobs/sha256/" not in path:
        return None
    name = path.rsplit("/", 1)[-1]
    return name if BLOB.match(name) else None


def signature(recipe_path: Path, state_dir: Path, out_dir: Path) -> str:
    """A cheap fingerprint of everything the page reads (sizes and times of the files)."""
    from runner.recipe import takes
    from runner.store import lock, previews

    parts = []
    for p in (recipe_path, takes.path_for(recipe_path), lock.path_for(recipe_path),
              state_dir / "journal.jsonl", out_dir / "manifest.json",
              state_dir / previews.FILE):
        try:
            st = p.stat()
            parts.append(f"{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            parts.append("-")
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]


def load(recipe_path: Path, state_dir: Path, out_dir: Path,
         overrides: dict[str, Any]) -> Album:
    from runner.recipe import takes
    from runner.store import previews

    version = signature(recipe_path, state_dir, out_dir)
    p = planner.check(recipe_path, overrides=overrides)
    r = p.recipe
    store = Store(state_dir).open(create=False)
    known = resolve(p, store) if state_dir.exists() else {}
    hist = read_history(state_dir / "journal.jsonl")
    states = {iid: _state(row, hist.of(row.get("key")), hist) for iid, row in known.items()}
    streams = previews.read(state_dir)
    # A song is "ready" whether made in the last run or before (the graph tells those
    # apart): so another song's reroll does not redraw this card under the listener.
    cards = [_card(p, n, inst, known.get(inst.id, {}), hist,
                   _song_state(states.get(inst.id, "to run")), r.takes, streams)
             for n, inst in enumerate(song_instances(p), 1)]
    nodes = [Node(i.id, f"{i.id}: {i.step.uses}", states.get(i.id, "to run"),
                  step_deps(p, i.id), price(p, i) > 0) for i in p.steps()]
    counts: dict[str, int] = {}
    for n in nodes:
        counts[n.state] = counts.get(n.state, 0) + 1
    spans = _timeline(p, known, hist)
    out_files = sorted(str(f.relative_to(out_dir)) for f in out_dir.rglob("*")
                       if f.is_file() and f.suffix.lower() in (".mp3", ".wav", ".flac", ".m4a")
                       and not any(part.startswith(".") for part in f.relative_to(out_dir).parts)
                       ) if out_dir.is_dir() else []
    return Album(r.name, recipe_path, r.provider.kind, cards, nodes, spans, hist.last_run,
                 counts, out_files, version, takes.path_for(recipe_path).name)


def song_instances(p: Plan) -> list[Instance]:
    """The songs: the music step instances that the album's files come from (the last
    music step before `outputs:`; every last music step when there are no outputs)."""
    music = {i.id for i in p.steps() if i.step.type is not None and i.step.type.pace == MUSIC}
    feeding = _feeding(p)
    later: dict[str, bool] = {}  # has a music instance downstream of it
    for inst in reversed(list(p.instances.values())):
        for d in inst.deps:
            if inst.id in music or later.get(inst.id):
                later[d] = True
    return [p.instances[i] for i in p.instances if i in music and not later.get(i)
            and (feeding is None or i in feeding)]


def _feeding(p: Plan) -> set[str] | None:
    """Every instance the album's files read, transitively; None when there are no
    outputs (every song is then shown)."""
    if not p.recipe.outputs:
        return None
    named: set[str] = set()
    for o in p.recipe.outputs:
        named |= set(re.findall(r"steps\.([a-z][a-z0-9_]*)", f"{o.from_} {o.for_each}"))
    seen = {iid for iid, inst in p.instances.items()
            if not inst.scope and inst.step.id in named and inst.kind != "enter"}
    stack = list(seen)
    while stack:
        for d in p.instances[stack.pop()].deps:
            if d not in seen:
                seen.add(d)
                stack.append(d)
    return seen


def _song_state(state: str) -> str:
    return "ready" if state in ("done", "cached") else state


def _state(row: dict[str, Any], kh: KeyHistory | None, hist: History) -> str:
    status = row.get("status", "unknown")
    if kh is not None and kh.status in ("intent", "submitted", "uncertain"):
        return "running"
    if kh is not None and kh.status == "failed" and status != "done":
        return "failed"
    if status == "done":
        made = kh.results[-1].get("times", {}).get("run") if kh and kh.results else None
        return "done" if made is not None and made == hist.last_run else "cached"
    if status == "in flight":
        return "running"
    if status == "skipped":
        return "skipped"
    return "to run"


def _takes(outputs: Any, used: int | None, preview: bool = False) -> list[Take]:
    tracks = outputs.get("tracks") if isinstance(outputs, dict) else None
    out = []
    for n, t in enumerate(tracks if isinstance(tracks, list) else []):
        if not isinstance(t, dict):
            continue
        dur = t.get("duration")
        try:
            duration = float(dur) if dur is not None else None
        except (TypeError, ValueError):
            duration = None
        stream = t.get("stream_url") or t.get("stream_audio_url")
        out.append(Take(n, blob_name(t.get("file")), duration, str(t.get("title") or ""),
                        str(t.get("model") or t.get("model_name") or ""),
                        str(t.get("task_id") or ""), blob_name(t.get("image_file")),
                        in_album=used == n, preview=preview,
                        stream_url=stream if isinstance(stream, str)
                        and paths.is_url(stream) else None))
    return out


def _card(p: Plan, n: int, inst: Instance, row: dict[str, Any], hist: History, state: str,
          kept_takes: dict[str, int], streams: dict[str, dict[str, Any]] | None = None
          ) -> Card:
    take = inst.step.take
    used = take if take in (0, 1) else 0
    kh = hist.of(row.get("key"))
    takes: list[Take] = []
    earlier: list[list[Take]] = []
    credits = None
    task_ids: list[str] = []
    error = None
    if kh is not None and kh.results and row.get("status") in ("done", "missing"):
        last = kh.results[-1]
        takes = _takes(last.get("outputs"), used)
        credits = last.get("credits")
        task_ids = list(last.get("task_ids") or [])
        # A result restored or re-fetched is the same result again: one entry per take.
        seen = {(t.task_id, t.blob) for t in takes}
        for old in reversed(kh.results[:-1]):
            olds = [t for t in _takes(old.get("outputs"), None)
                    if (t.task_id, t.blob) not in seen]
            seen |= {(t.task_id, t.blob) for t in olds}
            if olds:
                earlier.append(olds)
    elif kh is not None:
        # Live: a task under way may have its first take recorded (early release) or
        # stream links; both are previews, marked as such.
        firsts = [e for e in kh.events if e.get("e") == "first"]
        if firsts and state == "running":
            takes = _takes(firsts[-1].get("outputs"), None, preview=True)
        fails = [e for e in kh.events if e.get("e") == "failed"]
        if fails and state == "failed":
            error = str(fails[-1].get("error") or "failed")
        task_ids = [str(e["task_id"]) for e in kh.events if e.get("e") == "submitted"]
        if state == "running" and task_ids:
            # The links the run recorded for the task under way (runner.store.previews), one
            # player per take not already here as a first take; gone once the result is.
            entry = (streams or {}).get(task_ids[-1])
            have = {t.index for t in takes}
            for t in entry["tracks"] if entry and entry.get("key") == row.get("key") else []:
                if t["n"] in (0, 1) and t["n"] not in have:
                    have.add(t["n"])
                    takes.append(Take(t["n"], None, None, str(t.get("title") or ""), "",
                                      task_ids[-1], None, preview=True,
                                      stream_url=t["stream_url"]))
            takes.sort(key=lambda t: t.index)
    first = _lyrics_source(p, inst, hist)
    t0 = takes[used] if len(takes) > used else (takes[0] if takes else None)
    title = (t0.title if t0 else "") or str(p.static_value(inst, "title", "") or "") \
        or _title_from(first) or inst.id
    style = _first_track(first).get("tags") if first else None
    style = style or str(p.static_value(inst, "style", "") or "")
    lyrics = _first_track(first).get("prompt") if first else None
    rows = rerun(p, {inst.id})
    # The forms' freshness (runner.review.actions, rule 1): any new result or paid
    # attempt for this song, or another kept take, makes an older form stale.
    tried = sum(1 for e in kh.events if e.get("e") == "intent") if kh else 0
    sig = f"{inst.id}|{kh.generation if kh else 0}|{tried}|{kept_takes.get(inst.id)}|" \
        f"{row.get('key')}"
    return Card(inst.id, n, title, str(style or ""), str(lyrics or ""), state, takes,
                kept_takes.get(inst.id), used, t0.image if t0 else None, inst.step.uses,
                credits, task_ids, earlier, hashlib.sha1(sig.encode()).hexdigest()[:12],
                sum(price(p, i) for i in rows), [i.id for i in rows],
                price(p, inst), error,
                [i.id for i in rows if i.id != inst.id and price(p, i) > 0],
                sum(price(p, i) for i in rows if i.id != inst.id))


def _first_track(outputs: Any) -> dict[str, Any]:
    tracks = outputs.get("tracks") if isinstance(outputs, dict) else None
    return tracks[0] if isinstance(tracks, list) and tracks and isinstance(tracks[0], dict) \
        else {}


def _title_from(outputs: Any) -> str:
    return str(_first_track(outputs).get("title") or "")


def _lyrics_source(p: Plan, inst: Instance, hist: History) -> Any:
    """The outputs of the earliest music step upstream of the song (the generate whose
    prompt holds the lyrics; an extension's prompt is only its new part)."""
    best: Instance | None = inst
    stack = list(inst.deps)
    seen: set[str] = set()
    while stack:
        d = stack.pop()
        if d in seen:
            continue
        seen.add(d)
        dep = p.instances[d]
        if dep.kind == "step" and dep.step.type is not None and dep.step.type.pace == MUSIC:
            best = dep
        stack.extend(dep.deps)
    if best is None:
        return None
    for kh in hist.keys.values():
        if kh.step == best.id and kh.results:
            return kh.results[-1].get("outputs")
    return None


def _timeline(p: Plan, known: dict[str, dict[str, Any]], hist: History) -> list[Span]:
    """The last run that did work, one bar per instance it ran, on one time axis; the
    critical path is the chain that ended last, each link the dependency that finished
    last before it was ready."""
    run = hist.last_run
    if run is None:
        return []
    spans: dict[str, Span] = {}
    now = time.time()

    def rel(x: Any) -> float | None:
        return None if x is None else max(0.0, float(x) - run)

    for iid, row in known.items():
        kh = hist.of(row.get("key"))
        if kh is None:
            continue
        ev = [e for e in kh.events if e.get("t", 0) >= run]
        if kh.status in ("intent", "submitted") and any(e.get("run") == run for e in ev):
            # Live: a paid task of this run still under way, drawn up to now.
            at = next(e["t"] for e in reversed(ev) if e.get("e") == "intent")
            sub = next((e for e in reversed(ev) if e.get("e") == "submitted"), None)
            first = next((e["t"] for e in reversed(ev) if e.get("e") == "first"), None)
            spans[iid] = Span(iid, rel(at) or 0.0, rel(sub.get("sent")) if sub else None,
                              rel(sub["t"]) if sub else None, rel(first), None,
                              rel(now) or 0.0, intent=rel(at), remote=True, running=True)
            continue
        if not kh.results:
            continue
        done = kh.results[-1]
        times = done.get("times") or {}
        if times.get("run") != run:
            continue
        intent = next((e["t"] for e in reversed(ev) if e.get("e") == "intent"), None)
        sub = next((e for e in reversed(ev) if e.get("e") == "submitted"), None)
        first = next((e["t"] for e in reversed(ev) if e.get("e") == "first"), None)
        queued = times.get("queued", intent or done["t"])
        spans[iid] = Span(iid, rel(queued) or 0.0, rel(sub.get("sent")) if sub else None,
                          rel(sub["t"]) if sub else None, rel(first),
                          rel(times.get("finished")), rel(done["t"]) or 0.0,
                          intent=rel(intent), remote=sub is not None,
                          started=rel(times.get("started")))
    if spans and not any(s.running for s in spans.values()):
        cur: str | None = max(spans, key=lambda s: spans[s].done)
        while cur is not None:
            spans[cur].critical = True
            deps = [d for d in step_deps(p, cur) if d in spans
                    and spans[d].done <= spans[cur].queued + 0.5]
            cur = max(deps, key=lambda d: spans[d].done) if deps else None
    return sorted(spans.values(), key=lambda s: (s.queued, s.id))


def step_deps(p: Plan, iid: str) -> list[str]:
    """The step instances `iid` waits for, as people see them: a call of a reusable recipe
    stands for the steps inside it that its outputs wait for."""
    out: list[str] = []

    def expand(d: str) -> None:
        dep = p.instances[d]
        if dep.kind == "step":
            out.append(d)
        elif dep.kind == "leave":
            for x in dep.deps:
                if p.instances[x].kind != "enter":
                    expand(x)

    for d in p.waits_for(p.instances[iid]):
        expand(d)
    return list(dict.fromkeys(out))
