"""Live previews: while a `sunoflow run` waits for a paid task, the stream links the
service offers (sunoapi's `streamAudioUrl`, from TEXT_SUCCESS on) reach the state
directory, and `sunoflow review` shows a player per take marked as a preview; the
finished take replaces it. Previews never cost a submission.

The fake runs on a clock the test moves (`advance`): a song takes 600 fake seconds, so
"the task is still running" is a fact of the fake, not of timing."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from waiting import until

from runner.fake import FakeServer
from runner.fake.media import probe_duration
from runner.store import previews
from tests.reviewing import KEY, env, serving

SONG = 600.0  # fake seconds; stream links from a quarter on, the first take at 3/4

RECIPE = """\
version: 1
name: review-ep
provider: {kind: sunoapi, poll_interval: 0.05, max_poll_interval: 0.2}
vars:
  tracks:
    - {title: Sunrise, style: indie folk}
    - {title: Noon, style: surf rock}
steps:
  song:
    uses: generate
    for_each: "{{ vars.tracks }}"
    with: {title: "{{ item.title }}", style: "{{ item.style }}", prompt: "la la la"}
outputs:
  - for_each: "{{ steps.song }}"
    path: "{{ index + 1 }} - {{ vars.tracks[index].title }}.mp3"
    from: "{{ item.file }}"
