"""`sunoflow review RECIPE`: serve the page, or `--export DIR` a static copy."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from runner import paths
from runner.cli.run import default_out_dir, default_state_dir
from runner.errors import UsageError
from runner.plan import build as planner


def main(recipe: str, *, overrides: dict[str, Any], cli_args: list[str],
         state_dir: str | None, out_dir: str | None, host: str | None, port: int,
         open_browser: bool, export_dir: str | None) -> int:
    # A recipe that does not plan is refused here, positioned.
    r = planner.check(recipe, overrides=overrides).recipe
    rpath = Path(recipe)
    sdir = Path(state_dir) if state_dir else default_state_dir(r.path)
    odir = Path(out_dir) if out_dir else default_out_dir(r.path)
    if export_dir is not None:
        from runner.review.export import export

        dest = Path(export_dir)
        if dest.resolve() in (sdir.resolve(), odir.resolve()):
            raise UsageError(f"--export {export_dir}: choose a folder of its own, not the "
                             "state directory or the album folder")
        paths.writable_dir(dest, "the export folder", r.path, scan=False)
        index, n = export(rpath, sdir, odir, overrides, dest)
        print(f"sunoflow review: wrote {index} ({n} files); open it in any browser")
        return 0
    if port < 0 or port > 65535:
        raise UsageError(f"--port {port}: a port is 0 (any free one) to 65535")
    from runner.review.server import Review, serve

    review = Review(rpath, sdir, odir, overrides, cli_args, secrets.token_urlsafe(24))
    try:
        return serve(review, host or "127.0.0.1", port, open_browser=open_browser)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host or '127.0.0.1'}:{port}: "
                         f"{exc.strerror or exc}") from None
