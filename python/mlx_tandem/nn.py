"""FP8 layers: weights stay as E4M3 codes plus block scales; the matmul decodes them in the kernel."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from . import _ext


def use_huge_pages(module: nn.Module) -> int:
    """Back the module's large (>= 2 MB) evaluated parameters with 2 MB pages where the OS allows:
    decode streams every weight once per token, and 4 KB pages cost a TLB miss (a nested page walk
    in a VM) and a prefetcher restart every 4 KB. Returns the bytes moved to huge pages."""
    big = [p for _, p in tree_flatten(module.parameters()) if p.nbytes >= 2 << 20]
    return _ext.advise_hugepages(big) if big else 0


class FP8Linear(nn.Module):
    """y = x @ dequant(W).T + b with W stored in DeepSeek-V3's format.

    Parameters are named like the checkpoint tensors, so a checkpoint's
    `<name>.weight` (uint8 codes, (N, K)) and `<name>.weight_scale_inv` (float32,
    (ceil(N/bn), ceil(K/bk))) load into it directly.
    """

    def __init__(self, input_dims: int, output_dims: int, bias: bool = False,
                 block_size: tuple[int, int] = (128, 128)):
        super().__init__()
        bn, bk = block_size
        self.block_size = (int(bn), int(bk))
        self.weight = mx.zeros((output_dims, input_dims), mx.uint8)
        self.weight_scale_inv = mx.ones((-(-output_dims // bn), -(-input_dims // bk)), mx.float32)
        if bias:
            self.bias = mx.zeros((output_dims,))

    @property
    def codes(self) -> mx.array:
        return self.weight

    @property
    def scales(self) -> mx.array:
        return self.weight_scale_inv

    @classmethod
    def from_weight(cls, weight: mx.array, bias: mx.array | None = None,
                    block_size: tuple[int, int] = (128, 128)) -> "FP8Linear":
        """Quantize a float (N, K) weight."""
        N, K = weight.shape
        layer = cls(K, N, bias=bias is not None, block_size=block_size)
        layer.weight, layer.weight_scale_inv = _ext.quantize_fp8(weight, block_size=layer.block_size)
        if bias is not None:
            layer.bias = bias
        return layer

    @classmethod
    def concat(cls, layers: list["FP8Linear"]) -> "FP8Linear | None":
        """One layer computing [l(x) for l in layers] concatenated on the last axis (q/k/v or
        gate/up: one weight stream and one op instead of several), or None when the weights
        cannot share scale blocks: same K and block size, every part but the last a whole number
        of row blocks, biases on all or none."""
        biased = ["bias" in l for l in layers]
        if any(biased) and not all(biased) or not _rows_concatenable(layers):
            return None
        N = sum(l.weight.shape[-2] for l in layers)
        out = cls(layers[0].weight.shape[-1], N, bias=all(biased), block_size=layers[0].block_size)
        _concat_rows(out, layers)
        if all(biased):
            out.bias = mx.concatenate([l.bias for l in layers], axis=0)
        return out

    def __call__(self, x: mx.array) -> mx.array:
        y = _ext.fp8_matmul(x, self.weight, self.weight_scale_inv, block_size=self.block_size)
        if "bias" in self:
            y = y + self.bias.astype(y.dtype)
        return y

    def _extra_repr(self) -> str:
        N, K = self.weight.shape
        return f"input_dims={K}, output_dims={N}, bias={'bias' in self}, block_size={self.block_size}"


def fuse_gate_up(mlp: nn.Module, cls) -> None:
    """mlp.gate_proj and mlp.up_proj (both `cls`: FP8Linear or FP8SwitchLinear) become one
    mlp.gate_up_proj when their scale blocks allow (see FP8Linear.concat); outputs are unchanged."""
    if "gate_up_proj" in mlp or not isinstance(mlp.gate_proj, cls):
        return
    gu = cls.concat([mlp.gate_proj, mlp.up_proj])
    if gu is not None:
        mlp.gate_up_proj = gu
        del mlp.gate_proj, mlp.up_proj


def _rows_concatenable(layers) -> bool:
    """Weights (..., N_i, K) can stack along N sharing scale blocks: same leading dims, K and block
    size, every part but the last a whole number of row blocks."""
    bn, _ = layers[0].block_size
    w0 = layers[0].weight
    return (all(l.block_size == layers[0].block_size and l.weight.shape[:-2] == w0.shape[:-2]
                and l.weight.shape[-1] == w0.shape[-1] for l in layers)
            and not any(l.weight.shape[-2] % bn for l in layers[:-1]))


def _concat_rows(out, layers):
    out.weight = mx.concatenate([l.weight for l in layers], axis=-2)
    out.weight_scale_inv = mx.concatenate([l.weight_scale_inv for l in layers], axis=-2)


class FP8SwitchLinear(nn.Module):
    """E experts' FP8 weights stacked (E, N, K) with scales (E, ceil(N/bn), ceil(K/bk));
    `layer(x, indices)`: x (..., K), indices (..., k) int32 -> (..., k, N) through
    gather_fp8_matmul (only the selected experts' bytes are read)."""

    def __init__(self, input_dims: int, output_dims: int, experts: int,
                 block_size: tuple[int, int] = (128, 128)):
        super().__init__()
        bn, bk = block_size
        self.block_size = (int(bn), int(bk))
        self.weight = mx.zeros((experts, output_dims, input_dims), mx.uint8)
        self.weight_scale_inv = mx.ones((experts, -(-output_dims // bn), -(-input_dims // bk)), mx.float32)

    @classmethod
    def concat(cls, layers: list["FP8SwitchLinear"]) -> "FP8SwitchLinear | None":
        """Per expert, the layers' rows one after the other (gate/up), or None (see FP8Linear.concat)."""
        if not _rows_concatenable(layers):
            return None
        E, _, K = layers[0].weight.shape
        out = cls(K, sum(l.weight.shape[1] for l in layers), E, layers[0].block_size)
        _concat_rows(out, layers)
        return out

    def __call__(self, x: mx.array, indices: mx.array) -> mx.array:
        return _ext.gather_fp8_matmul(x, self.weight, self.weight_scale_inv, indices, block_size=self.block_size)

    def _extra_repr(self) -> str:
        E, N, K = self.weight.shape
        return f"experts={E}, input_dims={K}, output_dims={N}, block_size={self.block_size}"
