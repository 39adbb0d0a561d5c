"""The wire format: strict frames of numpy tensors. It knows nothing of models or sockets.

Frame layout (all integers little-endian):

    header (44 bytes)
      magic        4s   b"TNDM"
      version      u8   PROTOCOL_VERSION
      msg_type     u8   a MsgType
      flags        u16  FLAG_PAYLOAD_CRC only; other bits must be 0
      n_tensors    u16  <= MAX_TENSORS
      desc_len     u16  bytes of the descriptor table, <= n_tensors x (4 + 8 x MAX_NDIM)
      seq          u64  per-direction frame counter, starts at 0, +1 per frame
      step         u64  application step id (which request this frame belongs to)
      payload_len  u64  bytes after the header, <= the receiver's cap
      payload_crc  u32  crc32 of the payload when FLAG_PAYLOAD_CRC, else 0
      header_crc   u32  crc32 of the 40 bytes before it
    payload: the descriptor table (desc_len bytes), n_tensors times
      descriptor   dtype u8 (DTYPES code), ndim u8 (<= MAX_NDIM), reserved u16 (0), ndim x dim u64
    then the tensors' data, in order, C-contiguous, little-endian.

The parser checks every field before it allocates anything: the header's own checksum, the payload cap,
the (small, bounded) descriptor table, every descriptor, and that the table plus prod(shape) x itemsize
of each tensor add up to exactly payload_len (products are bounded step by step, so a forged 2^64-1
never reaches an allocation). Then the data is read in one piece: three reads per frame.
Only plain numbers and bytes cross the wire: no pickle, no pointers, no offsets into anyone's memory.
"""

from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass, field
from typing import Callable, Sequence

import ml_dtypes
import numpy as np

from .errors import FrameTooLarge, ProtocolError, SequenceError

MAGIC = b"TNDM"
PROTOCOL_VERSION = 2  # 2: FORWARD carries a batch of rows, each its own sequence; RELEASE
HEADER = struct.Struct("<4sBBHHHQQQII")
HEADER_SIZE = HEADER.size  # 44
DESC_HEAD = struct.Struct("<BBH")
DIM = struct.Struct("<Q")
MAX_NDIM = 6
MAX_TENSORS = 8
MAX_DIM = (1 << 32) - 1  # any single dimension; also bounds the dims of empty tensors
MAX_DESC = DESC_HEAD.size + DIM.size * MAX_NDIM  # one descriptor at most
DEFAULT_MAX_PAYLOAD = 256 << 20  # 256 MiB: a 2k-token prefill chunk of a 8k-wide bf16 model is 32 MiB
FLAG_PAYLOAD_CRC = 0x1
KNOWN_FLAGS = FLAG_PAYLOAD_CRC
U64_MAX = (1 << 64) - 1


class MsgType(enum.IntEnum):
    HELLO = 1  # handshake: client nonce, fingerprint
    CHALLENGE = 2  # handshake: server nonce, fingerprint, server proof
    RESPONSE = 3  # handshake: client proof
    WELCOME = 4  # handshake accepted
    HEARTBEAT = 5  # liveness while idle; never delivered to the application
    FORWARD = 6  # rank 0 -> rank 1: activations of one micro-batch step
    RESULT = 7  # rank 1 -> rank 0: sampled token ids (and logprobs / logits when asked)
    SHUTDOWN = 8  # orderly end of the session
    ERROR = 9  # the sender failed; payload is a utf-8 message
    RELEASE = 10  # rank 0 -> rank 1: drop these slots' caches now (no reply)


# dtype codes on the wire; explicit little-endian numpy dtypes so the format is host-independent
DTYPES: dict[int, np.dtype] = {
    1: np.dtype("u1"),
    2: np.dtype("i1"),
    3: np.dtype("<i4"),
    4: np.dtype("<i8"),
    5: np.dtype("<u4"),
    6: np.dtype("<f2"),
    7: np.dtype(ml_dtypes.bfloat16),
    8: np.dtype("<f4"),
    9: np.dtype("<f8"),  # sampling parameters, so rank 1 samples with exactly rank 0's values
}
_CODES = {dt: code for code, dt in DTYPES.items()}


@dataclass(frozen=True)
class Frame:
    msg_type: MsgType
    seq: int
    step: int
    tensors: tuple = field(default_factory=tuple)
    flags: int = 0

    def describe(self) -> str:
        return f"{self.msg_type.name} (seq {self.seq}, step {self.step})"


def _dtype_code(dt: np.dtype) -> int:
    dt = np.dtype(dt)
    if dt.byteorder == ">" or (dt.byteorder == "=" and not np.little_endian):
        raise ProtocolError(f"wire: big-endian dtype {dt} must be converted to little-endian first")
    code = _CODES.get(dt.newbyteorder("<") if dt.itemsize > 1 else dt)
    if code is None:
        raise ProtocolError(f"wire: dtype {dt} cannot be sent (allowed: {sorted(map(str, _CODES))})")
    return code


