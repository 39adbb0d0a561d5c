"""The frame format: round trips, forged headers, hostile lengths, and fuzzing of the parser."""

import struct
import tracemalloc
import zlib

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlx_tandem.pipeline import wire
from mlx_tandem.pipeline.errors import FrameTooLarge, ProtocolError, SequenceError
from mlx_tandem.pipeline.wire import MsgType, decode_frame, encode_frame


def forge(*, magic=wire.MAGIC, version=wire.PROTOCOL_VERSION, mtype=MsgType.FORWARD, flags=0, ntens=0,
          desc_len=0, seq=0, step=0, plen=0, pcrc=0, hcrc=None, payload=b""):
    """A header with any field set by hand and a correct header checksum unless `hcrc` is given."""
    head = wire.HEADER.pack(magic, version, mtype, flags, ntens, desc_len, seq, step, plen, pcrc, 0)[:-4]
    return head + struct.pack("<I", zlib.crc32(head) if hcrc is None else hcrc) + payload


def desc(code, dims, reserved=0):
    return wire.DESC_HEAD.pack(code, len(dims), reserved) + b"".join(wire.DIM.pack(d) for d in dims)


wire_dtypes = st.sampled_from(list(wire.DTYPES.values()))
shapes = st.lists(st.integers(0, 5), min_size=0, max_size=wire.MAX_NDIM).map(tuple)


@given(st.lists(st.tuples(wire_dtypes, shapes), max_size=wire.MAX_TENSORS), st.booleans(),
       st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.sampled_from(list(MsgType)))
def test_round_trip(specs, checksum, seq, step, mtype):
    rng = np.random.default_rng(0)
    tensors = [rng.integers(0, 100, size=s).astype(dt) for dt, s in specs]
    f = decode_frame(encode_frame(mtype, seq, step, tensors, checksum=checksum))
    assert (f.msg_type, f.seq, f.step, len(f.tensors)) == (mtype, seq, step, len(tensors))
    for a, b in zip(tensors, f.tensors):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


def test_bfloat16_bits_survive():
    x = np.array([1.5, -0.0, np.inf, 3.0e38], dtype=ml_dtypes.bfloat16)
    y = decode_frame(encode_frame(MsgType.FORWARD, 0, 0, [x])).tensors[0]
    assert y.tobytes() == x.tobytes() and y.dtype == x.dtype


@pytest.mark.parametrize("fields, message", [
    (dict(magic=b"GGUF"), "bad magic"),
    (dict(version=wire.PROTOCOL_VERSION + 1), "protocol version"),
    (dict(mtype=0), "unknown message type"),
    (dict(mtype=200), "unknown message type"),
    (dict(flags=0x8), "unknown flag"),
    (dict(desc_len=4, plen=4), "descriptor table"),  # a table for no tensors
    (dict(ntens=1, desc_len=3, plen=64), "descriptor table"),  # shorter than one descriptor
    (dict(ntens=1, desc_len=wire.MAX_DESC + 1, plen=4096), "descriptor table"),  # longer than any
    (dict(ntens=2, desc_len=24, plen=10), "descriptor table"),  # longer than the payload
    (dict(ntens=wire.MAX_TENSORS + 1), "tensors announced"),
    (dict(hcrc=12345), "header checksum"),
    (dict(pcrc=7), "checksum set without its flag"),
])
def test_forged_header_fields(fields, message):
    with pytest.raises(ProtocolError, match=message):
        decode_frame(forge(**fields))


@pytest.mark.parametrize("code, dims, plen, message", [
    (99, (4,), None, "unknown dtype code"),
    (0, (4,), None, "unknown dtype code"),
    (8, (1,) * (wire.MAX_NDIM + 1), None, "ndim|descriptor table"),
    (8, (4, 4), 4 + 16 + 63, "payload length"),  # one byte short of 4*4*4
    (8, (4, 4), 4 + 16 + 65, "payload length"),  # one byte too many
    (8, (2**64 - 1,), None, "exceeds"),
    (8, (2**63, 2**63), None, "exceeds"),
    (1, (2**32 - 1, 2**32 - 1, 2**32 - 1), None, "does not fit"),  # wraps in u64 arithmetic
    (1, (2**32, 2**32, 0), None, "exceeds"),  # the product wraps to 0 in u64 arithmetic
    (1, (2**20, 2**20), None, "does not fit"),
])
def test_forged_tensor_descriptors(code, dims, plen, message):
    d = desc(code, dims)
    plen = len(d) + 64 if plen is None else plen
    with pytest.raises(ProtocolError, match=message):
        decode_frame(forge(ntens=1, desc_len=len(d), plen=plen, payload=d + bytes(plen - len(d))))


@pytest.mark.parametrize("table, ntens, message", [
    (desc(8, (2,)) + bytes(4), 1, "stray bytes"),
    (desc(8, (2, 2))[:-8] + bytes(4), 1, "too short for the dimensions"),
    (desc(8, (2,)) + wire.DESC_HEAD.pack(8, 3, 0), 2, "too short for the dimensions"),
    (desc(8, (2,)), 2, "too short for 2 tensors"),
])
def test_descriptor_table_must_match_exactly(table, ntens, message):
    with pytest.raises(ProtocolError, match=message):
        decode_frame(forge(ntens=ntens, desc_len=len(table), plen=len(table) + 64, payload=table + bytes(64)))


