"""The engine: runs a plan's instances concurrently in one anyio task group, journals every
paid step before and after it is paid for, and never pays twice (the numbered rules in
core.py's docstring); the order requests go in (critical path first), early release on a
task's first stage, and how long a remote step may wait.

    core.py      the run        priority.py  critical path first
    early.py     early release  deadlines.py how long a remote task may take

Never imports the CLI, the review page or the album export: it is handed a plan, a store,
providers and a progress view, and answers how the run went.
"""
