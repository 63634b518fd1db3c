"""`sunoflow review` in a real browser: headless Chromium (Debian's `chromium` package,
driven by Playwright through `executable_path`; `.ci/run` installs it). Few tests, each a
user's whole errand: listen and look, keep a take and rebuild, reroll one song, open the
static copy from file://. Screenshots are kept in each test's tmp_path."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runner.fake import FakeServer
from tests.reviewing import KEY, make_album, serving, sunoflow

playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:  # pragma: no cover - .ci/run installs it
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)",
                allow_module_level=True)

DURATIONS = """els => Promise.all(els.map(a => a.readyState >= 1 && a.duration > 0
    ? a.duration
    : new Promise((ok, no) => { a.addEventListener('loadedmetadata', () => ok(a.duration));
                                a.addEventListener('error', () => no('error ' + a.src));
                                a.load(); })))"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM,
                              args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"])
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    pg.problems = []  # console errors and uncaught exceptions: there must be none
    pg.on("console", lambda m: pg.problems.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: pg.problems.append(str(e)))
    yield pg
    ctx.close()


@pytest.fixture
def srv() -> Iterator[FakeServer]:
    with FakeServer("sunoapi", api_key=KEY) as server:
        yield server


def paid(srv: FakeServer) -> int:
    return sum(1 for e in srv.log if e["method"] == "POST")


def test_both_takes_play_seek_by_range_and_the_run_is_drawn(page, tmp_path):
    make_album(tmp_path)
    ranges: list[str] = []
    page.on("request", lambda r: ranges.append(r.headers.get("range", ""))
            if "/blob/" in r.url and r.url.split("?")[0].endswith(".mp3") else None)
    with serving(tmp_path) as url:
        page.goto(url)
        card = page.locator("article.card").first
        assert card.locator("h3").inner_text() == "1. Sunrise"
        assert card.get_by_text("✔ In the album").count() == 1
        players = card.locator("audio")
        assert players.count() == 2
        durations = players.evaluate_all(DURATIONS)
        assert [round(d) for d in durations] == [6, 6]
        assert card.locator("img.cover").evaluate("i => i.complete && i.naturalWidth") > 0
        assert card.locator("img.wave").first.evaluate("i => i.complete && i.naturalWidth") > 0
        seeked = players.nth(1).evaluate("""a => new Promise(ok => {
            a.addEventListener('seeked', () => ok(a.currentTime));
            a.currentTime = a.duration - 1; })""")
        assert seeked == pytest.approx(durations[1] - 1, abs=0.3)
        assert any(r.startswith("bytes=") for r in ranges), ranges
        page.screenshot(path=str(tmp_path / "album.png"), full_page=False)
        timeline = page.locator("#timeline")
        timeline.scroll_into_view_if_needed()
        assert "★ song[0]" in timeline.inner_text() or \
            "★" in page.locator("#timeline-svg svg").inner_html()
        timeline.screenshot(path=str(tmp_path / "timeline.png"))
        graph = page.locator("#graph-svg svg")
        assert "song[1]: generate" in graph.inner_html()
        assert ">done<" in graph.inner_html()
    assert (tmp_path / "album.png").stat().st_size > 10_000
    assert (tmp_path / "timeline.png").stat().st_size > 2_000
    assert page.problems == []


def test_keep_a_take_then_run_pays_nothing_and_reroll_pays_once(page, tmp_path, srv):
    make_album(tmp_path, remote=srv.url)
    assert paid(srv) == 2
    with serving(tmp_path, remote=srv.url) as url:
        page.goto(url)
        card = page.locator("article.card").first
        card.get_by_role("button", name="Keep the second take").click()
        page.wait_for_load_state()
        assert "Take kept" in page.locator(".message").inner_text()
        card = page.locator("article.card").first
        kept = card.locator("section.take.in-album")
        assert "Second take" in kept.locator("h4").inner_text()
        assert (tmp_path / "ep.takes.yaml").read_text().endswith('"song[0]": 1\n')
        r = sunoflow(tmp_path, "run", "ep.yaml", "--report", "r.json", "-q", remote=srv.url)
        assert r.returncode == 0, r.stderr
        assert json.loads((tmp_path / "r.json").read_text())["counts"]["submissions"] == 0
        assert paid(srv) == 2
        journal = [json.loads(x) for x in
                   (tmp_path / ".sunoflow" / "journal.jsonl").read_text().splitlines()]
        song0 = next(e for e in journal if e["step"] == "song[0]" and e["e"] == "done")
        take1 = Path(song0["outputs"]["tracks"][1]["file"]).read_bytes()
        assert (tmp_path / "out" / "ep" / "1 - Sunrise.mp3").read_bytes() == take1
        # Reroll the second song: the confirmation says what it costs, then pays once.
        page.goto(url)
        song2 = page.locator("article.card").nth(1)
        song2.get_by_role("link", name="Reroll this song…").click()
        page.wait_for_load_state()
        assert "about 12 credits" in page.locator(".cost").inner_text()
        assert page.locator("ul.steps").inner_text().split("\n")[0].startswith("song[1]")
        assert paid(srv) == 2
        page.get_by_role("button", name="Pay and reroll Noon").click()
        page.wait_for_load_state()
        assert "Reroll started" in page.locator(".message").inner_text()
        page.wait_for_function("() => document.querySelector('[data-card=\"song[1]\"] "
                               "details.earlier') !== null", timeout=60_000)
        page.screenshot(path=str(tmp_path / "after-reroll.png"))
    assert paid(srv) == 3
    assert page.problems == []


