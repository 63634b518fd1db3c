"""The album folder: a run's `outputs:` copied from the store into --out, named by their
templates (each path component sanitised), tagged, and listed; and the tags themselves
(ID3, Vorbis comments), also written by the `tag` step.

    export.py  the album folder       tags.py  tags in audio files (mutagen)

Never imports the engine, the providers or the CLI: it is handed the run's results.
"""
