"""Providers: one small interface (base.py), one module each, and a registry
(registry.py: kind -> class).

A provider knows HTTP (or ffmpeg) and nothing of the graph; it never imports the store or
the engine (what it keeps across runs, such as upload URLs, it is handed: base.Uploads).
The interface's names are re-exported here for the engine and the tests; nothing else is
imported here, so that no provider module, which imports this package, closes a circle.
"""

from runner.providers.base import (
    CallbackProvider,
    Fetch,
    First,
    Op,
    Produced,
    Provider,
    Result,
    Streams,
    Submitted,
    Uploads,
)

__all__ = ["CallbackProvider", "Fetch", "First", "Op", "Produced", "Provider", "Result",
           "Streams", "Submitted", "Uploads"]
