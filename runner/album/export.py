"""The album folder: `outputs:` entries copied from the store into --out, tagged, listed.

Paths are templates rendered per entry; each path component is sanitised (no `..`, no
separators from titles, no control characters) and the result must stay inside --out.
Files are hard-linked from the store when possible, copied otherwise. Tags go into MP3
(ID3), FLAC (Vorbis comments) and WAV (ID3 chunk) with mutagen. An M3U playlist lists
the audio in order, and manifest.json holds every file's sha256.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from runner.album.tags import write_tags
from runner.errors import Diagnostic, ExportError, StepError
from runner.paths import Outside, Roots, replace_copy, replace_text, sha256_file
from runner.recipe.blame import diagnose
from runner.recipe.messages import kind
from runner.recipe.model import OutputFile, Recipe
from runner.recipe.template import TemplateError, compile_template, is_template, render, render_path

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
        try:
            items = compile_template(fe).render(base)
        except TemplateError as exc:
            raise _Problem(diagnose(recipe, ("outputs", o.index, "for_each"), fe, base,
                                    exc)) from None
    if not isinstance(items, list):
        raise _Problem(recipe.doc.diag(
            ("outputs", o.index, "for_each"), f"outputs[{o.index}].for_each must give a "
            f"list; it gives {kind(items)}",
            "loop over a mapping's pairs with '| dictsort' (item[0] is the name, item[1] "
            "the value)" if isinstance(items, dict) else None))
    return [{**base, "item": it, "index": i} for i, it in enumerate(items)]


class _Problem(Exception):
    """One album entry that cannot be written: a positioned diagnostic."""

    def __init__(self, diag: Diagnostic) -> None:
        self.diag = diag
        super().__init__(str(diag))


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
    planned: list[tuple[Path, Path, Path, dict[str, Any], str | None, int]] = []
    problems: list[Diagnostic] = []
    for o in recipe.outputs:
        try:
            contexts = _entries(recipe, o, steps, results)
        except _Problem as exc:
            problems.append(exc.diag)
            continue
        for ctx in contexts:
            try:
                planned += _plan_entry(recipe, o, ctx, root, stored, roots)
            except _Problem as exc:
                problems.append(exc.diag)
    # Every entry is rendered and checked before the first file is written. An entry that
    # cannot be written does not discard the others: they are written, listed in the
    # playlist and the manifest, and the problems are reported together (ExportError).
    written: list[dict[str, Any]] = []
    tags_of: dict[str, dict[str, Any]] = {}
    for src_path, dest, relp, tags, from_ext, index in planned:
        if from_ext is None:
            _place(src_path, dest)
        else:
            try:
                _transcode(src_path, dest)
            except StepError as exc:
                problems.append(recipe.doc.diag(("outputs", index, "path"), exc.reason))
                continue
        tags_of[relp.as_posix()] = tags
        if tags and dest.suffix.lower() in AUDIO:
            write_tags(dest, tags)
        entry: dict[str, Any] = {"path": relp.as_posix(), "sha256": _sha(dest),
                                 "size": dest.stat().st_size}
        if from_ext is not None:
            entry["transcoded_from"] = from_ext
        written.append(entry)
    audio = _playlist_entries([w["path"] for w in written])
    if audio:
        replace_text(root / f"{_playlist_name(recipe.name)}.m3u",
                     "#EXTM3U\n" + "".join(_extinf(root / p, tags_of.get(p, {})) + f"{p}\n"
                                            for p in audio))
    manifest = {"format": 2, "recipe": recipe.file, "recipe_sha256": recipe_sha,
                "lock_sha256": lock_sha, "files": sorted(written, key=lambda w: w["path"]),
                "other_files": _others(root, {w["path"] for w in written}, recipe.name)}
    replace_text(root / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    if problems:
        raise ExportError(sorted(set(problems)), written)
    return written


def _plan_entry(recipe: Recipe, o: OutputFile, ctx: dict[str, Any], root: Path,
                stored: list[Path], roots: Roots
                ) -> list[tuple[Path, Path, Path, dict[str, Any], str | None, int]]:
    """What one entry writes: (source, destination, relative path, tags, the extension of
    a recovered file to transcode from or None, the entry's index), checked."""
    at: tuple[Any, ...] = ("outputs", o.index)

    def problem(key: tuple[Any, ...], exc: StepError) -> _Problem:
        return _Problem(recipe.doc.diag((*at, *key), exc.reason))

    def rendered(key: tuple[Any, ...], value: Any, fn: Any = render) -> Any:
        try:
            return fn(value, ctx)
        except TemplateError as exc:
            raise _Problem(diagnose(recipe, (*at, *key), value, ctx, exc)) from None

    if is_template(o.if_) and not rendered(("if",), o.if_):
        return []
    rel = rendered(("path",), o.path, render_path)
    src = rendered(("from",), o.from_)
    tags = {k: rendered(("tags", k), v) for k, v in o.tags.items()}
    lrc = rendered(("lrc",), o.lrc) if o.lrc else None
    if src is None or (isinstance(src, dict) and not src.get("file")):
        raise problem(("from",), StepError(f"outputs[{o.index}]: 'from' gives no file (is "
                                           "the step skipped?)"))
    if isinstance(src, dict):
        src = src["file"]
    try:
        if stored:
            src = _confined(src, stored, "from", o.index)
    except StepError as exc:
        raise problem(("from",), exc) from None
    try:
        if tags.get("cover"):
            tags["cover"] = _cover(tags["cover"], roots, o.index)
    except StepError as exc:
        raise problem(("tags", "cover"), exc) from None
    try:
        relp = safe_relpath(str(rel))
    except ValueError as exc:
        raise problem(("path",), StepError(f"outputs[{o.index}]: {exc}")) from None
    src_ext, dest_ext = Path(str(src)).suffix.lower(), relp.suffix.lower()
    recovered = recontainer(src_ext, dest_ext)
    try:
        if not recovered and src_ext and dest_ext != src_ext and src_ext in MEDIA and \
                dest_ext in MEDIA:
            raise StepError(f"outputs[{o.index}]: '{relp.as_posix()}' ends in {dest_ext}, "
                            f"but the file is {src_ext}; name it {relp.stem}{src_ext}, or "
                            f"add a transcode step to make {dest_ext}")
        out: list[tuple[Path, Path, Path, dict[str, Any], str | None, int]] = [
            (Path(str(src)), _destination(root, relp, o.index), relp, tags,
             src_ext if recovered else None, o.index)]
    except StepError as exc:
        raise problem(("path",), exc) from None
    if lrc:
        try:
            lrc_src = _confined(lrc, stored, "lrc", o.index) if stored else Path(str(lrc))
        except StepError as exc:
            raise problem(("lrc",), exc) from None
        lrc_rel = relp.with_suffix(".lrc")
        out.append((lrc_src, _destination(root, lrc_rel, o.index), lrc_rel, {}, None,
                    o.index))
    return out


def _playlist_entries(paths: list[str]) -> list[str]:
    """The audio files the playlist lists, in the order they were written: those of the
    shallowest folder level that holds audio, so `album/01.mp3` ... are listed when every
    song is in a subfolder, and `stems/...` are not when the songs are at the top."""
    audio = [p for p in paths if Path(p).suffix.lower() in AUDIO]
    if not audio:
        return []
    top = min(p.count("/") for p in audio)
    return [p for p in audio if p.count("/") == top]


def _extinf(path: Path, tags: dict[str, Any]) -> str:
    """`#EXTINF:SECONDS,ARTIST - TITLE`: from the entry's tags, else the file's own (a
    `tag` step wrote them), else the file name."""
    try:
        import mutagen

        f = mutagen.File(path, easy=True)
    except Exception:  # noqa: BLE001 - a file mutagen cannot read still gets a line
        f = None
    seconds = round(f.info.length) if f is not None and getattr(f, "info", None) else -1

    def tag(name: str) -> str:
        if tags.get(name):
            return str(tags[name])
        try:
            got = f.get(name) if f is not None and f.tags is not None else None
        except Exception:  # noqa: BLE001 - WAV files without an ID3 chunk, and the like
            got = None
        return str(got[0]) if got else ""

    title = tag("title") or path.stem
    artist = tag("artist")
    label = f"{artist} - {title}" if artist else title
    return f"#EXTINF:{seconds},{' '.join(label.split())}\n"


def _others(root: Path, ours: set[str], name: str) -> list[str]:
    """Files in the album folder that this run did not write (an earlier run's outputs
    that the recipe no longer names, say): the manifest describes the whole folder."""
    skip = {"manifest.json", f"{_playlist_name(name)}.m3u"}
    out = []
    for f in sorted(root.rglob("*")):
        rel = f.relative_to(root).as_posix()
        if f.is_file() and rel not in ours and rel not in skip:
            out.append(rel)
    return out


def recontainer(src_ext: str, dest_ext: str) -> bool:
    """Whether an output is made by transcoding: the stored file is in a container only the
    service's recovery hands out (.m4a) and the output names a format a recipe makes."""
    return src_ext in AUDIO and src_ext not in RECIPE_AUDIO and dest_ext in RECIPE_AUDIO


def _transcode(src: Path, dest: Path) -> None:
    from runner.studio import edit
    from runner.studio.ffmpeg import MediaError

    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        edit.transcode(src, dest, fmt=dest.suffix.lower()[1:])
    except MediaError as exc:
        raise StepError(f"{dest.name}: transcoding the recovered {src.suffix} file to "
                        f"{dest.suffix} failed: {exc}") from None


def _playlist_name(name: str) -> str:
    return str(safe_relpath(name.replace("/", "_")))


def _place(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    # A copy, not a hard link: tags are written into the album file, and must never change
    # the blob in the store (whose name is its hash). A fresh temporary name (O_EXCL), so
    # nothing placed beside it can redirect the write.
    replace_copy(src, dest)


def _sha(p: Path) -> str:
    return sha256_file(p)