def encode_frame(
    msg_type: MsgType, seq: int, step: int, tensors: Sequence[np.ndarray] = (), *, checksum: bool = True
) -> bytes:
    """Serialize one frame. Tensors are numpy arrays of a DTYPES dtype with ndim <= MAX_NDIM."""
    msg_type = MsgType(msg_type)
    if not (0 <= seq <= U64_MAX and 0 <= step <= U64_MAX):
        raise ProtocolError(f"wire: seq {seq} / step {step} out of u64 range")
    if len(tensors) > MAX_TENSORS:
        raise ProtocolError(f"wire: {len(tensors)} tensors in one frame (max {MAX_TENSORS})")
    descs, datas = [], []
    for t in tensors:
        t = np.asarray(t)
        if t.ndim > MAX_NDIM:
            raise ProtocolError(f"wire: tensor of ndim {t.ndim} (max {MAX_NDIM})")
        descs.append(DESC_HEAD.pack(_dtype_code(t.dtype), t.ndim, 0) + b"".join(DIM.pack(d) for d in t.shape))
        datas.append(np.ascontiguousarray(t).tobytes())
    table = b"".join(descs)
    payload = table + b"".join(datas)
    flags = FLAG_PAYLOAD_CRC if checksum else 0
    pcrc = zlib.crc32(payload) if checksum else 0
    head = HEADER.pack(MAGIC, PROTOCOL_VERSION, msg_type, flags, len(tensors), len(table), seq, step, len(payload),
                       pcrc, 0)
    head = head[:-4] + struct.pack("<I", zlib.crc32(head[:-4]))
    return head + payload


@dataclass
class _Header:
    msg_type: MsgType
    flags: int
    n_tensors: int
    desc_len: int
    seq: int
    step: int
    payload_len: int
    payload_crc: int


def parse_header(buf: bytes, *, max_payload: int = DEFAULT_MAX_PAYLOAD) -> _Header:
    """Validate the fixed header; raises ProtocolError/FrameTooLarge naming the bad field."""
    if len(buf) != HEADER_SIZE:
        raise ProtocolError(f"wire: header is {len(buf)} bytes, expected {HEADER_SIZE}")
    magic, version, mtype, flags, ntens, desc_len, seq, step, plen, pcrc, hcrc = HEADER.unpack(buf)
    if magic != MAGIC:
        raise ProtocolError(f"wire: bad magic {magic!r} (expected {MAGIC!r}); not a tandem peer?")
    if zlib.crc32(buf[:-4]) != hcrc:
        raise ProtocolError("wire: header checksum mismatch (corrupted or forged header)")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"wire: protocol version {version} not supported (this side speaks {PROTOCOL_VERSION})")
    try:
        mtype = MsgType(mtype)
    except ValueError:
        raise ProtocolError(f"wire: unknown message type {mtype}") from None
    if flags & ~KNOWN_FLAGS:
        raise ProtocolError(f"wire: unknown flag bits 0x{flags & ~KNOWN_FLAGS:x}")
    if ntens > MAX_TENSORS:
        raise ProtocolError(f"wire: {ntens} tensors announced (max {MAX_TENSORS})")
    if plen > max_payload:
        raise FrameTooLarge(f"wire: payload of {plen} bytes exceeds the cap of {max_payload} bytes ({mtype.name}, step {step})")
    if not DESC_HEAD.size * ntens <= desc_len <= min(MAX_DESC * ntens, plen):
        raise ProtocolError(f"wire: descriptor table of {desc_len} bytes is impossible for {ntens} tensors "
                            f"in a payload of {plen} bytes")
    if not flags & FLAG_PAYLOAD_CRC and pcrc != 0:
        raise ProtocolError("wire: payload checksum set without its flag")
    return _Header(mtype, flags, ntens, desc_len, seq, step, plen, pcrc)


