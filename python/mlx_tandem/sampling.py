"""The one sampler of the project, shared by generate, the pipeline's last stage and the server.

`SamplingParams` holds a request's settings; `SeedStream` is the one RNG scheme: a sequence's seed
gives one 62-bit key seed per generated token (numpy's PCG64 seeded with [seed]), so the n-th token
is drawn with the same key whether it is sampled in this process, on rank 1 of the pipeline or in a
server batch next to other sequences. `sample_rows` samples a batch whose rows each have their own
parameters, key and token counts (for the penalties); every row's result depends only on that row.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Sequence

import mlx.core as mx
import numpy as np

from . import _ext

MAX_TOP_LOGPROBS = 20  # as OpenAI's API


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    top_k: int = 0  # 0: all tokens
    min_p: float = 0.0  # drop tokens below min_p times the top token's probability
    presence_penalty: float = 0.0  # subtracted from a token's logit once it was generated
    frequency_penalty: float = 0.0  # subtracted per time it was generated
    logprobs: bool = False  # the chosen token's log-probability
    top_logprobs: int = 0  # and this many most likely alternatives
    seed: int | None = None

    def __post_init__(self):
        checks = [
            (math.isfinite(self.temperature) and self.temperature >= 0, "temperature", ">= 0"),
            (0 < self.top_p <= 1, "top_p", "in (0, 1]"),
            (isinstance(self.top_k, int) and self.top_k >= 0, "top_k", "an integer >= 0"),
            (0 <= self.min_p <= 1, "min_p", "in [0, 1]"),
            (-2 <= self.presence_penalty <= 2, "presence_penalty", "in [-2, 2]"),
            (-2 <= self.frequency_penalty <= 2, "frequency_penalty", "in [-2, 2]"),
            (isinstance(self.top_logprobs, int) and 0 <= self.top_logprobs <= MAX_TOP_LOGPROBS,
             "top_logprobs", f"an integer in [0, {MAX_TOP_LOGPROBS}]"),
        ]
        for ok, name, want in checks:
            if not ok:  # NaN fails every comparison, so it lands here too
                raise ValueError(f"sampling: {name} must be {want}, got {getattr(self, name)!r}")
        if self.seed is not None and not isinstance(self.seed, int):
            raise ValueError(f"sampling: seed must be an integer, got {self.seed!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def penalized(self) -> bool:
        return self.presence_penalty != 0 or self.frequency_penalty != 0

    @property
    def wants_logprobs(self) -> bool:
        return self.logprobs or self.top_logprobs > 0


class SeedStream:
    """Key seeds for one sequence's tokens, one per generated token, from the sequence's seed
    (a random one when None)."""

    def __init__(self, seed: int | None):
        self.seed = seed if seed is not None else time.time_ns() % (1 << 62)
        self._rng = np.random.default_rng([self.seed % (1 << 64)])

    def next(self) -> int:
        return int(self._rng.integers(1 << 62))


@dataclass
class Sampled:
    """Per row: the token, its log-probability under the model (before penalties and temperature)
    and the top alternatives as (ids, log-probabilities), each (B, n) with n the batch's widest ask."""
    tokens: np.ndarray  # int32 (B,)
    logprobs: np.ndarray  # float32 (B,)
    top_ids: np.ndarray  # int32 (B, n)
    top_logprobs: np.ndarray  # float32 (B, n)


def _penalties(counts: Sequence[np.ndarray | None], params: Sequence[SamplingParams], vocab: int):
    """(B, V) float32 amounts to subtract from the logits, or None when no row is penalized."""
    if not any(p.penalized and c is not None and c.size for p, c in zip(params, counts)):
        return None
    rows = np.zeros((len(params), vocab), np.float32)
    for i, (p, c) in enumerate(zip(params, counts)):
        if p.penalized and c is not None and c.size:
            n = np.bincount(np.asarray(c, np.int64), minlength=vocab)[:vocab].astype(np.float32)
            rows[i] = p.presence_penalty * (n > 0) + p.frequency_penalty * n
    return mx.array(rows)


