"""The offline studio: every operation on audio, images and video, with the ffmpeg binary
that the imageio-ffmpeg wheel ships, and deterministic text (lyrics, titles, styles, word
timings). The local provider makes music with it; the album export and the review page's
waveforms use it too.

    media.py    ffmpeg: probe, synthesis, edits, artwork and video
    textgen.py  deterministic text

Never imports the engine, the store, the providers or the CLI: it is a toolbox of pure
operations on files, handed paths and parameters.
"""