def parse_descriptors(table: bytes, n_tensors: int, payload_len: int, where: str) -> list[tuple]:
    """[(dtype, shape, nbytes)] from a descriptor table that must be consumed exactly."""
    specs, pos = [], 0
    for _ in range(n_tensors):
        if pos + DESC_HEAD.size > len(table):
            raise ProtocolError(f"wire: descriptor table too short for {n_tensors} tensors in {where}")
        code, ndim, reserved = DESC_HEAD.unpack_from(table, pos)
        pos += DESC_HEAD.size
        if code not in DTYPES:
            raise ProtocolError(f"wire: unknown dtype code {code} in {where}")
        if ndim > MAX_NDIM:
            raise ProtocolError(f"wire: tensor ndim {ndim} exceeds {MAX_NDIM} in {where}")
        if reserved != 0:
            raise ProtocolError(f"wire: reserved descriptor field is not zero in {where}")
        if pos + DIM.size * ndim > len(table):
            raise ProtocolError(f"wire: descriptor table too short for the dimensions in {where}")
        dims = struct.unpack_from(_DIMS[ndim], table, pos)
        pos += DIM.size * ndim
        if any(d > MAX_DIM for d in dims):
            raise ProtocolError(f"wire: tensor dimension in {dims} exceeds {MAX_DIM} in {where}")
        nbytes = DTYPES[code].itemsize if 0 not in dims else 0
        for d in dims if nbytes else ():  # bounded product: stop as soon as it passes the payload length
            nbytes *= d
            if nbytes > payload_len:
                raise ProtocolError(f"wire: tensor shape {dims} x {DTYPES[code]} does not fit the payload of "
                                    f"{payload_len} bytes in {where}")
        specs.append((DTYPES[code], dims, nbytes))
    if pos != len(table):
        raise ProtocolError(f"wire: {len(table) - pos} stray bytes after the descriptors in {where}")
    return specs


_DIMS = [f"<{n}Q" for n in range(MAX_NDIM + 1)]


def read_frame(readinto: Callable[[memoryview], None], *, max_payload: int = DEFAULT_MAX_PAYLOAD) -> Frame:
    """Read one frame through `readinto(view)`, which must fill `view` completely or raise.

    Nothing larger than the header, the (bounded) descriptor table or the validated data is ever allocated.
    """
    hbuf = bytearray(HEADER_SIZE)
    readinto(memoryview(hbuf))
    h = parse_header(bytes(hbuf), max_payload=max_payload)
    where = f"{h.msg_type.name} (seq {h.seq}, step {h.step})"
    table = bytearray(h.desc_len)
    if h.desc_len:
        readinto(memoryview(table))
    specs = parse_descriptors(table, h.n_tensors, h.payload_len, where)
    data_len = sum(n for _, _, n in specs)
    if h.desc_len + data_len != h.payload_len:
        raise ProtocolError(
            f"wire: payload length {h.payload_len} != descriptors {h.desc_len} + tensor data {data_len} bytes in {where}")
    data = bytearray(data_len)
    if data_len:
        readinto(memoryview(data))
    if h.flags & FLAG_PAYLOAD_CRC and zlib.crc32(data, zlib.crc32(table)) != h.payload_crc:
        raise ProtocolError(f"wire: payload checksum mismatch in {where}")
    arrays, pos = [], 0
    for dt, dims, n in specs:
        arrays.append(np.frombuffer(data, dtype=dt, count=n // dt.itemsize, offset=pos).reshape(dims))
        pos += n
    return Frame(h.msg_type, h.seq, h.step, tuple(arrays), h.flags)


def decode_frame(data: bytes, *, max_payload: int = DEFAULT_MAX_PAYLOAD) -> Frame:
    """Parse exactly one frame from `data` (trailing or missing bytes are errors)."""
    view = memoryview(data)
    pos = 0

    def readinto(dst: memoryview) -> None:
        nonlocal pos
        n = len(dst)
        if pos + n > len(view):
            raise ProtocolError(f"wire: truncated frame ({len(view)} bytes, needed at least {pos + n})")
        dst[:] = view[pos:pos + n]
        pos += n

    frame = read_frame(readinto, max_payload=max_payload)
    if pos != len(view):
        raise ProtocolError(f"wire: {len(view) - pos} trailing bytes after a frame")
    return frame


class SequenceChecker:
    """Per-direction sequence numbers: each frame must carry exactly the next number."""

    def __init__(self) -> None:
        self.expected = 0

    def check(self, frame: Frame) -> None:
        if frame.seq != self.expected:
            kind = "duplicated (or replayed)" if frame.seq < self.expected else "out of order (frames missing)"
            raise SequenceError(
                f"wire: {kind} frame: got seq {frame.seq}, expected {self.expected}: "
                f"message {frame.msg_type.name}, step {frame.step}")
        self.expected += 1


def text_tensor(s: str, limit: int = 4096) -> np.ndarray:
    """A utf-8 string as a uint8 tensor (truncated to `limit` bytes) for ERROR and handshake frames."""
    return np.frombuffer(s.encode("utf-8")[:limit], dtype=np.uint8)


def tensor_text(t: np.ndarray) -> str:
    if t.dtype != np.uint8 or t.ndim != 1:
        raise ProtocolError(f"wire: expected a 1-d uint8 text tensor, got {t.dtype} {t.shape}")
    return t.tobytes().decode("utf-8", errors="replace")
