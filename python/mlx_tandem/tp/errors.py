"""Typed failures of tensor-parallel mode, and the exit codes a rank ends with on each."""

from __future__ import annotations

EXIT_COLLECTIVE_FAILED = 3   # the backend reported a lost peer (MLX raised)
EXIT_COLLECTIVE_TIMEOUT = 4  # a collective did not finish within the deadline (watchdog)


class ShardError(ValueError):
    """The model cannot be split across the ranks as asked (numbers in the message)."""


class TPError(RuntimeError):
    """A collective between the ranks failed."""


class CollectiveFailed(TPError):
    """The MLX backend raised inside a collective (a peer closed its connection)."""


class CollectiveTimeout(TPError):
    """A collective did not finish within the deadline (a peer stopped, or the link went silent)."""


def exit_code(e: TPError) -> int:
    """Print a failed collective's message and return the rank's exit code."""
    import sys

    print(f"tandem tp: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
    return EXIT_COLLECTIVE_TIMEOUT if isinstance(e, CollectiveTimeout) else EXIT_COLLECTIVE_FAILED
