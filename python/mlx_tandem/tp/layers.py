"""The communicating parts of a sharded model, put around the loaded modules (the model files
stay as they are): row-parallel linears sum their partial outputs, a routed-expert block sums
once for its experts and shared expert together, and a vocabulary-split head gathers its logits."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from ..nn import FP8Linear


class RowParallel(nn.Module):
    """x (this rank's input features) @ this rank's columns of W, summed over the ranks; the bias,
    whole on every rank, is added once after the sum."""

    def __init__(self, linear: FP8Linear, comm):
        super().__init__()
        self.linear, self.comm = linear, comm
        if "bias" in linear:
            self.bias = linear.bias
            del linear.bias

    def __call__(self, x: mx.array) -> mx.array:
        y = self.comm.all_sum(self.linear(x))
        return y + self.bias.astype(y.dtype) if "bias" in self else y


class SumOutput(nn.Module):
    """A module whose output is this rank's partial sum (a mixture of experts split by width:
    the weighted experts and the shared expert are linear in their down projections' outputs)."""

    def __init__(self, inner: nn.Module, comm):
        super().__init__()
        self.inner, self.comm = inner, comm

    def __call__(self, *args, **kwargs) -> mx.array:
        return self.comm.all_sum(self.inner(*args, **kwargs))


class VocabParallelHead(nn.Module):
    """This rank's vocabulary rows of the head; the logits of all ranks gathered in rank order."""

    def __init__(self, head: nn.Module, comm):
        super().__init__()
        self.head, self.comm = head, comm

    def __call__(self, h: mx.array) -> mx.array:
        return self.comm.all_gather(self.head(h), axis=-1)


def wrap(model, plan, comm) -> None:
    """Put the collectives in a model loaded with `plan` (after finish_loading)."""
    for layer in model.layers:
        attn = layer.self_attn
        attn.o_proj = RowParallel(attn.o_proj, comm)
        mlp = layer.mlp
        if "switch_mlp" in mlp:
            layer.mlp = SumOutput(mlp, comm)
        else:
            mlp.down_proj = RowParallel(mlp.down_proj, comm)
    if plan.shard_head and "lm_head" in model:
        model.lm_head = VocabParallelHead(model.lm_head, comm)