def _filter(logits: mx.array, params: Sequence[SamplingParams]) -> mx.array:
    """Temperature, then top_k, top_p and min_p per row (-inf outside the kept set)."""
    V = logits.shape[-1]
    col = lambda vals, dt=mx.float32: mx.array(np.array(vals)[:, None], dt)
    logits = logits / col([p.temperature for p in params])
    ninf = mx.array(-float("inf"), mx.float32)
    if any(0 < p.top_k < V for p in params):
        kth_index = col([(min(p.top_k, V) if p.top_k else V) - 1 for p in params], mx.int32)
        kth = mx.take_along_axis(mx.sort(logits, axis=-1)[:, ::-1], kth_index, axis=-1)
        logits = mx.where(logits < kth, ninf, logits)
    if any(p.top_p < 1 for p in params):
        order = mx.argsort(-logits, axis=-1)
        sorted_logits = mx.take_along_axis(logits, order, axis=-1)
        probs = mx.softmax(sorted_logits, axis=-1)
        # keep a token if the mass before it is below top_p (so the top token always stays)
        drop = (mx.cumsum(probs, axis=-1) - probs) >= col([p.top_p for p in params])
        sorted_logits = mx.where(drop, ninf, sorted_logits)
        logits = mx.put_along_axis(mx.full(logits.shape, -float("inf")), order, sorted_logits, axis=-1)
    if any(p.min_p > 0 for p in params):
        top = mx.max(logits, axis=-1, keepdims=True)
        floor = top + mx.log(col([max(p.min_p, 1e-38) for p in params]))
        logits = mx.where(mx.logical_and(logits < floor, col([p.min_p > 0 for p in params], mx.bool_)),
                          ninf, logits)
    return logits


def sample_graph(logits: mx.array, params: Sequence[SamplingParams], key_seeds: Sequence[int],
                 counts: Sequence[np.ndarray | None] | None = None) -> list[mx.array]:
    """The lazy graph of sample_rows: [tokens (B,)] plus, when a row wants them, [logprobs (B,)] and
    [top ids (B, n), top logprobs (B, n)]. Single-sequence decode evaluates it asynchronously."""
    if logits.ndim != 2 or logits.shape[0] != len(params) or len(key_seeds) != len(params):
        raise ValueError(f"sample: logits {logits.shape} need one row per params/key ({len(params)}, "
                         f"{len(key_seeds)})")
    B, V = logits.shape
    logits = logits.astype(mx.float32)
    pen = _penalties(counts if counts is not None else [None] * B, params, V)
    adjusted = logits - pen if pen is not None else logits
    if all(p.greedy for p in params):
        tokens = mx.argmax(adjusted, axis=-1)
    else:
        # one native pass per row on the CPU stream whatever the device (one RNG scheme everywhere): the
        # filters, then a draw from the row's own key, so it does not depend on the rest of the batch
        tokens = _ext.sample_tokens(adjusted, [p.temperature for p in params], [p.top_k for p in params],
                                    [p.top_p for p in params], [p.min_p for p in params],
                                    [int(k) for k in key_seeds], stream=mx.cpu)
    parts = [tokens.astype(mx.int32)]
    if any(p.wants_logprobs for p in params):
        lp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        parts.append(mx.take_along_axis(lp, parts[0][:, None], axis=-1)[:, 0])
        n = max(p.top_logprobs for p in params)
        if n:
            top = mx.argsort(-lp, axis=-1)[:, :n].astype(mx.int32)
            parts += [top, mx.take_along_axis(lp, top, axis=-1)]
    return parts


def to_sampled(parts: list[mx.array]) -> Sampled:
    B = parts[0].shape[0]
    tok = np.array(parts[0], dtype=np.int32)
    chosen = np.array(parts[1], np.float32) if len(parts) > 1 else np.zeros((B,), np.float32)
    if len(parts) > 2:
        return Sampled(tok, chosen, np.array(parts[2], np.int32), np.array(parts[3], np.float32))
    return Sampled(tok, chosen, np.zeros((B, 0), np.int32), np.zeros((B, 0), np.float32))


def sample_rows(logits: mx.array, params: Sequence[SamplingParams], key_seeds: Sequence[int],
                counts: Sequence[np.ndarray | None] | None = None) -> Sampled:
    """Sample one token per row of `logits` (B, V): row i with params[i], the key seed key_seeds[i]
    (one uniform number, drawn by _ext.key_uniform, picks the token by inverse CDF over the kept
    tokens) and counts[i] = the tokens it generated so far (for penalties)."""
    parts = sample_graph(logits, params, key_seeds, counts)
    mx.eval(parts)
    return to_sampled(parts)


def sample(logits: mx.array, temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0,
           key: mx.array | None = None) -> mx.array:
    """Token ids (B,) from logits (B, vocab), lazily, with one key for the whole batch: argmax at
    temperature 0, else softmax(logits / T) restricted to the top_k tokens and the smallest set with
    probability mass >= top_p. (The server and the pipeline use sample_rows; this is the public
    helper kept for single-batch callers.)"""
    if logits.ndim != 2:
        raise ValueError(f"sample: logits must be (B, vocab), got {logits.shape}")
    p = SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k)
    if p.greedy:
        return mx.argmax(logits, axis=-1)
    filtered = _filter(logits.astype(mx.float32), [p] * logits.shape[0])
    return mx.random.categorical(filtered, axis=-1, key=key)
