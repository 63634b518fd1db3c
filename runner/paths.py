"""Which files on this machine a recipe may read, and which folders sunoflow may write.

Recipes arrive in pull requests, so a path in a recipe is untrusted. The rules:

- A local path a recipe names (an `audio` or `clips` input given as a path, the `file`
  and `image_file` of a track object written into the recipe) is relative to the
  recipe's folder and must stay inside it, or inside a folder the person running
  sunoflow allowed with `--allow-path DIR`, *after* resolving symbolic links: a link in
  the folder that points outside is refused even if its target exists. Track objects
  made by earlier steps point into the state store, which is allowed too.
- Nothing under `.git` is readable (CI checkouts keep a token in `.git/config`).
- Literal paths are checked at validation (a positioned message), rendered ones by the
  engine right before the step runs, before anything is submitted or uploaded; providers
  read the resolved path that the check returns, never the raw text.
- sunoflow never makes symbolic links, so one inside a state directory beside the recipe
  was put there by someone else, most likely committed with the recipe so that our writes
  land outside: such a folder is refused before the run (`writable_dir`), as is a state
  directory or album folder beside the recipe that leads outside its folder.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from runner.errors import PathError, StepError, UsageError

FILE_FIELDS = ("file", "image_file")  # the fields of a track object that name local files
PATH_INPUTS = ("audio", "clips")  # the step inputs that take tracks or local paths
FORBIDDEN = (".git",)


class Outside(ValueError):
    """A path a recipe may not read. `str()` is the reason, without the step."""


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def file_suffix(name: str) -> str:
    """The suffix a stored file keeps from a file name or a URL's path (`.mp3`), lower-cased;
    "" unless it is a dot and one to five letters or digits (a signed link's path may end
    in anything)."""
    ext = os.path.splitext(name)[1].lower()
    return ext if ext and len(ext) <= 6 and ext[1:].isalnum() else ""


HASH_CHUNK = 1 << 16  # bytes read at a time when hashing a file


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file, read into one small buffer: `read(1 << 20)` allocated a
    megabyte for every file hashed, a 4 KB image too, in each worker thread doing it."""
    h = hashlib.sha256()
    buf = bytearray(HASH_CHUNK)
    view = memoryview(buf)
    with path.open("rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


@dataclass(frozen=True)
class Roots:
    """The folders a recipe may read from. All are absolute and resolved."""

    recipe_dir: Path
    allowed: tuple[Path, ...] = ()  # --allow-path
    store: Path | None = None  # the state store's blobs: files earlier steps made
    name: str = "the recipe's folder"  # what `recipe_dir` is, for messages

    @classmethod
    def of(cls, recipe_path: Path, allowed: Iterable[Path] = (),
           store: Path | None = None) -> Roots:
        return cls(recipe_path.resolve().parent, tuple(Path(a).resolve() for a in allowed),
                   store.resolve() if store is not None else None)

    @classmethod
    def project(cls, recipe_path: Path, allowed: Iterable[Path] = ()) -> Roots:
        """Where reusable recipes (`uses: ./x.yaml`) may come from: the git work tree that
        holds the recipe (recipes are code kept beside each other, as GitHub Actions'
        local actions are), or the recipe's folder when it is in none; and --allow-path."""
        folder = recipe_path.resolve().parent
        top = next((d for d in (folder, *folder.parents) if (d / ".git").exists()), None)
        return cls(top or folder, tuple(Path(a).resolve() for a in allowed),
                   name="the project" if top else "the recipe's folder")

    def resolve(self, text: str, base: Path | None = None) -> Path:
        """The file `text` names (relative to `base`, by default the recipe's folder),
        symlinks resolved; raises Outside when it may not be read."""
        if "\x00" in text:
            raise Outside(f"path {text!r} contains a NUL character")
        raw = Path(text)  # never expanduser: `~/.ssh/x` is a name inside the folder
        target = ((base or self.recipe_dir) / raw).resolve()
        roots = [self.recipe_dir, *self.allowed, *([self.store] if self.store else [])]
        inside = next((r for r in roots if _within(target, r)), None)
        if inside is None:
            lexical = Path(os.path.normpath((base or self.recipe_dir) / raw))
            via = "" if lexical == target or not any(_within(lexical, r) for r in roots) \
                else f" leads through a symbolic link to {target}, which"
            where = f"{self.name} ({self.recipe_dir})"
            if self.allowed:
                where += " and the --allow-path folders (" + ", ".join(map(str, self.allowed)) \
                    + ")"
            raise Outside(f"path {text!r}{via} is outside {where}; pass --allow-path DIR to "
                          "allow it")
        # Lower case: on a case-insensitive disk `.GIT/config` is `.git/config`.
        if any(part.lower() in FORBIDDEN for part in target.relative_to(inside).parts):
            raise Outside(f"path {text!r} is inside .git, which a recipe may not read")
        return target


def _within(p: Path, root: Path) -> bool:
    return p == root or root in p.parents


def allowed_dirs(values: Iterable[str]) -> tuple[Path, ...]:
    """`--allow-path` values as resolved folders; each must exist."""
    out = []
    for v in values:
        if not v.strip():
            # An empty value would resolve to the current folder: widening by accident.
            raise UsageError("--allow-path needs a folder (use --allow-path . for the "
                             "current one)")
        p = Path(v).expanduser().resolve()
        if not p.is_dir():
            raise UsageError(f"--allow-path {v}: no such folder")
        out.append(p)
    return tuple(out)


def local_paths(inputs: dict[str, Any]) -> Iterator[tuple[tuple[Any, ...], str]]:
    """Every value in a step's inputs that names a file on this machine, with where it is
    (`("audio",)`, `("clips", 1, "file")`). URLs are not local paths."""
    for name in PATH_INPUTS:
        if name in inputs:
            yield from _walk(inputs[name], (name,))


def _walk(value: Any, where: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], str]]:
    if isinstance(value, str):
        if value and not is_url(value):
            yield where, value
    elif isinstance(value, dict):
        for k in FILE_FIELDS:
            v = value.get(k)
            if isinstance(v, str) and v and not is_url(v):
                yield (*where, k), v
        if isinstance(value.get("tracks"), list):
            for i, t in enumerate(value["tracks"]):
                yield from _walk(t, (*where, "tracks", i))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, (*where, i))


