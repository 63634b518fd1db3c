"""The parts of rule 12 (runner.store.aliases) one at a time: the swap that keeps a recorded
result's outputs, keys read through aliases, and where an alias is kept (the journal, the
lock, the shared cache) with the versions that make an older sunoflow refuse it rather
than ignore it. The whole path, through the CLI and the fake, is tests/test_restore_aliases.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from runner.errors import StoreError
from runner.plan.keys import KEY_VERSION
from runner.plan.scopes import instance_key
from runner.recipe.model import Provider
from runner.store import aliases, journal, lock
from runner.store.claims import adopt, entry_of
from runner.store.journal import Store

OLD = "a" * 64
NEW = "b" * 64


def stored(store: Store, sha: str, ext: str, field: str, **more: Any) -> dict[str, Any]:
    return {"path": str(store.blob_path(sha, ext)), "sha256": sha, "size": 3, "field": field,
            **more}


def song(path: str, track_id: str = "clip-1") -> dict[str, Any]:
    return {"tracks": [{"id": track_id, "title": "Kept", "duration": 30.0, "file": path,
                        "audio_url": "http://old"}], "file": path}


def test_keys_read_a_stored_file_through_what_it_stands_for():
    p = Provider(kind="sunoapi", base_url="https://api.sunoapi.org")
    old = {"id": "a", "task_id": "t", "file": f"/x/blobs/sha256/aa/{OLD}.mp3"}
    new = {**old, "file": f"/y/blobs/sha256/bb/{NEW}.m4a"}
    recorded = instance_key(p, "convert", {"audio": old, "format": "wav"}, "remote")
    assert instance_key(p, "convert", {"audio": new, "format": "wav"}, "remote") != recorded
    assert instance_key(p, "convert", {"audio": new, "format": "wav"}, "remote",
                        aliases={f"{NEW}.m4a": f"{OLD}.mp3"}) == recorded
    # No alias, no change: every key an existing journal or lock holds stays (the value
    # test_ledger pins was computed by the release before aliases).
    assert KEY_VERSION == "sunoflow-key-1"


def test_swap_keeps_the_recorded_outputs_and_says_what_each_new_file_stands_for(
        tmp_path: Path):
    store = Store(tmp_path)
    old, new = stored(store, OLD, ".mp3", "tracks.0.file"), \
        stored(store, NEW, ".m4a", "tracks.0.file", url="http://fresh")
    recorded = song(old["path"])
    given = song(new["path"])
    given["tracks"][0]["audio_url"], given["extra"] = "http://fresh", 1
    kept = aliases.swap(recorded, [old], given, [new])
    assert kept is not None
    assert kept.changed == 1
    # The recorded outputs (the old link, no "extra"), the new file in the old one's places.
    assert kept.outputs == song(new["path"])
    assert kept.outputs["tracks"][0]["audio_url"] == "http://old"
    assert kept.files == [{**new, "stands_for": f"sha256:{OLD}.mp3"}]
    # Obtained a third time, as yet other bytes: it stands for the first recorded file.
    third = stored(store, "c" * 64, ".m4a", "tracks.0.file")
    again = aliases.swap(kept.outputs, kept.files, song(third["path"]), [third])
    assert again is not None
    assert again.files[0]["stands_for"] == f"sha256:{OLD}.mp3"
    # The same bytes as the record: the record stays, with what it stands for.
    same = aliases.swap(kept.outputs, kept.files, song(new["path"]), [new])
    assert same is not None
    assert same.changed == 0
    assert same.files == kept.files
    assert same.outputs is kept.outputs


def two_takes(store: Store, first: tuple[str, str], second: tuple[str, str],
              shas: tuple[str, str], ext: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A song's outputs and files: takes `first` and `second` ((id, sha) each), listed in
    that order, the top `file` walked before the tracks (as a placeholder met twice is)."""
    a, b = (stored(store, sha, ext, f"tracks.{i}.file") for i, sha in enumerate(shas))
    a["field"] = "file"
    outputs = {"file": a["path"], "tracks": [{"id": first[0], "file": a["path"]},
                                             {"id": second[0], "file": b["path"]}]}
    return outputs, [a, b]


def test_swap_finds_each_take_where_the_service_now_lists_it(tmp_path: Path):
    store = Store(tmp_path)
    c, d = "c" * 64, "d" * 64
    recorded, files = two_takes(store, ("clip-1", OLD), ("clip-2", NEW), (OLD, NEW), ".mp3")
    # The service lists the takes the other way round now, each as other bytes.
    given, new_files = two_takes(store, ("clip-2", d), ("clip-1", c), (d, c), ".m4a")
    kept = aliases.swap(recorded, files, given, new_files)
    assert kept is not None
    assert kept.changed == 2
    tracks = kept.outputs["tracks"]
    assert [t["id"] for t in tracks] == ["clip-1", "clip-2"]  # the recorded order
    assert aliases.name(tracks[0]["file"]) == f"{c}.m4a"
    assert aliases.name(kept.outputs["file"]) == f"{c}.m4a"
    assert aliases.name(tracks[1]["file"]) == f"{d}.m4a"
    assert dict(aliases.pairs(kept.files)) == {f"{c}.m4a": f"{OLD}.mp3",
                                               f"{d}.m4a": f"{NEW}.mp3"}


