"""Where an internal error's traceback goes: a new private file, in the state directory
when the run has one open, else in the system's temporary folder.

The temporary folder is shared with every user of the machine, so a predictable name
there (`sunoflow-crash-<pid>.log`) lets anyone plant a symbolic link that our write
would follow. The file is made by `tempfile.mkstemp`: a random name, created with
O_EXCL (never an existing file or link) and readable by its owner only.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import tempfile
from importlib import metadata
from pathlib import Path

_state_dir: Path | None = None
PACKAGES = ("httpx", "anyio", "jinja2", "PyYAML", "jsonschema", "mutagen", "imageio-ffmpeg")


def use(state_dir: Path) -> None:
    """The run's state directory is open: a crash from now on is logged there."""
    global _state_dir
    _state_dir = state_dir


def _versions() -> str:
    from runner import __version__

    found = []
    for name in PACKAGES:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return (f"sunoflow {__version__}, Python {platform.python_version()} "
            f"({sys.platform}, {platform.machine()})\n" + ", ".join(found) + "\n")


def write(traceback_text: str) -> Path | None:
    """The traceback, with versions, in a new file; its path, or None when no folder
    takes it (one that cannot hold the text, a full disk, is passed over)."""
    text = _versions() + "\n" + traceback_text
    folders = [d for d in (_state_dir, Path(tempfile.gettempdir())) if d is not None]
    for folder in folders:
        try:
            fd, name = tempfile.mkstemp(prefix=f"sunoflow-crash-{os.getpid()}-",
                                        suffix=".log", dir=folder)
        except OSError:
            continue
        try:
            with os.fdopen(fd, "w", encoding="utf-8", errors="replace") as f:
                f.write(text)
        except OSError:
            # A full disk gives the file a name but not its text: leave no empty log
            # behind and try the next folder.
            with contextlib.suppress(OSError):
                os.unlink(name)
            continue
        return Path(name)
    return None
