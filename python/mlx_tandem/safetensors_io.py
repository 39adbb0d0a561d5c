"""Strict safetensors reading (memory-mapped, one tensor at a time) and streaming writing.

Our own small reader rather than mx.load: it validates the header against the file size (so a
truncated download is a clear error, not garbage), reads F8_E4M3 tensors as uint8 codes, and
touches only the bytes of the tensors asked for.
"""

from __future__ import annotations

import json
import os
import struct
import mlx.core as mx
import numpy as np

# safetensors dtype -> (numpy storage dtype, mlx dtype the tensor becomes)
DTYPES = {
    "F32": (np.float32, mx.float32), "F16": (np.float16, mx.float16),
    "BF16": (np.uint16, mx.bfloat16), "F8_E4M3": (np.uint8, mx.uint8),
    "U8": (np.uint8, mx.uint8), "I8": (np.int8, mx.int8), "I32": (np.int32, mx.int32),
    "I64": (np.int64, mx.int64), "U32": (np.uint32, mx.uint32), "BOOL": (np.bool_, mx.bool_),
    "F64": (np.float64, mx.float32),
}
_MAX_HEADER = 100 * 1024 * 1024


class SafetensorsFile:
    def __init__(self, path: str):
        self.path = path
        try:
            size = os.path.getsize(path)
            with open(path, "rb") as f:
                head = f.read(8)
                if len(head) < 8:
                    raise ValueError("file shorter than the 8-byte header length")
                (n,) = struct.unpack("<Q", head)
                if n > min(_MAX_HEADER, size - 8):
                    raise ValueError(f"header length {n} exceeds the file size {size}")
                header = json.loads(f.read(n))
        except FileNotFoundError:
            raise FileNotFoundError(f"safetensors: missing file {path}") from None
        except (ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"safetensors: {path} is not a valid safetensors file: {e}") from None
        self.metadata = header.pop("__metadata__", None) or {}
        self.data_start = 8 + n
        self.tensors: dict[str, dict] = {}
        for name, info in header.items():
            try:
                dtype, shape, (lo, hi) = info["dtype"], list(info["shape"]), info["data_offsets"]
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"safetensors: {path}: malformed entry for {name!r}") from None
            if dtype not in DTYPES:
                raise ValueError(f"safetensors: {path}: tensor {name!r} has unsupported dtype {dtype}")
            itemsize = np.dtype(DTYPES[dtype][0]).itemsize
            if any(int(d) < 0 for d in shape) or hi - lo != int(np.prod(shape, dtype=np.int64)) * itemsize:
                raise ValueError(f"safetensors: {path}: tensor {name!r} byte range {lo}..{hi} does not "
                                 f"match shape {shape} {dtype}")
            if not 0 <= lo <= hi or self.data_start + hi > size:
                raise ValueError(f"safetensors: {path} is truncated: tensor {name!r} ends at byte "
                                 f"{self.data_start + hi} but the file has {size} bytes")
            self.tensors[name] = {"dtype": dtype, "shape": tuple(shape), "offsets": (lo, hi)}
        self._mmap = None

    def keys(self):
        return self.tensors.keys()

    def numpy(self, name: str) -> np.ndarray:
        """A read-only memory-mapped view (no bytes are read until used)."""
        info = self.tensors[name]
        if self._mmap is None:
            self._mmap = np.memmap(self.path, dtype=np.uint8, mode="r")
        lo, hi = info["offsets"]
        raw = self._mmap[self.data_start + lo:self.data_start + hi]
        return raw.view(DTYPES[info["dtype"]][0]).reshape(info["shape"])

    def read_into(self, name: str, out: np.ndarray) -> None:
        """Read the tensor into `out` with plain file reads (no mapping: the bytes do not stay in this
        process's resident set, which matters when a 600 GB checkpoint streams through it)."""
        info = self.tensors[name]
        want = np.dtype(DTYPES[info["dtype"]][0])
        if out.shape != info["shape"] or out.dtype != want or not out.flags.c_contiguous:
            raise ValueError(f"safetensors: {name!r} is {want} {info['shape']}, cannot read into "
                             f"{out.dtype} {out.shape}")
        lo, hi = info["offsets"]
        view = memoryview(out.reshape(-1).view(np.uint8))
        with open(self.path, "rb", buffering=0) as f:
            f.seek(self.data_start + lo)
            done = 0
            while done < hi - lo:  # a single read returns at most ~2 GB on Linux
                n = f.readinto(view[done:])
                if not n:
                    raise ValueError(f"safetensors: {self.path} ended inside tensor {name!r}")
                done += n

    def read_slice_into(self, name: str, out: np.ndarray, axis: int, lo: int) -> None:
        """Read the part [lo, lo + out.shape[axis]) along `axis` of the tensor into `out` (a
        tensor-parallel shard: rows of a 2-D weight are one contiguous read, columns one read per
        row), touching only those bytes."""
        info = self.tensors[name]
        shape, want = info["shape"], np.dtype(DTYPES[info["dtype"]][0])
        axis %= len(shape)
        n = out.shape[axis] if out.ndim == len(shape) else -1
        expect = shape[:axis] + (n,) + shape[axis + 1:]
        if out.shape != expect or out.dtype != want or not out.flags.c_contiguous or not 0 <= lo <= shape[axis] - n:
            raise ValueError(f"safetensors: cannot read [{lo}, {lo + n}) of axis {axis} of {name!r} "
                             f"({want} {shape}) into {out.dtype} {out.shape}")
        outer = int(np.prod(shape[:axis], dtype=np.int64))
        inner = int(np.prod(shape[axis + 1:], dtype=np.int64)) * want.itemsize
        run, stride = n * inner, shape[axis] * inner  # bytes wanted per outer index, and their spacing
        view = memoryview(out.reshape(-1).view(np.uint8))
        base = self.data_start + info["offsets"][0] + lo * inner
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for o in range(outer):
                done = 0
                while done < run:
                    got = os.preadv(fd, [view[o * run + done:(o + 1) * run]], base + o * stride + done)
                    if not got:
                        raise ValueError(f"safetensors: {self.path} ended inside tensor {name!r}")
                    done += got
        finally:
            os.close(fd)

    def get_slice(self, name: str, axis: int, lo: int, n: int) -> mx.array:
        """[lo, lo + n) along `axis` of the tensor, as `get` returns whole tensors."""
        info = self.tensors[name]
        shape = list(info["shape"])
        shape[axis] = n
        a = np.empty(shape, DTYPES[info["dtype"]][0])
        self.read_slice_into(name, a, axis, lo)
        return _to_mx(a, info["dtype"])

    def get(self, name: str) -> mx.array:
        info = self.tensors[name]
        a = np.empty(info["shape"], DTYPES[info["dtype"]][0])
        self.read_into(name, a)
        return _to_mx(a, info["dtype"])


