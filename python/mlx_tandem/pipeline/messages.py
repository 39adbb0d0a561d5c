"""The two application messages between stages, built from and checked against wire frames.

    FORWARD (rank 0 -> rank 1), step = request id
      meta    int64 (5,)   slot, offset (position of the first token), want, seed, top_k
      params  float32 (2,) temperature, top_p
      hidden  (B, L, H)    bf16 / f16 / f32 activations of the previous stage
    RESULT (rank 1 -> rank 0), step = the FORWARD's step
      tokens   int32 (B,)      sampled ids (empty when want == NONE)
      logprobs float32 (B,)    log-probabilities of those ids (empty unless want >= LOGPROBS)
      logits   float32 (B, V)  last-position logits (empty (0, 0) unless want == LOGITS)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import ml_dtypes
import numpy as np

from .errors import ProtocolError
from .wire import Frame, MsgType

MAX_SLOTS = 256  # sequences a stage keeps caches for at once
ACTIVATION_DTYPES = (np.dtype("<f2"), np.dtype(ml_dtypes.bfloat16), np.dtype("<f4"))


class Want(enum.IntEnum):
    NONE = 0  # an intermediate prefill chunk: only fill the caches
    TOKENS = 1
    LOGPROBS = 2  # tokens and their log-probabilities
    LOGITS = 3  # tokens, log-probabilities and the full last-position logits (tests, debugging)


@dataclass
class Forward:
    slot: int
    offset: int
    want: Want
    hidden: np.ndarray
    seed: int = 0
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0

    def tensors(self):
        meta = np.array([self.slot, self.offset, self.want, self.seed, self.top_k], dtype="<i8")
        return [meta, np.array([self.temperature, self.top_p], dtype="<f4"), self.hidden]

    @classmethod
    def parse(cls, frame: Frame) -> "Forward":
        where = f"{frame.describe()}"
        if frame.msg_type != MsgType.FORWARD or len(frame.tensors) != 3:
            raise ProtocolError(f"pipeline: expected FORWARD with 3 tensors, got {where} with {len(frame.tensors)}")
        meta, params, hidden = frame.tensors
        if meta.dtype != "<i8" or meta.shape != (5,) or params.dtype != "<f4" or params.shape != (2,):
            raise ProtocolError(f"pipeline: malformed FORWARD header tensors in {where}")
        slot, offset, want, seed, top_k = (int(v) for v in meta)
        temperature, top_p = (float(v) for v in params)
        if not 0 <= slot < MAX_SLOTS or offset < 0 or want not in Want._value2member_map_ or top_k < 0:
            raise ProtocolError(f"pipeline: FORWARD fields out of range (slot {slot}, offset {offset}, "
                                f"want {want}, top_k {top_k}) in {where}")
        if not (temperature >= 0 and 0 < top_p <= 1):  # also rejects NaN
            raise ProtocolError(f"pipeline: bad sampling parameters T={temperature} top_p={top_p} in {where}")
        if hidden.ndim != 3 or hidden.dtype not in ACTIVATION_DTYPES or 0 in hidden.shape:
            raise ProtocolError(f"pipeline: activations must be non-empty (B, L, H) floats, got "
                                f"{hidden.dtype} {hidden.shape} in {where}")
        return cls(slot, offset, Want(want), hidden, seed, temperature, top_p, top_k)


@dataclass
class Result:
    tokens: np.ndarray
    logprobs: np.ndarray
    logits: np.ndarray

    def tensors(self):
        return [self.tokens.astype("<i4"), self.logprobs.astype("<f4"), self.logits.astype("<f4")]

    @classmethod
    def parse(cls, frame: Frame, want: Want, batch: int) -> "Result":
        where = frame.describe()
        if frame.msg_type != MsgType.RESULT or len(frame.tensors) != 3:
            raise ProtocolError(f"pipeline: expected RESULT with 3 tensors, got {where}")
        tokens, logprobs, logits = frame.tensors
        n = batch if want >= Want.TOKENS else 0
        if tokens.dtype != "<i4" or tokens.shape != (n,):
            raise ProtocolError(f"pipeline: RESULT tokens {tokens.dtype} {tokens.shape}, expected int32 ({n},) in {where}")
        m = batch if want >= Want.LOGPROBS else 0
        if logprobs.dtype != "<f4" or logprobs.shape != (m,):
            raise ProtocolError(f"pipeline: RESULT logprobs {logprobs.shape}, expected ({m},) in {where}")
        if logits.dtype != "<f4" or logits.ndim != 2 or (want == Want.LOGITS) != (logits.shape[0] == batch > 0):
            raise ProtocolError(f"pipeline: RESULT logits {logits.shape} do not match the request in {where}")
        return cls(tokens, logprobs, logits)
