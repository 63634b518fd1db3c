"""The album folder: `outputs:` entries copied from the store into --out, tagged, listed.

Paths are templates rendered per entry; each path component is sanitised (no `..`, no
separators from titles, no control characters) and the result must stay inside --out.
Files are hard-linked from the store when possible, copied otherwise. Tags go into MP3
(ID3), FLAC (Vorbis comments) and WAV (ID3 chunk) with mutagen. An M3U playlist lists
the audio in order, and manifest.json holds every file's sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from runner.errors import StepError
from runner.paths import Outside, Roots, fresh_file, replace_text
from runner.recipe import OutputFile, Recipe
from runner.tags import write_tags
from runner.template import TemplateError, compile_template, is_template, render, render_path

AUDIO = (".mp3", ".flac", ".wav", ".m4a")
# What a recipe's audio steps make. Anything else in AUDIO (.m4a) comes only from the
# service's recovery of expired links (REFERENCE 2.19), never from the recipe: an output
# named for one of these formats is transcoded to it, so a committed recipe rebuilds after
# its links expire without edits.
RECIPE_AUDIO = (".mp3", ".flac", ".wav")
MEDIA = (*AUDIO, ".mp4", ".png", ".jpg", ".jpeg", ".lrc")
_BAD = re.compile(r"[\x00-\x1f\x7f<>:\"|?*\\]")


def safe_relpath(text: str) -> Path:
    """A relative path whose components cannot escape the folder it is joined to."""
    parts = []
    for comp in re.split(r"/+", text.replace("\\", "/")):
        comp = _BAD.sub("_", comp).strip(" .")
        if comp in ("", ".", ".."):
            continue
        parts.append(comp[:200])
    if not parts:
        raise ValueError(f"output path {text!r} is empty after sanitising")
    return Path(*parts)


def _entries(recipe: Recipe, o: OutputFile, steps: dict[str, Any],
             results: dict[str, Any]) -> list[dict[str, Any]]:
    base = {"vars": recipe.vars, "steps": steps}
    if o.for_each is None:
        return [base]
    fe = o.for_each
    if isinstance(fe, list):
        items = fe
    else:
        items = compile_template(fe).render(base)
    if not isinstance(items, list):
        raise StepError(f"outputs[{o.index}].for_each must give a list; it gives "
                        f"{type(items).__name__}")
    return [{**base, "item": it, "index": i} for i, it in enumerate(items)]


def _confined(value: Any, roots: list[Path], what: str, index: int) -> Path:
    """A file an output entry reads: it must be a stored result (or, for artwork, a file in
    the recipe's folder). Templates are decided at run time, so this is checked here: a
    recipe from a pull request cannot copy the runner's files into the album."""
    p = Path(str(value)).resolve()
    if not any(p == r or r in p.parents for r in roots):
        raise StepError(f"outputs[{index}]: {what} {str(value)!r} is not a step's output; "
                        "only files made by the recipe's steps can go into the album")
    if not p.is_file():
        raise StepError(f"outputs[{index}]: {what} {str(value)!r} does not exist")
    return p


def _destination(root: Path, relp: Path, index: int) -> Path:
    """Where an entry is written: its folder, links resolved, must be inside the album
    folder. The file itself is replaced, not followed: a link at its name (committed
    there, say) gives way to the new file instead of redirecting the write."""
    folder = (root / relp).parent.resolve()
    if folder != root and root not in folder.parents:
        raise StepError(f"outputs[{index}]: '{relp.as_posix()}' would leave the output folder "
                        f"(through a symbolic link to {folder})")
    return folder / relp.name


def _cover(value: Any, roots: Roots, index: int) -> Path:
    if isinstance(value, dict) and isinstance(value.get("file"), str):
        value = value["file"]  # an image object, e.g. steps.art.images[0]
    try:
        p = roots.resolve(str(value))
    except Outside as exc:
        raise StepError(f"outputs[{index}].tags.cover: {exc}") from None
    if not p.is_file():
        raise StepError(f"outputs[{index}]: cover {str(value)!r} does not exist")
    return p


def export(recipe: Recipe, steps: dict[str, Any], results: dict[str, Any], out_dir: Path,
           *, recipe_sha: str, lock_sha: str | None = None,
           store_root: Path | None = None) -> list[dict[str, Any]]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stored = [store_root.resolve()] if store_root else []
    # Artwork may also come from the recipe's folder (or an --allow-path folder).
    roots = Roots.of(recipe.path, recipe.allow_paths, store_root)
    root = out_dir.resolve()
    planned: list[tuple[Path, Path, Path, dict[str, Any], str | None]] = []
    for o in recipe.outputs:
        try:
            contexts = _entries(recipe, o, steps, results)
        except TemplateError as exc:
            raise StepError(f"outputs[{o.index}].for_each: {exc}") from None
        for ctx in contexts:
            try:
                if is_template(o.if_) and not compile_template(o.if_).render(ctx):
                    continue
                rel = render_path(o.path, ctx)
                src = render(o.from_, ctx)
                tags = {k: render(v, ctx) for k, v in o.tags.items()}
                lrc = render(o.lrc, ctx) if o.lrc else None
            except TemplateError as exc:
                raise StepError(f"outputs[{o.index}]: {exc}") from None
            if src is None or (isinstance(src, dict) and not src.get("file")):
                raise StepError(f"outputs[{o.index}]: 'from' gives no file (is the step "
                                "skipped?)")
            if isinstance(src, dict):
                src = src["file"]
            if stored:
                src = _confined(src, stored, "from", o.index)
            if tags.get("cover"):
                tags["cover"] = _cover(tags["cover"], roots, o.index)
            try:
                relp = safe_relpath(str(rel))
            except ValueError as exc:
                raise StepError(f"outputs[{o.index}]: {exc}") from None
            src_ext, dest_ext = Path(str(src)).suffix.lower(), relp.suffix.lower()
            recovered = recontainer(src_ext, dest_ext)
            if not recovered and src_ext and dest_ext != src_ext and src_ext in MEDIA and \
                    dest_ext in MEDIA:
                raise StepError(f"outputs[{o.index}]: '{relp.as_posix()}' ends in {dest_ext}, "
                                f"but the file is {src_ext}; name it {relp.stem}{src_ext}, or "
                                f"add a transcode step to make {dest_ext}")
            dest = _destination(root, relp, o.index)
            planned.append((Path(str(src)), dest, relp, tags, src_ext if recovered else None))
            if lrc:
                lrc_src = _confined(lrc, stored, "lrc", o.index) if stored else Path(str(lrc))
                lrc_rel = relp.with_suffix(".lrc")
                planned.append((lrc_src, _destination(root, lrc_rel, o.index), lrc_rel, {},
                                None))
    # Every entry is rendered and checked before the first file is written: a mistake in
    # the last entry leaves the previous album untouched, not half replaced.
    written: list[dict[str, Any]] = []
    for src_path, dest, relp, tags, from_ext in planned:
        if from_ext is None:
            _place(src_path, dest)
        else:
            _transcode(src_path, dest)
        if tags and dest.suffix.lower() in AUDIO:
            write_tags(dest, tags)
        entry: dict[str, Any] = {"path": relp.as_posix(), "sha256": _sha(dest),
                                 "size": dest.stat().st_size}
        if from_ext is not None:
            entry["transcoded_from"] = from_ext
        written.append(entry)
    audio = [w["path"] for w in written if Path(w["path"]).suffix.lower() in AUDIO
             and "/" not in w["path"]]
    if audio:
        replace_text(root / f"{_playlist_name(recipe.name)}.m3u",
                     "#EXTM3U\n" + "".join(f"{p}\n" for p in audio))
    manifest = {"format": 1, "recipe": recipe.file, "recipe_sha256": recipe_sha,
                "lock_sha256": lock_sha, "files": sorted(written, key=lambda w: w["path"])}
    replace_text(root / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    return written


def recontainer(src_ext: str, dest_ext: str) -> bool:
    """Whether an output is made by transcoding: the stored file is in a container only the
    service's recovery hands out (.m4a) and the output names a format a recipe makes."""
    return src_ext in AUDIO and src_ext not in RECIPE_AUDIO and dest_ext in RECIPE_AUDIO


def _transcode(src: Path, dest: Path) -> None:
    from runner import media

    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        media.transcode(src, dest, fmt=dest.suffix.lower()[1:])
    except media.MediaError as exc:
        raise StepError(f"{dest.name}: transcoding the recovered {src.suffix} file to "
                        f"{dest.suffix} failed: {exc}") from None


def _playlist_name(name: str) -> str:
    return str(safe_relpath(name.replace("/", "_")))


def _place(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    # A copy, not a hard link: tags are written into the album file, and must never change
    # the blob in the store (whose name is its hash). A fresh temporary name (O_EXCL), so
    # nothing placed beside it can redirect the write.
    fd, tmp = fresh_file(dest)
    try:
        with os.fdopen(fd, "wb") as f, src.open("rb") as s:
            shutil.copyfileobj(s, f, 1 << 20)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _sha(p: Path) -> str:
    h = hashlib.sha256()
    with p.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
