"""Pictures: the artwork drawn for a seed (``cover_image``) and the teaser video
(``video``: the artwork with an animated waveform of the audio)."""

from __future__ import annotations

from pathlib import Path

from runner.studio.dice import Dice
from runner.studio.ffmpeg import (
    CHANNELS,
    NORMALISE,
    RATE,
    MediaError,
    atomic,
    check_input,
    file_url,
    input_args,
    num,
    run,
)

_IMAGE_CODECS = {
    ".png": ["-c:v", "png", "-pix_fmt", "rgb24"],
    ".jpg": ["-c:v", "mjpeg", "-pix_fmt", "yuvj444p", "-q:v", "3"],
    ".jpeg": ["-c:v", "mjpeg", "-pix_fmt", "yuvj444p", "-q:v", "3"],
}


def _hsv(h: float, s: float, v: float) -> str:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    r, g, b = ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))[i]
    return f"0x{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"


def _artwork(seed: str, size: int) -> str:
    """A filter chain drawing the artwork for ``seed``: a four-colour gradient under
    rippled rings, with a vignette. Only numbers derived from the hash enter the graph."""
    dice = Dice("sunoflow-cover-v1", seed)
    hue = dice.random()
    spread = dice.uniform(0.06, 0.4)
    colors = [
        _hsv((hue + k * spread) % 1.0, dice.uniform(0.45, 0.9), dice.uniform(0.35, 1.0))
        for k in range(4)
    ]
    kind = dice.choice(("linear", "radial", "square"))
    pts = [dice.randint(0, size - 1) for _ in range(4)]
    cx, cy = dice.randint(size // 5, 4 * size // 5), dice.randint(size // 5, 4 * size // 5)
    wave = num(size / dice.uniform(30.0, 90.0))
    petals = dice.randint(0, 7)
    wobble = num(dice.uniform(0.0, 2.5))
    opacity = num(dice.uniform(0.35, 0.7))
    rings = (
        f"128+110*sin(hypot(X-{cx},Y-{cy})/{wave}+{wobble}*sin({petals}*atan2(Y-{cy},X-{cx})))"
    ).replace(",", "\\,")
    grad = (
        f"gradients=s={size}x{size}:c0={colors[0]}:c1={colors[1]}:c2={colors[2]}"
        f":c3={colors[3]}:nb_colors=4:x0={pts[0]}:y0={pts[1]}:x1={pts[2]}:y1={pts[3]}"
        f":type={kind}:seed={dice.randint(0, 2**31 - 1)}:speed=0:d=1:r=1"
    )
    return (
        f"{grad},format=gbrp[art_g];"
        f"color=c=gray:s={size}x{size}:d=1:r=1,format=gray,geq=lum={rings},"
        f"format=gbrp[art_p];"
        f"[art_g][art_p]blend=all_mode=softlight:all_opacity={opacity},vignette=PI/5"
    )


def cover_image(out: Path, *, seed: str, size: int = 512) -> None:
    """Draw square artwork of ``size`` pixels for ``seed`` into ``out`` (.png or .jpg)."""
    out = Path(out)
    codec = _IMAGE_CODECS.get(out.suffix.lower())
    if codec is None:
        raise MediaError(
            f"cover_image {out}: unsupported image suffix {out.suffix!r} (use .png or .jpg)"
        )
    if not 16 <= size <= 4096:
        raise MediaError(f"cover_image {out}: size {size} must be between 16 and 4096")
    graph = f"{_artwork(seed, size)}[art]"
    with atomic([out]) as (tmp,):
        run(
            "cover_image",
            out,
            [
                "-filter_complex_threads",
                "1",
                "-filter_complex",
                graph,
                "-map",
                "[art]",
                "-frames:v",
                "1",
                *codec,
                "-map_metadata",
                "-1",
                "-fflags",
                "+bitexact",
                "-flags:v",
                "+bitexact",
                "-f",
                "image2",
                "-update",
                "1",
                "-y",
                file_url(tmp),
            ],
        )


_VIDEO_W, _VIDEO_H, _VIDEO_FPS = 640, 360, 20


def _tag_text(text: str) -> str:
    """A tag value on ffmpeg's command line: one line, no control characters, bounded."""
    return "".join(c if c.isprintable() else " " for c in text)[:200]


def video(audio: Path, out: Path, *, seed: str, image: Path | None = None,
          title: str = "", artist: str = "") -> None:
    """Render an MP4 (H.264 + AAC) as long as ``audio``: the artwork (``image``, or the
    one :func:`cover_image` draws for ``seed``) over a blurred copy of itself, and an
    animated waveform of the audio beside it. ``title`` and ``artist`` go into the MP4's
    tags, which players show (not drawn on the picture: that would need a font, and the
    same bytes on every machine matter more)."""
    audio, out = Path(audio), Path(out)
    check_input("video", audio)
    if out.suffix.lower() != ".mp4":
        raise MediaError(f"video {out}: the output must be an .mp4 file")
    if image is not None:
        check_input("video", Path(image))
    dice = Dice("sunoflow-video-v1", seed)
    wave_colour = _hsv(dice.random(), dice.uniform(0.2, 0.6), 1.0)
    w, h, fps = _VIDEO_W, _VIDEO_H, _VIDEO_FPS
    thumb = 240
    inputs = input_args(audio)
    if image is None:
        picture = _artwork(seed, thumb * 2)
    else:
        # The first frame only, should the "image" be an animation.
        picture = "[1:v]trim=end_frame=1,format=gbrp"
        inputs += input_args(Path(image))
    top = (h - thumb) // 2
    lines = [
        f"{picture},split=2[pic_a][pic_b]",
        f"[pic_a]scale={w}:{h}:force_original_aspect_ratio=increase,crop={w}:{h},"
        "gblur=sigma=18,eq=brightness=-0.18[bg]",
        f"[pic_b]scale={thumb}:{thumb}:force_original_aspect_ratio=increase,"
        f"crop={thumb}:{thumb}[thumb]",
        # Composed and converted once, then repeated: the still costs one frame, and the
        # per-frame overlay below works in yuv420 without converting whole frames.
        f"[bg][thumb]overlay=40:{top},format=yuv420p,loop=loop=-1:size=1:start=0,fps={fps}[still]",
        f"[0:a]{NORMALISE},asplit=2[snd][wav_in]",
        # At 8 kHz a frame's worth of audio (400 samples) is about one sample per pixel
        # column: all the waveform can show, at a fifth of the cost.
        f"[wav_in]aresample=8000,showwaves=s=320x{thumb}:mode=cline:rate={fps}"
        f":colors={wave_colour}:draw=full,format=yuva420p[waves]",
        f"[still][waves]overlay=300:{top}:shortest=1:format=yuv420[v]",
    ]
    with atomic([out]) as (tmp,):
        run(
            "video",
            out,
            [
                *inputs,
                "-filter_complex_threads",
                "1",
                "-filter_complex",
                ";".join(lines),
                "-map",
                "[v]",
                "-map",
                "[snd]",
                # x264's output depends on its thread count: pin it to one.
                "-c:v",
                "libx264",
                "-preset",
                "superfast",
                "-crf",
                "26",
                "-threads",
                "1",
                "-pix_fmt",
                "yuv420p",
                "-g",
                str(fps * 10),
                "-r",
                str(fps),
                # The native AAC encoder's defaults cost ten times real time here; these
                # switches bring it to about 40x at no audible cost for a teaser.
                "-c:a",
                "aac",
                "-aac_coder",
                "fast",
                "-aac_pns",
                "0",
                "-aac_tns",
                "0",
                "-aac_is",
                "0",
                "-aac_ms",
                "0",
                "-b:a",
                "192k",
                "-ar",
                str(RATE),
                "-ac",
                str(CHANNELS),
                "-map_metadata",
                "-1",
                *(["-metadata", f"title={_tag_text(title)}"] if title else []),
                *(["-metadata", f"artist={_tag_text(artist)}"] if artist else []),
                "-fflags",
                "+bitexact",
                "-flags",
                "+bitexact",
                "-movflags",
                "+faststart",
                "-f",
                "mp4",
                "-y",
                file_url(tmp),
            ],
        )
