"""Tags in audio files: ID3 in MP3 (and in a WAV's ID3 chunk), Vorbis comments in FLAC,
written with mutagen. Used by the album export and by the `tag` step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TAGGABLE = (".mp3", ".flac", ".wav")


def write_tags(path: Path, tags: dict[str, Any]) -> None:
    suffix = path.suffix.lower()
    text = {k: str(v) for k, v in tags.items() if v is not None and k != "cover"}
    cover = tags.get("cover")
    if suffix == ".flac":
        from mutagen.flac import FLAC, Picture

        f = FLAC(path)
        names = {"title": "TITLE", "artist": "ARTIST", "album": "ALBUM", "track": "TRACKNUMBER",
                 "lyrics": "LYRICS", "genre": "GENRE", "year": "DATE"}
        for k, v in text.items():
            f[names.get(k, k.upper())] = v
        if cover and Path(str(cover)).is_file():
            pic = Picture()
            pic.type, pic.mime = 3, _mime(Path(str(cover)))
            pic.data = Path(str(cover)).read_bytes()
            f.clear_pictures()
            f.add_picture(pic)
        f.save()
        return
    from mutagen import id3

    frames = {"title": id3.TIT2, "artist": id3.TPE1, "album": id3.TALB, "track": id3.TRCK,
              "genre": id3.TCON, "year": id3.TDRC}
    if suffix == ".wav":
        from mutagen.wave import WAVE

        w = WAVE(path)
        if w.tags is None:
            w.add_tags()
        tagset: Any = w.tags
    else:
        try:
            tagset = id3.ID3(path)
        except id3.ID3NoHeaderError:
            tagset = id3.ID3()
    for k, v in text.items():
        if k in frames:
            tagset.setall(frames[k].__name__, [frames[k](encoding=3, text=v)])
        elif k == "lyrics":
            tagset.setall("USLT", [id3.USLT(encoding=3, lang="eng", desc="", text=v)])
    if cover and Path(str(cover)).is_file():
        tagset.setall("APIC", [id3.APIC(encoding=3, mime=_mime(Path(str(cover))), type=3,
                                        desc="cover", data=Path(str(cover)).read_bytes())])
    if suffix == ".wav":
        w.save()
    else:
        tagset.save(path, v2_version=4)


def _mime(p: Path) -> str:
    return "image/png" if p.suffix.lower() == ".png" else "image/jpeg"
