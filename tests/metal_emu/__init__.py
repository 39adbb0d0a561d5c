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

import os
import platform
import shutil
from pathlib import Path

from .compiler import build, cache_dir
from .errors import BarrierDivergence, CompileError, EmulationError, LimitExceeded, OutOfBounds
from .library import DispatchStats, Library

__all__ = ["compile", "available", "Library", "DispatchStats", "EmulationError", "BarrierDivergence", "OutOfBounds",
           "LimitExceeded", "CompileError", "cache_dir"]

_loaded: dict[Path, Library] = {}


def available() -> tuple[bool, str]:
    """(True, "") where the emulator is known to work: Linux on x86-64 or aarch64 with a C++20
    compiler. Elsewhere (macOS, where the real GPU runs the kernels) it is opt-in with
    METAL_EMU_FORCE=1. Tests that use the emulator skip with the reason otherwise."""
    from .compiler import CXX

    if not shutil.which(CXX):
        return False, f"metal_emu: no C++ compiler ({CXX})"
    system, machine = platform.system(), platform.machine().lower()
    if system == "Linux" and machine in ("x86_64", "amd64", "aarch64", "arm64"):
        return True, ""
    if os.environ.get("METAL_EMU_FORCE") == "1":
        return True, ""
    return False, f"metal_emu: untested on {system}/{machine} (set METAL_EMU_FORCE=1 to try)"


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
