"""The waveform picture of a take: made once with the bundled ffmpeg, kept in the state
directory beside the store (`waveforms/<sha256>.png`, named by the audio's content, so
it is never made twice and never stale)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from runner.studio.ffmpeg import MediaError, argv, execute, input_args

SIZE = "640x96"
COLOUR = "0x2f5d8a"  # the page's take colour; the picture is decoration, not information
_lock = threading.Lock()  # two requests for one picture make it once


def path_for(state_dir: Path, audio_sha: str) -> Path:
    return state_dir / "waveforms" / f"{audio_sha}.png"


def make(state_dir: Path, audio: Path) -> Path | None:
    """The waveform PNG of `audio` (a stored file), made on first use; None when ffmpeg
    cannot read it (the page then shows the player alone)."""
    sha = audio.name[:64]
    dest = path_for(state_dir, sha)
    if dest.exists():
        return dest
    with _lock:
        if dest.exists():
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part.png")
        cmd = argv("-y", *input_args(audio), "-filter_complex",
                   f"aformat=channel_layouts=mono,showwavespic=s={SIZE}:colors={COLOUR}"
                   ":scale=sqrt:filter=peak", "-frames:v", "1", str(tmp))
        try:
            # Bounded (killed past its limit, which grows with the take's size).
            execute("waveform", audio, cmd)
        except MediaError:
            tmp.unlink(missing_ok=True)
            return None
        os.replace(tmp, dest)
    return dest
