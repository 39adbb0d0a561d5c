"""The elementwise steps of a decoder layer as single native ops on CPU (MLX's CPU versions cost
100-300 us each at decode sizes here: per-op overhead plus scalar transcendentals). On a GPU stream
MLX's own Metal kernels are better, so these use them there; both paths compute the same thing."""

from __future__ import annotations

import contextlib

import mlx.core as mx
import mlx.nn as nn

from . import _ext


_native = True


def _on_cpu() -> bool:
    return _native and mx.default_device() == mx.cpu


@contextlib.contextmanager
def mlx_ops():
    """Use MLX's own ops everywhere inside the block (the benchmarks' plain-MLX anchors)."""
    global _native
    prev, _native = _native, False
    try:
        yield
    finally:
        _native = prev


def native_rows(attn) -> bool:
    """Whether an attention layer runs a ragged batch through _ext.attention_rows: on CPU, unless its
    `attend` / `absorbed` was swapped (the benchmarks' plain-MLX anchors); elsewhere each row runs
    MLX's ops."""
    return _on_cpu() and "attend" not in vars(attn) and "absorbed" not in vars(attn)


def silu_mul(gate: mx.array, up: mx.array) -> mx.array:
    """SwiGLU: silu(gate) * up."""
    return _ext.silu_mul(gate, up) if _on_cpu() else nn.silu(gate) * up


def swiglu(mlp: nn.Module, *args) -> mx.array:
    """silu(gate(*args)) * up(*args) for an MLP whose projections are separate or fused into
    gate_up_proj (gate rows first, as nn.fuse_gate_up stacks them)."""
    if "gate_up_proj" in mlp:
        gu = mlp.gate_up_proj(*args)
        n = gu.shape[-1] // 2
        return silu_mul(gu[..., :n], gu[..., n:])
    return silu_mul(mlp.gate_proj(*args), mlp.up_proj(*args))


def rms_norm(x: mx.array, norm: nn.RMSNorm) -> mx.array:
    return _ext.rms_norm(x, norm.weight, norm.eps) if _on_cpu() else norm(x)


def add_rms_norm(x: mx.array, residual: mx.array, norm: nn.RMSNorm) -> tuple[mx.array, mx.array]:
    """(h, norm(h)) with h = x + residual."""
    if _on_cpu():
        return _ext.add_rms_norm(x, residual, norm.weight, norm.eps)
    h = x + residual
    return h, norm(h)


def rope(x: mx.array, inv_freq: mx.array, periods: mx.array, offset: int | list[int]) -> mx.array:
    """Rotate-half RoPE of x laid out (B, L, H, D), as the projections produce it; `offset` is the
    position of the first token, or a list with one per batch row (a ragged batch)."""
    rows = mx.array(offset, mx.int32) if isinstance(offset, list) else None
    if _on_cpu():
        return _ext.rope(x, inv_freq, 0, row_offsets=rows) if rows is not None else _ext.rope(x, inv_freq, offset)
    y = mx.fast.rope(x.transpose(0, 2, 1, 3), 2 * inv_freq.shape[0], traditional=False, base=None, scale=1.0,
                     offset=rows if rows is not None else offset, freqs=periods)
    return y.transpose(0, 2, 1, 3)
