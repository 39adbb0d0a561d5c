"""The application messages between stages, built from and checked against wire frames.

    FORWARD (rank 0 -> rank 1), step = request id; B rows, each its own sequence
      request int64 (2,)      want, top_logprobs n (0..20; > 0 only with want >= LOGPROBS)
      rows    int64 (B, 4)    per row: slot, offset (position of its first token), key seed, top_k
      params  float64 (B, 5)  per row: temperature, top_p, min_p, presence_penalty, frequency_penalty
      hidden  (B, L, H)       bf16 / f16 / f32 activations of the previous stage
    RESULT (rank 1 -> rank 0), step = the FORWARD's step
      tokens       int32 (B,)      sampled ids ((0,) when want == NONE)
      logprobs     float32 (B,)    log-probabilities of those ids ((0,) unless want >= LOGPROBS)
      top_ids      int32 (B, n)    the n most likely ids ((0, 0) unless want >= LOGPROBS)
      top_logprobs float32 (B, n)  their log-probabilities (same shape as top_ids)
      logits       float32 (B, V)  last-position logits ((0, 0) unless want == LOGITS)
    RELEASE (rank 0 -> rank 1), no reply
      slots   int64 (S,)      1 <= S, unique: the slots whose caches rank 1 drops now

A row's key seed is that token's seed from the sequence's SeedStream (used only when sampling); the
float parameters travel as float64 so rank 1 samples with exactly the values rank 0 has. Rank 1 keeps
each slot's sampled tokens for the penalties (reset when a row starts at offset 0).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import ml_dtypes
import numpy as np

from ..sampling import MAX_TOP_LOGPROBS, SamplingParams
from .errors import ProtocolError
from .wire import Frame, MsgType

MAX_SLOTS = 256  # sequences a stage keeps caches for at once
ACTIVATION_DTYPES = (np.dtype("<f2"), np.dtype(ml_dtypes.bfloat16), np.dtype("<f4"))
FLOAT_PARAMS = ("temperature", "top_p", "min_p", "presence_penalty", "frequency_penalty")


class Want(enum.IntEnum):
    NONE = 0  # an intermediate prefill chunk: only fill the caches
    TOKENS = 1
    LOGPROBS = 2  # tokens and their log-probabilities (and the top n)
    LOGITS = 3  # all of the above and the full last-position logits (tests, debugging)


def _expect(t: np.ndarray, dtype: str, shape: tuple, name: str, where: str) -> None:
    if t.dtype != np.dtype(dtype) or t.shape != shape:
        raise ProtocolError(f"pipeline: {name} must be {np.dtype(dtype)} {shape}, got {t.dtype} {t.shape} in {where}")


def check_slots(slots: list[int], name: str, where: str) -> None:
    bad = [s for s in slots if not 0 <= s < MAX_SLOTS]
    if bad:
        raise ProtocolError(f"pipeline: {name} slot {bad[0]} out of range [0, {MAX_SLOTS}) in {where}")
    if len(set(slots)) != len(slots):
        raise ProtocolError(f"pipeline: {name} slots {slots} are not unique in {where}")


@dataclass
class Forward:
    want: Want
    hidden: np.ndarray  # (B, L, H)
    slots: list[int]
    offsets: list[int]
    params: list[SamplingParams]  # per row; parse sets logprobs / top_logprobs from want and n
    key_seeds: list[int]
    top_logprobs: int = 0

    def tensors(self):
        rows = np.array([[s, o, k, p.top_k] for s, o, k, p in zip(self.slots, self.offsets, self.key_seeds, self.params)],
                        dtype="<i8").reshape(-1, 4)
        floats = np.array([[getattr(p, f) for f in FLOAT_PARAMS] for p in self.params], dtype="<f8").reshape(-1, 5)
        return [np.array([self.want, self.top_logprobs], "<i8"), rows, floats, self.hidden]

    @classmethod
    def parse(cls, frame: Frame) -> "Forward":
        where = frame.describe()
        if frame.msg_type != MsgType.FORWARD or len(frame.tensors) != 4:
            raise ProtocolError(f"pipeline: expected FORWARD with 4 tensors, got {where} with {len(frame.tensors)}")
        request, rows, floats, hidden = frame.tensors
        _expect(request, "<i8", (2,), "FORWARD request", where)
        want, n = (int(v) for v in request)
        if want not in Want._value2member_map_:
            raise ProtocolError(f"pipeline: FORWARD want {want} is not one of {[w.value for w in Want]} in {where}")
        if not 0 <= n <= MAX_TOP_LOGPROBS or (n and want < Want.LOGPROBS):
            raise ProtocolError(f"pipeline: FORWARD top_logprobs {n} must be in [0, {MAX_TOP_LOGPROBS}] and 0 "
                                f"unless want >= LOGPROBS (want {want}) in {where}")
        if hidden.ndim != 3 or hidden.dtype not in ACTIVATION_DTYPES or 0 in hidden.shape:
            raise ProtocolError(f"pipeline: FORWARD hidden must be non-empty (B, L, H) floats, got "
                                f"{hidden.dtype} {hidden.shape} in {where}")
        B = hidden.shape[0]
        _expect(rows, "<i8", (B, 4), "FORWARD rows", where)
        _expect(floats, "<f8", (B, 5), "FORWARD params", where)
        slots, offsets, seeds, top_ks = (rows[:, j].tolist() for j in range(4))
        check_slots(slots, "FORWARD", where)
        for name, vals in (("offset", offsets), ("seed", seeds)):
            if min(vals) < 0:
                raise ProtocolError(f"pipeline: FORWARD {name} {min(vals)} is negative in {where}")
        params = []
        for i, (k, fl) in enumerate(zip(top_ks, floats.tolist())):
            try:  # SamplingParams' own checks (NaN fails them all) name the field
                params.append(SamplingParams(**dict(zip(FLOAT_PARAMS, fl)), top_k=k,
                                             logprobs=want >= Want.LOGPROBS, top_logprobs=n))
            except ValueError as e:
                raise ProtocolError(f"pipeline: FORWARD row {i} (slot {slots[i]}): {e} in {where}") from None
        return cls(Want(want), hidden, slots, offsets, params, seeds, n)


@dataclass
class Result:
    tokens: np.ndarray
    logprobs: np.ndarray
    top_ids: np.ndarray
    top_logprobs: np.ndarray
    logits: np.ndarray

    def tensors(self):
        return [self.tokens.astype("<i4"), self.logprobs.astype("<f4"), self.top_ids.astype("<i4"),
                self.top_logprobs.astype("<f4"), self.logits.astype("<f4")]

    @classmethod
    def empty(cls) -> "Result":
        """The reply to a FORWARD with want NONE."""
        return cls(np.zeros((0,), np.int32), np.zeros((0,), np.float32), np.zeros((0, 0), np.int32),
                   np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32))

    @classmethod
    def parse(cls, frame: Frame, want: Want, batch: int, n: int = 0) -> "Result":
        where = frame.describe()
        if frame.msg_type != MsgType.RESULT or len(frame.tensors) != 5:
            raise ProtocolError(f"pipeline: expected RESULT with 5 tensors, got {where}")
        tokens, logprobs, top_ids, top_lps, logits = frame.tensors
        rows = batch if want >= Want.TOKENS else 0
        _expect(tokens, "<i4", (rows,), "RESULT tokens", where)
        rows = batch if want >= Want.LOGPROBS else 0
        _expect(logprobs, "<f4", (rows,), "RESULT logprobs", where)
        _expect(top_ids, "<i4", (rows, n if rows else 0), "RESULT top_ids", where)
        _expect(top_lps, "<f4", top_ids.shape, "RESULT top_logprobs", where)
        if logits.dtype != "<f4" or logits.ndim != 2 or (want == Want.LOGITS) != (logits.shape[0] == batch > 0):
            raise ProtocolError(f"pipeline: RESULT logits {logits.shape} do not match the request in {where}")
        return cls(tokens, logprobs, top_ids, top_lps, logits)


@dataclass
class Release:
    slots: list[int]

    def tensors(self):
        return [np.array(self.slots, "<i8")]

    @classmethod
    def parse(cls, frame: Frame) -> "Release":
        where = frame.describe()
        if frame.msg_type != MsgType.RELEASE or len(frame.tensors) != 1:
            raise ProtocolError(f"pipeline: expected RELEASE with 1 tensor, got {where}")
        (slots,) = frame.tensors
        if slots.dtype != "<i8" or slots.ndim != 1 or not 1 <= slots.size <= MAX_SLOTS:
            raise ProtocolError(f"pipeline: RELEASE slots must be int64 (S,) with 1 <= S <= {MAX_SLOTS}, got "
                                f"{slots.dtype} {slots.shape} in {where}")
        slots = slots.tolist()
        check_slots(slots, "RELEASE", where)
        return cls(slots)
