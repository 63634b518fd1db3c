"""`sunoflow review RECIPE --export DIR`: the page as a folder that opens from file:// in
any browser (a CI artifact): `index.html`, `assets/`, the takes' audio and cover art
(`media/`), their waveforms (`waves/`) and the album folder's audio (`album/`). No forms
and no live updates (there is no server); everything else is the live page."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from runner import paths
from runner.review import model, pages, waveform


def export(recipe: Path, state_dir: Path, out_dir: Path, overrides: dict[str, Any],
           dest: Path) -> tuple[Path, int]:
    """Write the static copy; returns its index.html and how many files it holds."""
    from dataclasses import replace

    album = model.load(recipe, state_dir, out_dir, overrides)
    blobs = state_dir / "blobs" / "sha256"
    for card in album.cards:
        # A stream preview points at the service: the copy holds stored files only (it
        # must play offline, and load nothing from elsewhere).
        card.takes = [replace(t, stream_url=None) for t in card.takes
                      if not (t.preview and t.blob is None)]

    def stored(name: str) -> Path | None:
        p = blobs / name[:2] / name
        return p if model.BLOB.match(name) and p.is_file() else None

    waves: dict[str, Path] = {}
    media: dict[str, Path] = {}
    for card in album.cards:
        if card.cover and (p := stored(card.cover)):
            media[card.cover] = p
        for take in [*card.takes, *(t for r in card.earlier for t in r)]:
            for name in (take.blob, take.image):
                if name and (p := stored(name)):
                    media[name] = p
            if take.blob and (p := stored(take.blob)):
                png = waveform.make(state_dir, p)
                if png is not None:
                    waves[take.blob] = png
    links = pages.Links(None, lambda name: name in waves)
    html = pages.page(album, links)
    dest.mkdir(parents=True, exist_ok=True)
    count = 0
    for sub, files in (("media", media), ("waves", {n[:64] + ".png": p for n, p in
                                                     waves.items()})):
        (dest / sub).mkdir(exist_ok=True)
        for name, src in files.items():
            _copy(src, dest / sub / name)
            count += 1
    (dest / "assets").mkdir(exist_ok=True)
    for name in pages.ASSET_NAMES:
        _copy(pages.ASSETS / name, dest / "assets" / name)
        count += 1
    root = out_dir.resolve() if out_dir.is_dir() else None
    for rel in album.out_files:
        if root is None:
            break
        src = (root / rel).resolve()
        if src.is_relative_to(root) and src.is_file():  # links leading out are not copied
            target = dest / "album" / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            _copy(src, target)
            count += 1
    index = dest / "index.html"
    paths.replace_text(index, html)
    return index, count + 1


def _copy(src: Path, dst: Path) -> None:
    if dst.exists() and dst.stat().st_size == src.stat().st_size:
        return  # named by content (media, waves) or re-exported unchanged
    tmp = dst.with_name(f".{dst.name}.part")
    shutil.copyfile(src, tmp)
    tmp.replace(dst)
