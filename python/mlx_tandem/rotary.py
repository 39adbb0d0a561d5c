"""Rotary position embeddings: the inverse frequencies of transformers' rope types, applied in the
Hugging Face (non-interleaved, "rotate_half") layout by fused.rope (our op on CPU, mx.fast.rope on a GPU)."""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from . import fused

SUPPORTED = ("default", "linear", "dynamic", "llama3")


def inv_freq(dim: int, theta: float, scaling: dict | None, seq_len: int | None = None,
             max_position_embeddings: int = 4096) -> np.ndarray:
    """float64 inverse frequencies (dim // 2,) exactly as transformers' ROPE_INIT_FUNCTIONS compute
    them; `seq_len` matters only for "dynamic" (NTK) scaling."""
    kind = (scaling or {}).get("rope_type", "default")
    if kind not in SUPPORTED:
        raise ValueError(f"rope: unsupported rope_type {kind!r} (supported: {', '.join(SUPPORTED)})")
    exps = np.arange(0, dim, 2, dtype=np.float64) / dim
    if kind == "dynamic":
        factor = float(scaling["factor"])
        seq_len = max(seq_len or 0, max_position_embeddings)
        theta = theta * ((factor * seq_len / max_position_embeddings) - (factor - 1)) ** (dim / (dim - 2))
    freqs = 1.0 / (theta ** exps)
    if kind == "linear":
        return freqs / float(scaling["factor"])
    if kind == "llama3":
        factor = float(scaling["factor"])
        low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
        old_ctx = float(scaling["original_max_position_embeddings"])
        wavelen = 2 * math.pi / freqs
        scaled = np.where(wavelen > old_ctx / low, freqs / factor, freqs)
        smooth = (old_ctx / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old_ctx / high) & ~(wavelen > old_ctx / low)
        return np.where(medium, smoothed, scaled)
    return freqs


class RoPE(nn.Module):
    """Applied to x laid out (B, L, H, D) (fused.rope: our op on CPU, mx.fast.rope on a GPU)."""

    def __init__(self, dim: int, theta: float, scaling: dict | None, max_position_embeddings: int):
        super().__init__()
        self.dim, self.theta, self.scaling = dim, theta, scaling
        self.max_pos = max_position_embeddings
        self.dynamic = (scaling or {}).get("rope_type") == "dynamic"
        self._freqs = self._make(None)

    def _make(self, seq_len):
        f = inv_freq(self.dim, self.theta, self.scaling, seq_len, self.max_pos)
        # mx.fast.rope wants periods, i.e. 1 / inv_freq
        return mx.array(f.astype(np.float32)), mx.array((1.0 / f).astype(np.float32))

    def __call__(self, x: mx.array, offset: int | list[int] = 0) -> mx.array:
        """offset: the first token's position, or one per batch row (a ragged batch)."""
        freqs, periods = self._freqs
        end = (max(offset) if isinstance(offset, list) else offset) + x.shape[1]
        if self.dynamic and end > self.max_pos:
            # transformers grows the NTK base with the longest position seen in the forward pass
            freqs, periods = self._make(end)
        return fused.rope(x, freqs, periods, offset)