def content_hashes(inputs: dict[str, Any], roots: Roots,
                   memo: dict[tuple[Any, ...], str]) -> dict[str, str]:
    """The sha256 of every local file a step's inputs name, by where it is named
    (`{"audio": "<sha>", "clips.1.file": ...}`): what enters the step's key, so that a
    file replaced under the same name reruns what reads it (DESIGN 5). Files in the state
    store are left out: their path already is their content hash (plan.keys.canonical). A file
    that is not there hashes as "missing" (the step then fails when it reads it). `memo`
    (per run) holds each file's hash by identity, size and modification time, so a large
    file read by many steps is read once."""
    out: dict[str, str] = {}
    for where, text in local_paths(inputs):
        if "/blobs/sha256/" in text:
            continue
        try:
            target = roots.resolve(text)
            st = target.stat()
        except (Outside, OSError):
            out[".".join(map(str, where))] = "missing"
            continue
        ident = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        sha = memo.get(ident)
        if sha is None:
            sha = memo[ident] = sha256_file(target)
        out[".".join(map(str, where))] = sha
    return out


def label(step: str, uses: str) -> str:
    """How a path message names its step: `step 'remix' (upload_cover)`."""
    return f"step '{step}' ({uses})"


def check_inputs(inputs: dict[str, Any], roots: Roots, *, step: str, uses: str) -> None:
    """Raise StepError (worded as at validation) for the first input path that may not be
    read. Called by the engine before a step submits, uploads or runs anything."""
    for _where, text in local_paths(inputs):
        try:
            roots.resolve(text)
        except Outside as exc:
            raise StepError(str(exc), step=label(step, uses)) from None


def readable(op_roots: Roots | None, base_dir: Path, text: str, *, step: str) -> Path:
    """The resolved file a provider reads for `text`. Providers call this at the point of
    use, so no path reaches ffmpeg or an upload unchecked."""
    roots = op_roots or Roots(base_dir.resolve())
    try:
        return roots.resolve(text)
    except Outside as exc:
        raise StepError(str(exc), step=step) from None


# --- where sunoflow writes ---------------------------------------------------------------