"""
CONFIG = {"latency_scale": 1.0, "clip_duration": 6.0,
          "latency": {"generate": {"dist": "fixed", "value": SONG},
                      "*": {"dist": "fixed", "value": 0}}}


@pytest.fixture
def srv() -> Iterator[FakeServer]:
    with FakeServer("sunoapi", api_key=KEY, **CONFIG) as server:
        yield server


def submits(srv: FakeServer) -> int:
    return sum(1 for e in srv.log if e["method"] == "POST" and e["path"] == "/api/v1/generate")


def made(srv: FakeServer) -> int:
    """Generate tasks the fake has made. The request log counts a submit when it arrives,
    before its task exists: moving the fake's clock then would leave that task at its
    start, so the tests wait for the tasks themselves before advancing."""
    return sum(1 for t in srv.tasks if t["op"] == "generate")


def polls(srv: FakeServer) -> int:
    return sum(1 for e in srv.log if "record-info" in e["path"])


@pytest.fixture
def running(tmp_path: Path, srv: FakeServer) -> Iterator[subprocess.Popen[str]]:
    """`sunoflow run ep.yaml` against the fake, both songs submitted and past their text
    stage (their stream links offered), neither finished."""
    (tmp_path / "ep.yaml").write_text(RECIPE)
    with (tmp_path / "run.log").open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "runner", "run", "ep.yaml", "-q",
                                 "--base-url", srv.url], cwd=tmp_path, env=env(),
                                stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        until(lambda: made(srv) == 2 or proc.poll() is not None, "two tasks made")
        assert proc.poll() is None, (tmp_path / "run.log").read_text()
        srv.advance(0.3 * SONG)  # TEXT_SUCCESS: stream links, no take yet
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)


def recorded(tmp_path: Path) -> dict[str, dict]:
    return previews.read(tmp_path / ".sunoflow")


def test_a_running_songs_streams_show_as_previews_and_cost_nothing(tmp_path, srv, running):
    until(lambda: len(recorded(tmp_path)) == 2, "both tasks' stream links recorded")
    state = json.loads((tmp_path / ".sunoflow" / previews.FILE).read_text())
    assert state["v"] == 1
    by_step = {e["step"]: (tid, e) for tid, e in recorded(tmp_path).items()}
    assert set(by_step) == {"song[0]", "song[1]"}
    tid, entry = by_step["song[0]"]
    assert srv.world.tasks[tid].op == "generate"
    clips = srv.world.tasks[tid].clips
    assert [t["id"] for t in entry["tracks"]] == clips
    links = [t["stream_url"] for t in entry["tracks"]]
    assert all(u.startswith(f"{srv.url}/files/stream/") for u in links)

    with serving(tmp_path, remote=srv.url) as url:
        base, token = url.split("/?t=")
        card = httpx.get(f"{base}/live?t={token}").json()["cards"]["song[0]"]
        assert ">running<" in card
        assert card.count("Preview: the task is still running") == 2
        assert card.count('class="stream"') == 2
        for link in links:
            assert f'src="{link.replace("&", "&amp;")}"' in card
        assert "Keep the" not in card  # a preview cannot be kept
        # The player points at the service's stream: real audio (the part made so far:
        # half of the 6 s take), seekable by Range.
        whole = httpx.get(links[0])
        assert whole.status_code == 200
        assert probe_duration(whole.content) == pytest.approx(3.0, abs=0.5)
        part = httpx.get(links[0], headers={"Range": "bytes=100-"})
        assert part.status_code == 206
        assert part.content == whole.content[100:]
        assert part.headers["Content-Range"] == f"bytes 100-{len(whole.content) - 1}/" \
            f"{len(whole.content)}"

        # A static copy made meanwhile holds no preview: it loads nothing from elsewhere.
        r = subprocess.run([sys.executable, "-m", "runner", "review", "ep.yaml", "--export",
                            "site", "--base-url", srv.url], cwd=tmp_path, env=env(),
                           capture_output=True, text=True, timeout=120, check=False)
        assert r.returncode == 0, r.stderr
        static = (tmp_path / "site" / "index.html").read_text()
        assert "/files/stream/" not in static
        assert "Being made" in static

        # The songs finish: the takes replace the previews.
        srv.advance(SONG)
        assert running.wait(timeout=120) == 0, (tmp_path / "run.log").read_text()
        card = httpx.get(f"{base}/live?t={token}").json()["cards"]["song[0]"]
        assert "Preview" not in card
        assert 'class="stream"' not in card
        assert card.count("/blob/") >= 2
    # Money: the stream links were read from the polls a run makes anyway, never by a
    # submission: two songs, two paid submissions, as without previews.
    assert submits(srv) == 2
    assert srv.world.balance() == 1_000_000 - 2 * 12
    assert polls(srv) >= 2


def test_a_spoiled_previews_file_shows_no_preview_and_no_error(tmp_path, srv, running):
    until(lambda: len(recorded(tmp_path)) == 2, "both tasks' stream links recorded")
    path = tmp_path / ".sunoflow" / previews.FILE
    for spoiled in ('{"v": 1, "tasks": {"x": {"tracks": [{"n": 0, "stream_url": '
                    '"javascript:alert(1)"}]}}}', "not json", '{"v": 99, "tasks": {}}'):
        path.write_text(spoiled)
        assert recorded(tmp_path) == {}
    with serving(tmp_path, remote=srv.url) as url:
        base, token = url.split("/?t=")
        r = httpx.get(f"{base}/live?t={token}")
        assert r.status_code == 200
        assert "javascript:" not in r.text
        assert "Preview" not in r.json()["cards"]["song[0]"]


def test_the_text_callback_alone_brings_the_previews(tmp_path):
    """With `--listen`, the `text` stage's callback carries the stream links too: every
    poll is answered "maintenance" (455, no answer about the task), so the links can
    only have come from the callback. The callback ends nothing: the run finishes on the
    `complete` stage, with one paid submission per song."""
    refuse_polls = [{"match": {"path": "/api/v1/generate/record-info"},
                     "action": {"envelope_code": 455}}]
    with FakeServer("sunoapi", api_key=KEY, callbacks={}, faults=refuse_polls,
                    **CONFIG) as srv:
        (tmp_path / "ep.yaml").write_text(RECIPE)
        with (tmp_path / "run.log").open("w") as log:
            proc = subprocess.Popen([sys.executable, "-m", "runner", "run", "ep.yaml", "-q",
                                     "--base-url", srv.url, "--listen", "127.0.0.1:0"],
                                    cwd=tmp_path, env=env(), stdout=log,
                                    stderr=subprocess.STDOUT, text=True)
        try:
            until(lambda: made(srv) == 2 or proc.poll() is not None, "two tasks made")
            srv.advance(0.3 * SONG)  # the text stage: its callback is sent
            until(lambda: len(recorded(tmp_path)) == 2, "the text callbacks' links recorded")
            assert proc.poll() is None  # a preview ends nothing
            texts = [d for d in srv.world.snapshot_deliveries() if d.get("stage") == "text"]
            assert texts, srv.world.snapshot_deliveries()
            for tid, entry in recorded(tmp_path).items():
                assert [t["id"] for t in entry["tracks"]] == srv.world.tasks[tid].clips
            srv.configure(faults=[])
            srv.advance(SONG)
            assert proc.wait(timeout=120) == 0, (tmp_path / "run.log").read_text()
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
        assert submits(srv) == 2


def previews_on_disk(tmp_path: Path) -> dict | None:
    """The raw file (not `previews.read`, which hides what it cannot use); None if absent."""
    path = tmp_path / ".sunoflow" / previews.FILE
    return json.loads(path.read_text()) if path.exists() else None


def test_a_finished_run_leaves_no_previews_behind(tmp_path, srv, running):
    until(lambda: len(recorded(tmp_path)) == 2, "both tasks' stream links recorded")
    srv.advance(SONG)
    assert running.wait(timeout=120) == 0, (tmp_path / "run.log").read_text()
    # Both polls ended: their entries left the file, and with nothing left, the file.
    assert previews_on_disk(tmp_path) is None
    assert submits(srv) == 2


def test_a_run_that_offers_no_streams_clears_an_earlier_runs_previews(tmp_path):
    # A killed run left a line; the next run (local: no task offers streams) ends with the
    # file reflecting itself: nothing.
    state = tmp_path / ".sunoflow"
    state.mkdir()
    stale = {"v": 1, "tasks": {"t1": {"step": "song[0]", "key": "k", "t": 0, "tracks": [
        {"n": 0, "id": "c", "title": "x", "stream_url": "https://example.com/s.mp3"}]}}}
    (state / previews.FILE).write_text(json.dumps(stale))
    (tmp_path / "ep.yaml").write_text("version: 1\nname: words\nprovider: local\nsteps:\n"
                                      "  words: {uses: lyrics, with: {prompt: rain}}\n")
    r = subprocess.run([sys.executable, "-m", "runner", "run", "ep.yaml", "-q"], cwd=tmp_path,
                       env=env(), capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert previews_on_disk(tmp_path) is None


@pytest.mark.anyio
async def test_a_task_forgotten_mid_run_leaves_the_file_at_once(tmp_path):
    # The engine runs `keep` beside its steps: a song that finishes while others still run
    # loses its line then, not at the next song's new links.
    import anyio

    book = previews.Previews(tmp_path)
    streams = SimpleNamespace(tracks=[{"n": 0, "id": "c", "title": "x",
                                       "stream_url": "https://example.com/a.mp3"}])
    await book.note("song[0]", "k0", "t0", streams)
    await book.note("song[1]", "k1", "t1", streams)
    assert set(previews.read(tmp_path)) == {"t0", "t1"}
    async with anyio.create_task_group() as tg:
        tg.start_soon(book.keep)
        book.forget("t0")
        await written(lambda: set(previews.read(tmp_path)) == {"t1"})
        book.forget("t1")
        await written(lambda: not (tmp_path / previews.FILE).exists())
        tg.cancel_scope.cancel()


async def written(cond) -> None:
    """Wait for `keep`'s write (a worker thread's) to show; the bound only stops a hang."""
    import anyio

    for _ in range(3000):
        if cond():
            return
        await anyio.sleep(0.01)
    raise AssertionError("the previews file was not rewritten")


@pytest.mark.anyio
async def test_a_failed_write_does_not_spin_the_writer(tmp_path):
    # A previews write that fails (a full disk, a read-only state directory) stops the
    # previews for the run. A task forgotten after that must not send `keep` round a loop
    # with nothing to await: that would hold the event loop, and the run, forever.
    import anyio

    book = previews.Previews(tmp_path / "gone")  # no such folder: every write fails
    streams = SimpleNamespace(tracks=[{"n": 0, "id": "c", "title": "x",
                                       "stream_url": "https://example.com/a.mp3"}])
    await book.note("song[0]", "k0", "t0", streams)
    assert book.broken
    ticked = anyio.Event()

    async def clock() -> None:
        for _ in range(5):
            await anyio.sleep(0.01)
        ticked.set()

    with anyio.fail_after(10):  # real seconds: only so that a regression fails, not hangs
        async with anyio.create_task_group() as tg:
            tg.start_soon(book.keep)
            tg.start_soon(clock)
            book.forget("t0")
            await ticked.wait()  # the loop still runs other tasks
            tg.cancel_scope.cancel()
