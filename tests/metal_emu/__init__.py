"""Metal-on-CPU emulator: runs the project's .metal kernels on the CPU for the tests.

    import metal_emu                                   # tests/ on sys.path
    lib = metal_emu.compile(["metal/x.metal"], include_dirs=["metal"], defines={})
    stats = lib.dispatch("kernel_host_name", grid=(gx, gy, gz), threadgroup=(tx, ty, tz),
                         buffers={0: array_or_bytes, ...}, threadgroup_memory={0: nbytes},
                         function_constants={}, mode="threads")   # or "threadgroups"
    stats.bytes_read[0], stats.bytes_written[2]

See README.md in this directory for what it checks and what only real hardware can.
"""
from __future__ import annotations

from pathlib import Path

from .build import build, cache_dir
from .errors import BarrierDivergence, CompileError, EmulationError, LimitExceeded, OutOfBounds
from .library import DispatchStats, Library

__all__ = ["compile", "Library", "DispatchStats", "EmulationError", "BarrierDivergence", "OutOfBounds",
           "LimitExceeded", "CompileError", "cache_dir"]

_loaded: dict[Path, Library] = {}


def compile(sources, include_dirs=(), defines=None) -> Library:  # noqa: A001 - the contract's name
    """Compile .metal sources (paths) into a Library; cached on disk by content hash."""
    if isinstance(sources, (str, Path)):
        sources = [sources]
    srcs = [Path(s).resolve() for s in sources]
    if not srcs:
        raise ValueError("metal_emu.compile: no sources given")
    for s in srcs:
        if not s.is_file():
            raise ValueError(f"metal_emu.compile: no such source file: {s}")
    incs = [Path(d).resolve() for d in include_dirs]
    path = build(srcs, incs, dict(defines or {}))
    if path not in _loaded:
        _loaded[path] = Library(path)
    return _loaded[path]
