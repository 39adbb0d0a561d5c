"""A compiled kernel library and its dispatch entry point (ctypes over the runtime's C API)."""
from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import BarrierDivergence, EmulationError, LimitExceeded, OutOfBounds

MAX_BUFFERS = 32
MAX_THREADS = 1024
MAX_THREADGROUP_MEMORY = 32768
_U64 = ctypes.c_uint64 * MAX_BUFFERS


class _LaunchDesc(ctypes.Structure):  # mirrors metal_emu::LaunchDesc in runtime/launch.h
    _fields_ = [("kernel", ctypes.c_int32), ("mode", ctypes.c_int32), ("grid", ctypes.c_uint32 * 3),
                ("tg", ctypes.c_uint32 * 3), ("nworkers", ctypes.c_int32), ("order", ctypes.c_int32),
                ("buf_ptr", _U64), ("buf_size", _U64), ("buf_bound", _U64), ("tg_size", _U64),
                ("bytes_read", _U64), ("bytes_written", _U64), ("err_kind", ctypes.c_int32),
                ("pad2", ctypes.c_int32), ("err_addr", ctypes.c_uint64), ("err_msg", ctypes.c_char * 2048)]


_ERRORS = {1: BarrierDivergence, 2: OutOfBounds, 3: LimitExceeded, 4: EmulationError}
# function-constant type codes (metal_emu::FcType) -> numpy dtype
_FC_DTYPES = {0: np.bool_, 1: np.int32, 2: np.uint32, 3: np.float32, 4: np.float16, 5: np.int16, 6: np.uint16,
              7: np.int8, 8: np.uint8}


@dataclass
class DispatchStats:
    """Bytes each device buffer saw from the lanes (no cache model), keyed by buffer index."""
    bytes_read: dict[int, int] = field(default_factory=dict)
    bytes_written: dict[int, int] = field(default_factory=dict)
    threadgroups: int = 0
    threads_per_threadgroup: int = 0
    seconds: float = 0.0


def _dims(v, what: str) -> tuple[int, int, int]:
    t = (int(v),) if isinstance(v, (int, np.integer)) else tuple(int(x) for x in v)
    if not 1 <= len(t) <= 3 or any(x < 0 for x in t):
        raise ValueError(f"metal_emu.dispatch: {what} must be 1 to 3 non-negative integers, got {v!r}")
    return t + (1,) * (3 - len(t))


