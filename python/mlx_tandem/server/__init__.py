"""`tandem serve`: an OpenAI-compatible HTTP server over the continuous-batching scheduler, on one process
or as rank 0 of the two-rank pipeline."""

from .app import build_app
from .engine import Engine, QueueFull

__all__ = ["Engine", "QueueFull", "build_app"]
