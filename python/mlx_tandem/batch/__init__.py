"""Continuous batching: a scheduler over an open set of sequences (`Scheduler`, `Sequence`) and the backends
that run its jobs (`LocalBackend` in this process; pipeline.PipelineBackend over the two ranks)."""

from .local import LocalBackend
from .scheduler import Event, Job, Scheduler, Sequence

__all__ = ["Event", "Job", "LocalBackend", "Scheduler", "Sequence"]
