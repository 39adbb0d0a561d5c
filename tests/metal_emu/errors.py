"""Exceptions raised by the emulator."""


class EmulationError(RuntimeError):
    """A kernel did something a GPU would hang on, crash on, or silently get wrong."""


class BarrierDivergence(EmulationError):
    """Lanes of a threadgroup (barrier) or SIMD-group (simd_*) met at different call sites, or some had exited."""


class OutOfBounds(EmulationError):
    """A lane read or wrote outside a bound device buffer (or through a null/unbound pointer)."""


class LimitExceeded(EmulationError):
    """A launch broke an Apple limit: more than 1024 threads or 32 KB threadgroup memory per threadgroup."""


class CompileError(EmulationError):
    """The Metal source could not be translated or compiled as C++ against the shim."""
