"""The uploads cache: which local files were uploaded where, kept in the state directory
(`uploads.json`) so a later run does not upload the same content again.

The provider decides what a saved entry is still good for (its host, its age); this
module only keeps the file: read once, written whole and atomically. It implements
runner.providers.base.Uploads, which is all a provider sees of the state directory.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

UPLOADS_VERSION = 1


class UploadsFile:
    def __init__(self, root: Path) -> None:
        self.path = root / "uploads.json"

    def load(self) -> dict[str, dict[str, Any]]:
        if not self.path.exists():
            return {}
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            doc = {}  # a damaged cache only costs a re-upload
        if isinstance(doc, dict) and doc.get("version") == UPLOADS_VERSION:
            return dict(doc.get("uploads") or {})
        return {}

    def save(self, uploads: dict[str, dict[str, Any]]) -> None:
        path = self.path
        text = json.dumps({"version": UPLOADS_VERSION, "uploads": uploads}, indent=1,
                          sort_keys=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".uploads.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
