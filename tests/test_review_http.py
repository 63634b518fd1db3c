"""`sunoflow review` over plain HTTP: the token, the Host check, what it serves, Range, the
forms and their refusals (a clear 4xx, never a traceback)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.reviewing import RECIPE, make_album, serving, sunoflow


@pytest.fixture(scope="module")
def album(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("review-http")
    make_album(tmp)
    return tmp


@pytest.fixture(scope="module")
def url(album: Path):
    with serving(album) as u:
        yield u


def split(url: str) -> tuple[str, str]:
    u = urlsplit(url)
    return f"{u.scheme}://{u.netloc}", u.query.split("t=", 1)[1]


def no_traceback(r: httpx.Response) -> None:
    assert "Traceback" not in r.text
    assert 'File "' not in r.text


def test_the_page_needs_the_token(url: str):
    base, token = split(url)
    assert httpx.get(url).status_code == 200
    for bad in (f"{base}/", f"{base}/?t=wrong", f"{base}/?t={token[:-1]}",
                f"{base}/live", f"{base}/assets/review.css"):
        r = httpx.get(bad)
        assert r.status_code == 403, bad
        assert "token" in r.text
        no_traceback(r)


def test_a_foreign_host_header_is_refused(url: str):
    base, token = split(url)
    port = urlsplit(url).port
    for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1:{port + 1}"):
        r = httpx.get(url, headers={"Host": host})
        assert r.status_code == 421, host
        assert "Host" in r.text
    assert httpx.get(url, headers={"Host": f"localhost:{port}"}).status_code == 200


def test_it_serves_only_stored_files_and_the_album_folder(url: str, album: Path):
    base, token = split(url)
    page = httpx.get(url).text
    blob = re.search(r"/blob/([0-9a-f]{64}\.mp3)", page).group(1)
    assert httpx.get(f"{base}/blob/{blob}?t={token}").status_code == 200
    (album / "secret.txt").write_text("not yours")
    (album / "out" / "ep" / "leak.mp3").symlink_to(album / "secret.txt")
    for path in ("/blob/../../ep.yaml", "/blob/..%2F..%2Fep.yaml", f"/blob/{blob[:-4]}.txt",
                 "/out/../ep.yaml", "/out/%2E%2E/secret.txt", "/out/leak.mp3",
                 "/out//etc/passwd", "/wave/" + "0" * 64 + ".png", "/assets/../model.py",
                 "/nothing"):
        r = httpx.get(f"{base}{path}?t={token}")
        assert r.status_code == 404, path
        assert "not yours" not in r.text
        no_traceback(r)
    song = httpx.get(f"{base}/out/1%20-%20Sunrise.mp3?t={token}")
    assert song.status_code == 200
    assert song.content == (album / "out" / "ep" / "1 - Sunrise.mp3").read_bytes()


def test_files_are_served_by_range(url: str):
    base, token = split(url)
    blob = re.search(r"/blob/([0-9a-f]{64}\.mp3)", httpx.get(url).text).group(1)
    whole = httpx.get(f"{base}/blob/{blob}?t={token}").content
    r = httpx.get(f"{base}/blob/{blob}?t={token}", headers={"Range": "bytes=100-199"})
    assert r.status_code == 206
    assert r.headers["Content-Range"] == f"bytes 100-199/{len(whole)}"
    assert r.content == whole[100:200]
    tail = httpx.get(f"{base}/blob/{blob}?t={token}", headers={"Range": "bytes=-10"})
    assert tail.status_code == 206
    assert tail.content == whole[-10:]
    past = httpx.get(f"{base}/blob/{blob}?t={token}",
                     headers={"Range": f"bytes={len(whole)}-"})
    assert past.status_code == 416
    bad = httpx.get(f"{base}/blob/{blob}?t={token}", headers={"Range": "lines=1-2"})
    assert bad.status_code == 416


def test_forms_are_bound_to_the_token_and_to_the_song_as_it_was(url: str, album: Path):
    base, token = split(url)
    page = httpx.get(url).text
    form = re.search(r'name="card" value="(song\[0\])".*?name="form" value="(\w+)"', page,
                     re.S)
    card, fresh = form.group(1), form.group(2)
    cases = [
        ({"card": card, "take": "1", "form": fresh}, 403),  # no token in the form
        ({"t": "nope", "card": card, "take": "1", "form": fresh}, 403),
        ({"t": token, "card": card, "take": "1", "form": "stale0000000"}, 409),
        ({"t": token, "card": card, "take": "7", "form": fresh}, 400),
        ({"t": token, "card": "song[9]", "take": "1", "form": fresh}, 404),
        ({"t": token, "card": card, "form": fresh}, 400),
    ]
    for data, status in cases:
        r = httpx.post(f"{base}/keep", data=data)
        assert r.status_code == status, (data, r.text)
        no_traceback(r)
    assert not (album / "ep.takes.yaml").exists()
    # A reroll without its confirmation is refused; with a token in the query only too.
    r = httpx.post(f"{base}/reroll", data={"t": token, "card": card, "form": fresh})
    assert r.status_code == 400
    r = httpx.post(f"{base}/reroll?t={token}", data={"card": card, "form": fresh,
                                                     "confirm": "yes"})
    assert r.status_code == 403
    r = httpx.post(f"{base}/keep", content=b"x" * 100_000,
                   headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413
    r = httpx.post(f"{base}/keep", content=b"{}", headers={"Content-Type": "application/json"})
    assert r.status_code == 415
    # The right form keeps the take; the same form sent again is stale.
    data = {"t": token, "card": card, "take": "1", "form": fresh}
    r = httpx.post(f"{base}/keep", data=data)
    assert r.status_code == 303
    assert "song[0]\": 1" in (album / "ep.takes.yaml").read_text()
    assert httpx.post(f"{base}/keep", data={**data, "take": "0"}).status_code == 409


def test_a_recipe_that_no_longer_loads_gives_a_clear_503(tmp_path: Path):
    make_album(tmp_path)
    with serving(tmp_path) as u:
        (tmp_path / "ep.yaml").write_text("version: 1\nname: x\nsteps: {a: {uses: nope}}\n")
        r = httpx.get(u)
        assert r.status_code == 503
        assert "ep.yaml" in r.text
        no_traceback(r)


def test_review_refuses_a_bad_port_and_a_bad_recipe(tmp_path: Path):
    (tmp_path / "ep.yaml").write_text(RECIPE)
    r = sunoflow(tmp_path, "review", "ep.yaml", "--port", "70000")
    assert r.returncode == 2
    assert "--port 70000" in r.stderr
    (tmp_path / "bad.yaml").write_text("version: 1\nname: x\nsteps: {a: {uses: generat}}\n")
    r = sunoflow(tmp_path, "review", "bad.yaml")
    assert r.returncode == 2
    assert "bad.yaml:3:" in r.stderr


def test_the_live_view_follows_the_state_directory(tmp_path: Path):
    """What the page's script polls: a new version whenever the journal, the lock, the
    takes file or the recipe change, with the cards as they now are."""
    make_album(tmp_path)
    with serving(tmp_path) as url:
        base, token = split(url)
        first = httpx.get(f"{base}/live?t={token}").json()
        assert set(first["cards"]) == {"song[0]", "song[1]"}
        assert httpx.get(f"{base}/live?t={token}").json()["version"] == first["version"]
        # Another process writes the state directory: a run that rerolls song 2.
        r = sunoflow(tmp_path, "reroll", "ep.yaml", "song[1]", "--yes", "-q")
        assert r.returncode == 0, r.stderr
        now = httpx.get(f"{base}/live?t={token}").json()
        assert now["version"] != first["version"]
        assert now["hashes"]["song[0]"] == first["hashes"]["song[0]"]
        assert ">done<" in now["graph"]
        assert "★ song[1]" in now["timeline"]


def test_the_page_loads_nothing_from_elsewhere(url: str):
    page = httpx.get(url)
    assert not re.search(r'(src|href|action)="(https?:)?//', page.text)
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["Referrer-Policy"] == "no-referrer"


def test_a_song_under_way_shows_its_first_take_as_a_preview_and_its_bar_so_far(tmp_path):
    """Live: what a `sunoflow run` writes while a paid task is under way (its intent, its
    task id, its first take) shows on the page before the task is done."""
    import json
    import time

    make_album(tmp_path)
    journal = tmp_path / ".sunoflow" / "journal.jsonl"
    done = [json.loads(x) for x in journal.read_text().splitlines()
            if '"song[1]"' in x and '"done"' in x][-1]
    track = {**done["outputs"]["tracks"][0],
             "stream_url": "https://cdn.example/stream.mp3"}
    now = time.time()
    with journal.open("a") as f:  # a reroll under way: paid, its first take recorded
        for ev in ({"v": 1, "e": "intent", "attempt": 2, "run": now},
                   {"v": 1, "e": "submitted", "task_id": "t-live"},
                   {"v": 2, "e": "first", "task_id": "t-live",
                    "outputs": {"tracks": [track]}, "files": []}):
            f.write(json.dumps({**ev, "key": done["key"], "step": "song[1]", "t": now})
                    + "\n")
    with serving(tmp_path) as u:
        base, token = split(u)
        live = httpx.get(f"{base}/live?t={token}").json()
        card = live["cards"]["song[1]"]
        assert ">running<" in card
        assert "Preview: the task is still running" in card
        assert "Keep the" not in card  # a preview cannot be kept
        assert "so far, running" in live["timeline"]
        assert ">running<" in live["graph"]


def test_a_client_that_hangs_up_leaves_no_traceback(tmp_path: Path):
    # A browser closes connections at will (a tab closed mid-request, a seek that drops a
    # Range read). The terminal running `sunoflow review` must not fill with tracebacks.
    import socket
    import struct

    make_album(tmp_path)
    with serving(tmp_path) as u:
        base, token = split(u)
        host, port = urlsplit(base).hostname, urlsplit(base).port
        for _ in range(3):
            s = socket.create_connection((host, port))
            s.sendall(b"GET /?t=" + token.encode() + b" HTTP/1.1\r\nHost: 127.0.0.")
            # Reset, not a polite close: SO_LINGER 0 sends RST.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        assert httpx.get(u).status_code == 200  # still serving, after the resets
    log = (tmp_path / "review.log").read_text()
    assert "Traceback" not in log, log