def test_the_static_copy_plays_from_file_urls(page, tmp_path):
    make_album(tmp_path)
    r = sunoflow(tmp_path, "review", "ep.yaml", "--export", "site")
    assert r.returncode == 0, r.stderr
    index = tmp_path / "site" / "index.html"
    shutil.rmtree(tmp_path / ".sunoflow")  # the copy stands alone
    shutil.rmtree(tmp_path / "out" / "ep")
    requests: list[str] = []
    page.on("request", lambda req: requests.append(req.url))
    page.goto(index.as_uri())
    players = page.locator("article.card audio")
    assert players.count() == 4
    assert [round(d) for d in players.evaluate_all(DURATIONS)] == [6, 6, 6, 6]
    assert page.locator("form").count() == 0  # no server: nothing to write
    assert page.locator("details.folder audio").count() == 2
    assert all(u.startswith(("file://", "data:")) for u in requests), requests
    page.screenshot(path=str(tmp_path / "static.png"))
    assert page.problems == []


STREAMS = """els => Promise.all(els.map(a => new Promise((ok, no) => {
    a.addEventListener('loadedmetadata', () => ok(a.duration));
    a.addEventListener('error', () => no('error ' + a.src));
    a.preload = 'metadata'; a.load(); })))"""


def test_a_running_songs_stream_previews_load_then_give_way_to_the_takes(page, tmp_path):
    """While `sunoflow run` waits for a song (held at its text stage on the fake's clock),
    the page shows a preview player per take, pointing at the service's stream, and it
    loads real audio; when the song is done the takes replace the previews, live."""
    import subprocess
    import sys

    from tests.reviewing import env
    from tests.test_review_previews import CONFIG, RECIPE, SONG, made, submits
    from tests.waiting import until

    with FakeServer("sunoapi", api_key=KEY, **CONFIG) as srv:
        (tmp_path / "ep.yaml").write_text(RECIPE)
        with (tmp_path / "run.log").open("w") as log:
            run = subprocess.Popen([sys.executable, "-m", "runner", "run", "ep.yaml", "-q",
                                    "--base-url", srv.url], cwd=tmp_path, env=env(),
                                   stdout=log, stderr=subprocess.STDOUT)
        try:
            until(lambda: made(srv) == 2, "two tasks made")
            srv.advance(0.3 * SONG)  # the text stage: stream links, no take yet
            with serving(tmp_path, remote=srv.url) as url:
                page.goto(url)
                card = page.locator('[data-card="song[0]"]')
                # The run records the links at its next poll; the page follows it.
                card.locator("audio.stream").nth(1).wait_for(timeout=60_000)
                assert card.locator(".badge.preview").count() == 2
                assert card.locator("form").count() == 0  # a preview cannot be kept
                durations = card.locator("audio.stream").evaluate_all(STREAMS)
                assert [round(d) for d in durations] == [3, 3]  # the part made so far
                page.screenshot(path=str(tmp_path / "preview.png"))
                srv.advance(SONG)
                assert run.wait(timeout=120) == 0, (tmp_path / "run.log").read_text()
                card.locator("audio.stream").first.wait_for(state="detached",
                                                            timeout=60_000)
                card = page.locator('[data-card="song[0]"]')
                assert card.locator(".badge.preview").count() == 0
                assert [round(d) for d in card.locator("audio").evaluate_all(DURATIONS)] \
                    == [6, 6]
        finally:
            if run.poll() is None:
                run.terminate()
                run.wait(timeout=30)
        assert submits(srv) == 2  # previews cost no submission
    assert page.problems == []
