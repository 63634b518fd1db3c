"""The command line: parse arguments, dispatch each subcommand, map errors to the
documented exit codes (0 ok; 1 step failed or stopped; 2 invalid recipe or usage; 3
--frozen would pay; 130 interrupted), and write a crash log for an internal error.

    main.py   parse and dispatch (`sunoflow`, `python -m runner`), errors to exit codes
    commands.py  one function per subcommand
    run.py    one `sunoflow run`, wired: load, plan, store, providers, engine, export
    crashlog.py  where an internal error's traceback goes

The top of the house: it may import any part. No part imports it but `sunoflow review`'s
command, which reads run.py's default folders (so that both commands find the same ones).
"""