def writable_dir(path: Path, what: str, recipe_path: Path, *, scan: bool) -> None:
    """Refuse a folder inside the recipe's folder (so possibly committed with it) that
    would send our writes elsewhere: one that resolves outside the recipe's folder, or,
    with `scan`, one holding a symbolic link anywhere below (sunoflow makes none). The
    album folder needs no scan: export checks each destination and writes through fresh
    names only. A folder elsewhere was chosen by the person running sunoflow: trusted."""
    folder = Path(os.path.abspath(recipe_path)).parent
    lexical = Path(os.path.abspath(path))
    if not _within(lexical, folder):
        return
    if not _within(lexical.resolve(), folder.resolve()):
        raise UsageError(f"{what} {path} leads through a symbolic link to "
                         f"{lexical.resolve()}, outside the recipe's folder; remove the link "
                         "or name another folder")
    if scan and lexical.is_dir():
        link = find_symlink(lexical)
        if link is not None:
            raise UsageError(f"{what} {path} contains a symbolic link ({link} -> "
                             f"{os.readlink(link)}); sunoflow never makes links, so it was "
                             "put there: remove it")


def _probe(folder: Path) -> None:
    """Create and remove a file in `folder`, making the folder (and its missing parents)
    for the test and removing them again; OSError when that fails."""
    made: list[Path] = []
    p = folder
    while not p.exists() and p != p.parent:
        made.append(p)
        p = p.parent
    try:
        for d in reversed(made):
            d.mkdir()
        fd, probe = fresh_file(folder / "write-probe")
        os.close(fd)
        probe.unlink()
    finally:
        for d in made:
            try:
                d.rmdir()
            except OSError:
                break


def can_write_dir(path: Path, what: str) -> None:
    """Make sure sunoflow can create files in the folder `path` (or make it), before
    anything is paid for: PathError (exit 1) naming the folder as the user gave it, or
    UsageError (exit 2) when it names a file. A file is really made and removed: the
    permission bits do not tell (root ignores them; a read-only mount does not)."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{what} {path} is a file, not a folder")
    try:
        _probe(path)
    except OSError as exc:
        raise PathError(f"cannot write to {what} {path}: {exc.strerror or exc}") from None


def can_write_file(path: Path, what: str) -> None:
    """Make sure the file `path` can be written (a new file in its folder, renamed over
    it): as can_write_dir."""
    if path.is_dir():
        raise UsageError(f"{what} {path} is a folder; name a file")
    try:
        _probe(path.parent)
    except OSError as exc:
        raise PathError(f"cannot write {what} {path}: {exc.strerror or exc}") from None


def find_symlink(root: Path) -> Path | None:
    """The first symbolic link under `root` (not following links), or None."""
    stack = [root]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    if entry.is_symlink():
                        return Path(entry.path)
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
        except FileNotFoundError:
            continue
    return None


def fresh_file(dest: Path) -> tuple[int, Path]:
    """A new temporary file beside `dest`, open for writing: created exclusively (O_EXCL
    never opens an existing file or link), with the permissions a plain file gets. Rename
    it over `dest` when written: a link someone put at `dest` is replaced, not followed."""
    tmp = dest.with_name(f".{dest.name[:200]}.{secrets.token_hex(4)}.part")
    return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), tmp


def replace_text(dest: Path, text: str, *, fsync: bool = False) -> None:
    """Write `text` to `dest` through a fresh temporary file (see fresh_file)."""
    replace_with(dest, lambda f: f.write(text), fsync=fsync)


def replace_copy(src: Path, dest: Path) -> None:
    """Replace `dest` with a copy of `src` through a fresh temporary file (see fresh_file):
    a reader never sees half a file, and a link at `dest` is replaced, not written through."""
    fd, tmp = fresh_file(dest)
    try:
        with os.fdopen(fd, "wb") as f, src.open("rb") as s:
            shutil.copyfileobj(s, f, 1 << 20)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def replace_with(dest: Path, write: Callable[[TextIO], object], *,
                 fsync: bool = False) -> None:
    """Replace `dest` with what `write` writes into a fresh temporary file: for text too
    large to hold whole (a report of every step instance, written piece by piece)."""
    fd, tmp = fresh_file(dest)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            write(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
