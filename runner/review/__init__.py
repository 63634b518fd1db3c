"""`sunoflow review`: the page where a musician hears every take, keeps one, rerolls a
song, and sees the graph and the timeline of the run; `--export` writes it as a static
folder. One folder, so that it moves as one:

    model.py    what the page shows, read from the recipe, takes file, state and album
    history.py  the journal event by event (every result a key has had, the times)
    pages.py    rendering (Jinja2 templates in templates/, assets in assets/)
    svg.py      the graph and the timeline as SVG
    waveform.py a take's waveform picture, made once with the bundled ffmpeg
    server.py   the loopback HTTP server (token, Host check, Range)
    actions.py  its only writes: keep a take, reroll one song (never paying twice)
    export.py   the static copy
    command.py  what `sunoflow review` does with its arguments

It reads what a run left (recipe, takes file, state, album). It never imports the
providers: a reroll, the one thing that pays, runs `sunoflow reroll` in a process of its
own, so it goes through the engine's never-pay-twice path like any run.
"""
