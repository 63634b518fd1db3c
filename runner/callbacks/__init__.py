"""Callbacks: the `--listen` HTTP listener that takes the services' callbacks, and the
run's registry of which tasks may be called back, what arrived for each, and when a task
with callbacks is polled anyway.

    listener.py  the loopback HTTP/1.1 server (h11 on anyio)
    registry.py  the run's registry

Never imports the engine, the store or the providers: the engine and the providers read
the registry, not the other way round.
"""
