"""Rerolling one song, against the sunoapi fake, counting paid submissions in its log:
`sunoflow reroll RECIPE 'song[1]'` on the command line and the page's confirmed reroll
each pay for exactly one fresh result; a resent form, a second click, or a reroll of a
task already submitted pay nothing more."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from runner.fake import FakeServer
from tests.reviewing import KEY, make_album, serving, sunoflow

GENERATE = "/api/v1/generate"


@pytest.fixture
def srv() -> Iterator[FakeServer]:
    with FakeServer("sunoapi", api_key=KEY) as server:
        yield server


def paid(srv: FakeServer) -> int:
    return sum(1 for e in srv.log if e["method"] == "POST")


def done_events(tmp: Path, step: str) -> list[dict]:
    lines = (tmp / ".sunoflow" / "journal.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["step"] == step and e["e"] == "done"]


def test_reroll_of_one_instance_pays_for_that_song_only(srv, tmp_path):
    make_album(tmp_path, remote=srv.url)
    assert paid(srv) == 2
    plan = sunoflow(tmp_path, "reroll", "ep.yaml", "song[1]", remote=srv.url)
    assert plan.returncode == 2  # not a terminal: needs --yes, and paid nothing
    assert "reroll song[1]: 2 step instances run again (loud[1], song[1])" in plan.stdout
    assert "about 12 credits (paid: song[1])" in plan.stdout
    assert "not done yet" not in plan.stdout  # the album is whole: nothing else is paid
    assert paid(srv) == 2
    r = sunoflow(tmp_path, "reroll", "ep.yaml", "song[1]", "--yes", remote=srv.url)
    assert r.returncode == 0, r.stderr
    assert paid(srv) == 3  # one generate: song[1]; song[0] untouched
    olds, news = done_events(tmp_path, "song[1]")[0], done_events(tmp_path, "song[1]")[-1]
    assert olds["task_ids"] != news["task_ids"]
    # Both results stay in the store: the old takes are still listenable.
    for ev in (olds, news):
        assert all(Path(f["path"]).is_file() for f in ev["files"])
    r = sunoflow(tmp_path, "reroll", "ep.yaml", "song[7]", "--yes", remote=srv.url)
    assert r.returncode == 2
    assert "did you mean 'song[1]'?" in r.stderr


def test_a_reroll_whose_task_was_already_submitted_polls_it_instead_of_paying(srv, tmp_path):
    """A reroll killed after its submit was recorded: the next reroll (or --force) polls
    the recorded task (rule 2 under --force too). Before, --force paid for another."""
    make_album(tmp_path, remote=srv.url)
    done = done_events(tmp_path, "song[1]")[-1]
    journal = tmp_path / ".sunoflow" / "journal.jsonl"
    with journal.open("a") as f:  # what a reroll killed right after its submit leaves
        for e in ({"e": "intent", "attempt": 2}, {"e": "submitted",
                                                  "task_id": done["task_ids"][0]}):
            f.write(json.dumps({"v": 1, "key": done["key"], "step": "song[1]",
                                "t": time.time(), **e}) + "\n")
    before = paid(srv)
    r = sunoflow(tmp_path, "reroll", "ep.yaml", "song[1]", "--yes", remote=srv.url)
    assert r.returncode == 0, r.stderr
    assert paid(srv) == before  # polled, not paid again
    assert any(e["method"] == "GET" and done["task_ids"][0] in json.dumps(e)
               for e in srv.log)


def test_the_pages_reroll_pays_once_however_often_the_form_is_sent(srv, tmp_path):
    make_album(tmp_path, remote=srv.url)
    assert paid(srv) == 2
    with serving(tmp_path, remote=srv.url) as url:
        u = urlsplit(url)
        base, token = f"{u.scheme}://{u.netloc}", u.query.split("t=", 1)[1]
        confirm = httpx.get(f"{base}/reroll", params={"t": token, "card": "song[1]"})
        assert confirm.status_code == 200
        assert "about 12" in confirm.text
        assert "loud[1]" in confirm.text
        assert paid(srv) == 2  # the confirmation page pays nothing
        fresh = re.search(r'name="form" value="(\w+)"', confirm.text).group(1)
        form = {"t": token, "card": "song[1]", "form": fresh, "confirm": "yes"}
        first = httpx.post(f"{base}/reroll", data=form)
        again = httpx.post(f"{base}/reroll", data=form)  # a double click
        assert first.status_code == 303
        assert again.status_code == 409
        deadline = time.monotonic() + 60
        while len(done_events(tmp_path, "song[1]")) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        page = httpx.get(url)
        while "Reroll of song[1] finished" not in page.text and time.monotonic() < deadline:
            time.sleep(0.1)
            page = httpx.get(url)
        late = httpx.post(f"{base}/reroll", data=form)  # the old form, after it finished
        assert late.status_code == 409
        assert "out of date" in late.text
    assert paid(srv) == 3
    assert "Earlier results of this song (1)" in page.text


def test_the_page_refuses_a_reroll_that_would_pay_for_unfinished_songs_too(srv, tmp_path):
    recipe = make_album(tmp_path, remote=srv.url)
    recipe.write_text(recipe.read_text().replace(
        "- {title: Noon, style: surf rock}",
        "- {title: Noon, style: surf rock}\n    - {title: Dusk, style: dream pop}"))
    with serving(tmp_path, remote=srv.url) as url:
        u = urlsplit(url)
        base, token = f"{u.scheme}://{u.netloc}", u.query.split("t=", 1)[1]
        confirm = httpx.get(f"{base}/reroll", params={"t": token, "card": "song[1]"})
        fresh = re.search(r'name="form" value="(\w+)"', confirm.text).group(1)
        r = httpx.post(f"{base}/reroll", data={"t": token, "card": "song[1]", "form": fresh,
                                               "confirm": "yes"})
        assert r.status_code == 409
        assert "song[2]" in r.text
    assert paid(srv) == 2
    # The command line says so too, with the extra cost, before asking.
    cli = sunoflow(tmp_path, "reroll", "ep.yaml", "song[1]", remote=srv.url)
    assert "and 1 paid step instance not done yet run too (song[2]), about 12 credits more" \
        in cli.stdout
    assert paid(srv) == 2
