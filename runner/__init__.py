"""sunoflow: album recipes for Suno-style music APIs."""

__version__ = "0.1.0"