def _to_mx(a: np.ndarray, dtype: str) -> mx.array:
    if dtype == "BF16":
        return mx.array(a).view(mx.bfloat16)
    return mx.array(a, dtype=DTYPES[dtype][1])


def _dtype_name(a) -> str:
    if isinstance(a, mx.array):
        names = {mx.float32: "F32", mx.float16: "F16", mx.bfloat16: "BF16", mx.uint8: "U8",
                 mx.int32: "I32", mx.int64: "I64"}
        return names[a.dtype]
    names = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.uint8): "U8",
             np.dtype(np.int32): "I32", np.dtype(np.int64): "I64"}
    return names[np.dtype(a.dtype)]


def to_bytes(a) -> bytes:
    if isinstance(a, mx.array):
        if a.dtype == mx.bfloat16:
            a = a.view(mx.uint16)
        return np.asarray(a).tobytes()
    return np.ascontiguousarray(a).tobytes()


class StreamingWriter:
    """Writes one safetensors file whose tensor list (name, dtype, shape) is known up front,
    then takes the data one tensor at a time in that order: only one tensor is held at once."""

    def __init__(self, path: str, specs: list[tuple[str, str, tuple[int, ...]]],
                 metadata: dict[str, str] | None = None):
        header, off = {}, 0
        for name, dtype, shape in specs:
            nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(DTYPES[dtype][0]).itemsize
            header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + nbytes]}
            off += nbytes
        if metadata:
            header["__metadata__"] = metadata
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)
        self._specs, self._next = header, iter(specs)
        self.tmp = path + ".partial"
        self.path = path
        self._f = open(self.tmp, "wb")
        self._f.write(struct.pack("<Q", len(blob)) + blob)

    def write(self, name: str, data: bytes):
        exp_name, _, _ = next(self._next)
        info = self._specs[exp_name]
        lo, hi = info["data_offsets"]
        if name != exp_name or len(data) != hi - lo:
            raise ValueError(f"safetensors writer: expected {exp_name} ({hi - lo} bytes), got {name} "
                             f"({len(data)} bytes)")
        self._f.write(data)

    def close(self):
        if next(self._next, None) is not None:
            self._f.close()
            raise ValueError(f"safetensors writer: {self.path} closed before all tensors were written")
        self._f.close()
        os.replace(self.tmp, self.path)


def save(path: str, tensors: dict, metadata: dict[str, str] | None = None):
    """Small helper for whole dicts (tests, goldens): dtypes inferred; F8 codes passed as
    ('F8_E4M3', uint8 array) tuples."""
    specs, datas = [], []
    for name, a in tensors.items():
        dtype, a = a if isinstance(a, tuple) else (_dtype_name(a), a)
        specs.append((name, dtype, tuple(a.shape)))
        datas.append((name, a))
    w = StreamingWriter(path, specs, metadata)
    for name, a in datas:
        w.write(name, to_bytes(a))
    w.close()