class Library:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._lib = ctypes.CDLL(str(self.path), mode=os.RTLD_LOCAL | os.RTLD_NOW)
        lib = self._lib
        lib.metal_emu_kernel_name.restype = ctypes.c_char_p
        lib.metal_emu_kernel_file.restype = ctypes.c_char_p
        lib.metal_emu_kernel_max_threads.restype = ctypes.c_uint
        lib.metal_emu_dispatch.argtypes = [ctypes.POINTER(_LaunchDesc)]
        lib.metal_emu_fc_set.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
        if lib.metal_emu_launch_desc_size() != ctypes.sizeof(_LaunchDesc):
            raise EmulationError("metal_emu: runtime and Python disagree on the launch descriptor layout")
        self.kernels: dict[str, int] = {}
        self._info: dict[str, tuple[int, str, int]] = {}
        for i in range(lib.metal_emu_kernel_count()):
            name = lib.metal_emu_kernel_name(i).decode()
            self.kernels[name] = i
            self._info[name] = (lib.metal_emu_kernel_max_threads(i), lib.metal_emu_kernel_file(i).decode(),
                                lib.metal_emu_kernel_line(i))
        self._fcs = []
        for i in range(lib.metal_emu_fc_count()):
            idx, size, typ, name = ctypes.c_int(), ctypes.c_int(), ctypes.c_int(), ctypes.c_char_p()
            lib.metal_emu_fc_info(i, ctypes.byref(idx), ctypes.byref(name), ctypes.byref(size), ctypes.byref(typ))
            self._fcs.append((idx.value, name.value.decode(), size.value, typ.value))

    def __repr__(self) -> str:
        return f"<metal_emu.Library {self.path.parent.name}: {', '.join(sorted(self.kernels))}>"

    # ---- dispatch ---------------------------------------------------------------------------
    def dispatch(self, kernel: str, grid, threadgroup, buffers=None, threadgroup_memory=None,
                 function_constants=None, mode: str = "threads", threads: int | None = None,
                 order: str | None = None) -> DispatchStats:
        """Run `kernel` over the grid. mode="threads": grid counts threads (dispatchThreads, edge
        threadgroups may be partial); mode="threadgroups": grid counts threadgroups.
        order="reverse" (or METAL_EMU_ORDER=reverse) runs threadgroups, SIMD-groups and lanes last to
        first: a kernel whose results change with the order is missing a barrier."""
        if kernel not in self.kernels:
            raise ValueError(f"metal_emu.dispatch: unknown kernel '{kernel}'; this library has {sorted(self.kernels)}")
        if mode not in ("threads", "threadgroups"):
            raise ValueError(f"metal_emu.dispatch: mode must be 'threads' or 'threadgroups', got {mode!r}")
        max_threads, kfile, kline = self._info[kernel]
        where = f"kernel '{kernel}' ({kfile}:{kline})"
        g, tg = _dims(grid, "grid"), _dims(threadgroup, "threadgroup")
        if 0 in tg:
            raise ValueError(f"metal_emu.dispatch: threadgroup dimensions must be positive, got {threadgroup!r}")
        nt = tg[0] * tg[1] * tg[2]
        if nt > MAX_THREADS:
            raise LimitExceeded(f"{where}: threadgroup of {nt} threads {tg} exceeds the limit of {MAX_THREADS}")
        if max_threads and nt > max_threads:
            raise LimitExceeded(f"{where}: threadgroup of {nt} threads exceeds the kernel's "
                                f"max_total_threads_per_threadgroup({max_threads})")
        d = _LaunchDesc()
        d.kernel, d.mode = self.kernels[kernel], 0 if mode == "threads" else 1
        d.grid[:], d.tg[:] = g, tg
        d.nworkers = threads or int(os.environ.get("METAL_EMU_THREADS", 0)) or os.cpu_count() or 1
        order = order or os.environ.get("METAL_EMU_ORDER", "forward")
        if order not in ("forward", "reverse"):
            raise ValueError(f"metal_emu.dispatch: order must be 'forward' or 'reverse', got {order!r}")
        d.order = int(order == "reverse")
        keep, copy_back = self._bind_buffers(d, buffers or {})
        total_tg = 0
        for idx, nbytes in (threadgroup_memory or {}).items():
            if not 0 <= int(idx) < MAX_BUFFERS or int(nbytes) < 0:
                raise ValueError(f"metal_emu.dispatch: bad threadgroup_memory entry {idx}: {nbytes}")
            if int(nbytes) % 16:
                raise ValueError(f"metal_emu.dispatch: threadgroup_memory[{idx}] = {nbytes} is not a multiple of 16 "
                                 "(Metal's setThreadgroupMemoryLength requires it)")
            d.tg_size[int(idx)] = int(nbytes)
            total_tg += int(nbytes)
        if total_tg > MAX_THREADGROUP_MEMORY:
            raise LimitExceeded(f"{where}: {total_tg} bytes of threadgroup memory exceed the limit of "
                                f"{MAX_THREADGROUP_MEMORY}")
        self._set_function_constants(function_constants or {})
        t0 = time.perf_counter()
        rc = self._lib.metal_emu_dispatch(ctypes.byref(d))
        seconds = time.perf_counter() - t0
        for dst, src in copy_back:
            dst[...] = src
        del keep
        if rc:
            msg = d.err_msg.decode(errors="replace")
            if d.err_addr:
                loc = self._source_line(d.err_addr)
                if loc:
                    msg += f" at {loc}"
            raise _ERRORS.get(rc, EmulationError)(f"{where}: {msg}")
        ngroups = [(a + b - 1) // b for a, b in zip(g, tg)] if mode == "threads" else list(g)
        bound = [i for i in range(MAX_BUFFERS) if d.buf_bound[i]]
        return DispatchStats({i: int(d.bytes_read[i]) for i in bound}, {i: int(d.bytes_written[i]) for i in bound},
                             ngroups[0] * ngroups[1] * ngroups[2], nt, seconds)

    def _bind_buffers(self, d: _LaunchDesc, buffers: dict):
        keep, copy_back = [], []
        for idx, buf in buffers.items():
            if not isinstance(idx, (int, np.integer)) or not 0 <= idx < MAX_BUFFERS:
                raise ValueError(f"metal_emu.dispatch: buffer index must be 0..{MAX_BUFFERS - 1}, got {idx!r}")
            if isinstance(buf, np.ndarray):
                if not buf.flags.c_contiguous:
                    raise ValueError(f"metal_emu.dispatch: buffer {idx} must be C-contiguous")
                arr = buf
                if not buf.flags.writeable or buf.ctypes.data % 16:
                    arr = np.empty_like(buf)
                    arr[...] = buf
                    if buf.flags.writeable:
                        copy_back.append((buf, arr))
            elif isinstance(buf, (bytes, bytearray, memoryview)):
                raw = np.frombuffer(buf, dtype=np.uint8)
                arr = raw if raw.flags.writeable and raw.ctypes.data % 16 == 0 else raw.copy()
                if arr is not raw and raw.flags.writeable:
                    copy_back.append((raw, arr))
            else:
                raise ValueError(f"metal_emu.dispatch: buffer {idx} must be a numpy array or bytes, got {type(buf)}")
            keep.append(arr)
            d.buf_ptr[idx] = arr.ctypes.data if arr.nbytes else 0
            d.buf_size[idx] = arr.nbytes
            d.buf_bound[idx] = 1
        return keep, copy_back

    def _set_function_constants(self, values: dict) -> None:
        known = {idx for idx, *_ in self._fcs} | {name for _, name, *_ in self._fcs}
        for key in values:
            if key not in known:
                raise ValueError(f"metal_emu.dispatch: unknown function constant {key!r}; "
                                 f"declared: {[(i, n) for i, n, *_ in self._fcs]}")
        for i, (idx, name, size, typ) in enumerate(self._fcs):
            v = values.get(idx, values.get(name, values.get(name.split("::")[-1])))
            if v is None:
                self._lib.metal_emu_fc_set(i, None, 0)
                continue
            if typ not in _FC_DTYPES:
                raise ValueError(f"metal_emu.dispatch: function constant '{name}' has a type the emulator cannot set")
            raw = np.array([v], dtype=_FC_DTYPES[typ]).tobytes()
            assert len(raw) == size
            self._lib.metal_emu_fc_set(i, raw, 1)

    def _source_line(self, offset: int) -> str | None:
        """file:line of a faulting access: the first frame of the inline chain outside the shim."""
        if not shutil.which("addr2line"):
            return None
        r = subprocess.run(["addr2line", "-e", str(self.path), "-i", "-f", "-C", hex(offset - 1)],
                           capture_output=True, text=True)
        lines = r.stdout.splitlines()
        for loc in lines[1::2]:
            m = re.match(r"(.*):(\d+)", loc)
            if m and "/metal_emu/shim/" not in m.group(1) and m.group(1) != "??":
                return f"{m.group(1)}:{m.group(2)}"
        return None
