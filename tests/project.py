"""A folder made a git work tree, as a user's project is: reusable recipes may be called from
anywhere inside it (runner.paths.Roots.project)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git_init(folder: Path) -> None:
    subprocess.run(["git", "init", "-q", str(folder)], check=True, capture_output=True)
