"""The offline studio: real audio, pictures, video and text made on this machine, with
the ffmpeg binary of the imageio-ffmpeg wheel and pure Python. The local provider performs
every step type with it; the album export, the review page, the fake and the service
providers borrow a few of its parts (transcode, trim, concat, probe, the ffmpeg command
line, the LRC writer, the random stream).

- ``ffmpeg.py``  running the bundled ffmpeg: its argv, environment, input whitelist,
  error messages (``MediaError``), atomic outputs and the one audio shape.
- ``probe.py``   what a file holds: formats, codecs and exact durations; PCM.
- ``compose.py`` the local synthesis of music: ``synth``, ``extend``, ``mix``.
- ``edit.py``    trim, fade, concat, normalize (loudness), transcode, separate.
- ``art.py``     the artwork of a seed and the teaser video.
- ``textgen.py`` lyrics, titles, style prompts, word timings and the one LRC writer.
- ``dice.py``    the one deterministic random stream (and the local provider's seeds):
  the same arguments give the same bytes on every machine.

Arrows point one way: dice and ffmpeg at the bottom, probe above ffmpeg, compose, edit and
art above probe; textgen needs only dice.

The studio knows nothing of sunoflow around it: it must never import the engine, the
providers, the store, the plan, the recipe language, the CLI, the step types, callbacks,
report, album, review or the fake (only the standard library, imageio-ffmpeg and itself).
The fake and the providers may import the studio.
"""
