"""mx.array <-> numpy for the wire, bit-exact (bfloat16 travels as its 16 bits, never through float32)."""

from __future__ import annotations

import ml_dtypes
import mlx.core as mx
import numpy as np

_BF16 = np.dtype(ml_dtypes.bfloat16)
_ACTIVATION_DTYPES = (mx.bfloat16, mx.float16, mx.float32)


def to_numpy(a: mx.array) -> np.ndarray:
    if a.dtype == mx.bfloat16:
        return np.array(a.view(mx.uint16), copy=False).view(_BF16)
    return np.array(a, copy=False)


def to_mx(a: np.ndarray) -> mx.array:
    if a.dtype == _BF16:
        return mx.array(a.view(np.uint16)).view(mx.bfloat16)
    return mx.array(a)


def check_activation(a: mx.array, hidden_size: int | None = None) -> None:
    """Activations cross as (B, L, H) floating tensors; anything else is a protocol violation."""
    if a.ndim != 3 or a.dtype not in _ACTIVATION_DTYPES or (hidden_size is not None and a.shape[-1] != hidden_size):
        raise ValueError(f"pipeline: activations must be (B, L, {hidden_size or 'H'}) bf16/f16/f32, "
                         f"got {a.dtype} {a.shape}")