def test_reserved_descriptor_field():
    d = desc(8, (1,), reserved=3)
    with pytest.raises(ProtocolError, match="reserved descriptor"):
        decode_frame(forge(ntens=1, desc_len=len(d), plen=len(d) + 4, payload=d + bytes(4)))


@pytest.mark.parametrize("plen", [2**64 - 1, 2**63, wire.DEFAULT_MAX_PAYLOAD + 1])
def test_huge_lengths_rejected_before_allocation(plen):
    """Only the 44-byte header is ever read; no buffer of the announced size is allocated."""
    reads = []

    def readinto(view):
        reads.append(len(view))
        view[:] = forge(ntens=1, plen=plen)[:len(view)]

    tracemalloc.start()
    try:
        with pytest.raises(FrameTooLarge, match="exceeds the cap"):
            wire.read_frame(readinto)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert reads == [wire.HEADER_SIZE]
    assert peak < 1 << 20


def test_custom_cap():
    frame = encode_frame(MsgType.FORWARD, 0, 0, [np.zeros(100, np.float32)])
    decode_frame(frame, max_payload=len(frame) - wire.HEADER_SIZE)
    with pytest.raises(FrameTooLarge):
        decode_frame(frame, max_payload=len(frame) - wire.HEADER_SIZE - 1)


def test_payload_corruption_detected():
    frame = bytearray(encode_frame(MsgType.FORWARD, 3, 9, [np.arange(16, dtype=np.float32)]))
    frame[-5] ^= 0x10
    with pytest.raises(ProtocolError, match=r"payload checksum mismatch in FORWARD \(seq 3, step 9\)"):
        decode_frame(bytes(frame))


def test_truncated_and_trailing():
    frame = encode_frame(MsgType.RESULT, 0, 0, [np.arange(4, dtype=np.int32)])
    with pytest.raises(ProtocolError, match="truncated"):
        decode_frame(frame[:-1])
    with pytest.raises(ProtocolError, match="trailing"):
        decode_frame(frame + b"\0")


def test_sequence_checker_names_step_and_message():
    check = wire.SequenceChecker()
    frames = [decode_frame(encode_frame(MsgType.FORWARD, s, 10 + s)) for s in range(3)]
    check.check(frames[0])
    with pytest.raises(SequenceError, match=r"out of order.*seq 2, expected 1.*FORWARD, step 12"):
        check.check(frames[2])
    check.check(frames[1])
    with pytest.raises(SequenceError, match=r"duplicated.*seq 1, expected 2.*FORWARD, step 11"):
        check.check(frames[1])


def test_unsendable_dtypes():
    with pytest.raises(ProtocolError, match="cannot be sent"):
        encode_frame(MsgType.FORWARD, 0, 0, [np.zeros(2, np.complex64)])
    with pytest.raises(ProtocolError, match="cannot be sent"):
        encode_frame(MsgType.FORWARD, 0, 0, [np.array([b"x"], dtype=object)])
    with pytest.raises(ProtocolError, match="big-endian"):
        encode_frame(MsgType.FORWARD, 0, 0, [np.zeros(2, ">f4")])


def _parse_or_protocol_error(data):
    """The only acceptable outcomes for arbitrary bytes: a valid frame or a ProtocolError."""
    try:
        f = decode_frame(data, max_payload=1 << 16)
    except ProtocolError:
        return None
    assert sum(t.nbytes for t in f.tensors) <= len(data)
    return f


@given(st.binary(max_size=256))
def test_fuzz_random_bytes(data):
    _parse_or_protocol_error(data)


@given(st.binary(max_size=64))
def test_fuzz_random_bytes_after_valid_magic(data):
    _parse_or_protocol_error(wire.MAGIC + bytes([wire.PROTOCOL_VERSION]) + data)


@given(st.data())
def test_fuzz_mutated_frames(data):
    """Flip, overwrite, insert and delete bytes of valid frames; re-sign the header half of the time so
    mutations reach the descriptor and length checks behind the header checksum."""
    ntens = data.draw(st.integers(0, 3))
    tensors = [np.arange(data.draw(st.integers(0, 12)), dtype=data.draw(wire_dtypes)) for _ in range(ntens)]
    frame = bytearray(encode_frame(MsgType.FORWARD, 1, 2, tensors, checksum=data.draw(st.booleans())))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "set", "insert", "delete"]))
        i = data.draw(st.integers(0, len(frame) - 1))
        if op == "flip":
            frame[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set":
            frame[i] = data.draw(st.integers(0, 255))
        elif op == "insert":
            frame[i:i] = data.draw(st.binary(min_size=1, max_size=9))
        elif len(frame) > 1:
            del frame[i]
    if data.draw(st.booleans()) and len(frame) >= wire.HEADER_SIZE:
        frame[40:44] = struct.pack("<I", zlib.crc32(bytes(frame[:40])))
    _parse_or_protocol_error(bytes(frame))