def test_swap_never_puts_one_take_in_the_place_of_another(tmp_path: Path):
    store = Store(tmp_path)
    old, new = stored(store, OLD, ".mp3", "tracks.0.file"), \
        stored(store, NEW, ".m4a", "tracks.0.file")
    # Another take altogether: nothing of the record is swapped.
    other = aliases.swap(song(old["path"], "clip-1"), [old], song(new["path"], "clip-2"), [new])
    assert other is not None
    assert other.changed == 0
    assert other.files == [old]
    # Two new files for one take: they cannot be told apart, so none is taken for it.
    twice = {"tracks": [{"id": "clip-1", "file": new["path"]},
                        {"id": "clip-1", "file": old["path"]}]}
    assert aliases.swap(song(old["path"], "clip-1"), [old], twice,
                        [new, {**old, "field": "tracks.1.file"}]) is None


def test_swap_keeps_the_record_of_a_file_not_given_again(tmp_path: Path):
    store = Store(tmp_path)
    audio = stored(store, OLD, ".mp3", "tracks.0.file")
    art = stored(store, "d" * 64, ".png", "tracks.0.image_file")
    new = stored(store, NEW, ".m4a", "tracks.0.file")
    recorded = song(audio["path"])
    recorded["tracks"][0]["image_file"] = art["path"]
    kept = aliases.swap(recorded, [audio, art], song(new["path"]), [new])
    assert kept is not None
    assert kept.files[1] == art
    assert kept.outputs["tracks"][0]["image_file"] == art["path"]


def test_the_journal_keeps_the_alias_as_an_event_an_older_reader_refuses(tmp_path: Path,
                                                                         monkeypatch):
    store = Store(tmp_path / "state").open()
    new = stored(store, NEW, ".m4a", "file", stands_for=f"sha256:{OLD}.mp3")
    store.record("done", "k1", "song", outputs={"file": new["path"]}, files=[new])
    store.record("done", "k2", "plain", outputs={}, files=[])
    store.close()
    lines = [json.loads(x) for x in (tmp_path / "state" / "journal.jsonl").read_text()
             .splitlines()]
    assert [e["v"] for e in lines] == [3, 1]  # only the line that needs it
    again = Store(tmp_path / "state").open()
    assert again.aliases == {f"{NEW}.m4a": f"{OLD}.mp3"}
    again.close()
    # What a sunoflow that reads event version 2 at most does with it.
    monkeypatch.setattr(journal, "READS", 2)
    with pytest.raises(StoreError, match="event from a newer sunoflow"):
        Store(tmp_path / "state").open()


def test_a_stands_for_not_as_sunoflow_writes_it_is_not_read(tmp_path: Path):
    store = Store(tmp_path / "state").open()
    bad = stored(store, NEW, ".m4a", "file", stands_for="mp3")
    store.record("done", "k1", "song", outputs={}, files=[bad])
    store.close()
    again = Store(tmp_path / "state").open()
    assert "k1" not in again.states
    assert again.aliases == {}
    assert "not a list of stored files" in again.warnings[0]
    with pytest.raises(StoreError, match="not as sunoflow writes them"):
        lock.seed(again, {"steps": {"song": {"key": "k1", "files": [
            {"sha256": NEW, "size": 3, "ext": ".m4a", "stands_for": 3}]}}})


def test_a_lock_is_format_2_only_when_it_holds_an_alias(tmp_path: Path):
    from runner.plan import build as planner
    from runner.recipe import load as recipes

    (tmp_path / "r.yaml").write_text("version: 1\nname: r\nsteps:\n  song:\n"
                                     "    uses: generate\n    with: {prompt: la}\n")
    plan = planner.build(recipes.load(tmp_path / "r.yaml"))

    class Rec:
        status, key = "succeeded", "k1"

    store = Store(tmp_path / "state").open()
    old = stored(store, OLD, ".mp3", "file")
    store.record("done", "k1", "song", outputs={"file": old["path"]}, files=[old])
    assert lock.build(plan, {"song": Rec()}, store)["version"] == 1
    new = stored(store, NEW, ".m4a", "file", stands_for=f"sha256:{OLD}.mp3")
    store.record("done", "k1", "song", outputs={"file": new["path"]}, files=[new])
    path = tmp_path / "r.lock"
    lock.write(path, plan, {"song": Rec()}, store)
    data = lock.read(path)
    assert data["version"] == 2
    assert data["steps"]["song"]["files"][0]["stands_for"] == f"sha256:{OLD}.mp3"
    # Seeding a fresh state directory from it alone brings the alias back.
    fresh = Store(tmp_path / "fresh").open()
    lock.seed(fresh, data)
    assert fresh.aliases == {f"{NEW}.m4a": f"{OLD}.mp3"}
    # A lock from a sunoflow newer still is refused, never half read.
    path.write_text(path.read_text().replace("version: 2", "version: 3"))
    with pytest.raises(StoreError, match="newer sunoflow"):
        lock.read(path)
    store.close()
    fresh.close()


def test_the_shared_cache_carries_the_alias_to_another_machine(tmp_path: Path):
    here = Store(tmp_path / "here").open()
    new = stored(here, NEW, ".m4a", "file", stands_for=f"sha256:{OLD}.mp3")
    entry = entry_of("k1", "song", {"file": new["path"]}, [new], ["t1"], None)
    assert entry["v"] == 2
    assert entry_of("k2", "plain", {}, [], [], None)["v"] == 1
    there = Store(tmp_path / "there").open()
    adopt(there, json.loads(json.dumps(entry)))
    assert there.aliases == {f"{NEW}.m4a": f"{OLD}.mp3"}
    here.close()
    there.close()
