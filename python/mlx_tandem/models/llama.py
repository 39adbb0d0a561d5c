"""Llama 2/3/3.1 (and Mistral, which has the same layers) on FP8 linears and fused attention."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from .. import _ext, fused
from ..nn import FP8Linear, fuse_gate_up, use_huge_pages
from ..rotary import RoPE
from .base import ModelArgs, run_layers
from .cache import KVCache, RowCaches, attend_rows, each_row


class Attention(nn.Module):
    def __init__(self, args: ModelArgs, block_size):
        super().__init__()
        H, Hkv, D, dim = args.num_attention_heads, args.num_key_value_heads, args.head_dim, args.hidden_size
        self.n_heads, self.n_kv_heads, self.head_dim = H, Hkv, D
        self.scale = D ** -0.5
        qkv_bias = args.attention_bias or args.qkv_bias
        self.q_proj = FP8Linear(dim, H * D, qkv_bias, block_size)
        self.k_proj = FP8Linear(dim, Hkv * D, qkv_bias, block_size)
        self.v_proj = FP8Linear(dim, Hkv * D, qkv_bias, block_size)
        self.o_proj = FP8Linear(H * D, dim, args.attention_bias, block_size)
        self.rope = RoPE(D, args.rope_theta, args.rope_scaling, args.max_position_embeddings)
        self.sliding_window = args.sliding_window

    def fuse(self):
        """q/k/v as one FP8Linear when their scale blocks allow (see FP8Linear.concat)."""
        if "qkv_proj" in self or not isinstance(self.q_proj, FP8Linear):
            return
        fused = FP8Linear.concat([self.q_proj, self.k_proj, self.v_proj])
        if fused is not None:
            self.qkv_proj = fused
            del self.q_proj, self.k_proj, self.v_proj

    def __call__(self, x: mx.array, cache: KVCache | None = None) -> mx.array:
        """cache: a KVCache (all rows at one position) or RowCaches (one per row, continuous batching)."""
        B, L, _ = x.shape
        H, Hkv, D = self.n_heads, self.n_kv_heads, self.head_dim
        if "qkv_proj" in self:  # slices of one row per token: views at decode
            qkv = self.qkv_proj(x)
            q, k, v = qkv[..., :H * D], qkv[..., H * D:(H + Hkv) * D], qkv[..., (H + Hkv) * D:]
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q, k, v = q.reshape(B, L, H, D), k.reshape(B, L, Hkv, D), v.reshape(B, L, Hkv, D)
        if isinstance(cache, RowCaches) and len(cache) > 1:  # ragged batch: RoPE once for all rows
            offsets = [c.offset for c in cache]
            self._check_window(max(offsets), L)
            q = self.rope(q, offsets).transpose(0, 2, 1, 3)
            k = self.rope(k, offsets).transpose(0, 2, 1, 3)
            v = v.transpose(0, 2, 1, 3)
            if fused.native_rows(self):  # every row's cache update and attention in one op
                o = attend_rows(cache, q, k, v, self.scale)
            else:
                o = each_row(cache, self._cached_attend, q, k, v)
            return self.o_proj(o.transpose(0, 2, 1, 3).reshape(B, L, -1))
        return self.o_proj(each_row(cache, self._attend_at, q, k, v))

    def _check_window(self, offset, L):
        if self.sliding_window and offset + L > self.sliding_window:
            raise ValueError(f"attention: sequence of {offset + L} tokens exceeds the sliding window "
                             f"({self.sliding_window}), which fused_attention does not implement")

    def _cached_attend(self, q, k, v, cache):
        """One row of a ragged batch, already rotated, (1, heads, L, D): cache update and attention."""
        k, v = cache.update_and_fetch(k, v)
        return self.attend(q, k, v)

    def _attend_at(self, q, k, v, cache):
        """RoPE at the cache's position, the cache update and attention for (b, L, heads, D) rows of one
        sequence position -> (b, L, H * D)."""
        b, L = q.shape[:2]
        v = v.transpose(0, 2, 1, 3)
        offset = cache.offset if cache is not None else 0
        self._check_window(offset, L)
        # RoPE in the projections' (B, L, H, D) layout, then (B, H, L, D) views for attention
        q = self.rope(q, offset).transpose(0, 2, 1, 3)
        k = self.rope(k, offset).transpose(0, 2, 1, 3)
        if cache is not None:
            k, v = cache.update_and_fetch(k, v)
        return self.attend(q, k, v).transpose(0, 2, 1, 3).reshape(b, L, -1)

    def attend(self, q, k, v):
        # a method so benchmarks can swap in MLX's sdpa for their plain-MLX anchor
        return _ext.fused_attention(q, k, v, scale=self.scale, causal=True)


class MLP(nn.Module):
    """SwiGLU feed-forward: down(silu(gate(x)) * up(x)) (also DeepSeek's dense and shared experts)."""

    def __init__(self, dim: int, hidden: int, bias: bool, block_size):
        super().__init__()
        self.gate_proj = FP8Linear(dim, hidden, bias, block_size)
        self.up_proj = FP8Linear(dim, hidden, bias, block_size)
        self.down_proj = FP8Linear(hidden, dim, bias, block_size)

    def fuse(self):
        """gate/up as one FP8Linear when their scale blocks allow."""
        fuse_gate_up(self, FP8Linear)

    def __call__(self, x):
        return self.down_proj(fused.swiglu(self, x))


class TransformerBlock(nn.Module):
    def __init__(self, args: ModelArgs, block_size):
        super().__init__()
        self.self_attn = Attention(args, block_size)
        self.mlp = MLP(args.hidden_size, args.intermediate_size, args.mlp_bias, block_size)
        self.input_layernorm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)
        self.post_attention_layernorm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)

    def __call__(self, x, cache=None):
        r = self.self_attn(fused.rms_norm(x, self.input_layernorm), cache)
        h, n = fused.add_rms_norm(x, r, self.post_attention_layernorm)
        return h + self.mlp(n)


class LlamaModel(nn.Module):
    """The decoder body for layers [start, end); embeddings and final norm only where owned."""

    def __init__(self, args: ModelArgs | dict, layer_range, block_size):
        super().__init__()
        self.start, self.end = layer_range
        self.is_first = self.start == 0
        self.is_last = self.end == args.num_hidden_layers
        if self.is_first or (self.is_last and args.tie_word_embeddings):
            self.embed_tokens = nn.Embedding(args.vocab_size, args.hidden_size)
        self.layers = [TransformerBlock(args, block_size) for _ in range(self.start, self.end)]
        if self.is_last:
            self.norm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)


class Model(nn.Module):
    """Causal LM for a stage holding layers `layer_range` = (start, end) (default: all).

    `model(inputs, cache)`: inputs are token ids (B, L) on the first stage and hidden states
    (B, L, H) otherwise; returns logits (B, L, vocab) on the last stage, hidden states otherwise.
    The head is an FP8Linear; with tied embeddings it is the FP8-quantized embedding matrix
    (built by `tie_head`, called by the loader). `head_bf16` keeps it in floating point instead
    (an nn.Linear, or the embedding itself when tied), which on Linux runs on MLX's slow matmul.
    """

    def __init__(self, args: ModelArgs | dict, layer_range: tuple[int, int] | None = None,
                 block_size: tuple[int, int] = (128, 128), head_bf16: bool = False):
        super().__init__()
        if isinstance(args, dict):  # a config.json dict
            args = ModelArgs.from_config(args)
        n = args.num_hidden_layers
        start, end = layer_range if layer_range is not None else (0, n)
        if not (0 <= start < end <= n):
            raise ValueError(f"model: layer_range {layer_range} must satisfy 0 <= start < end <= {n}")
        self.args = args
        self.layer_range = (start, end)
        self.head_bf16 = head_bf16
        self.model = LlamaModel(args, (start, end), block_size)
        if end == n and not args.tie_word_embeddings:
            self.lm_head = (nn.Linear(args.hidden_size, args.vocab_size, bias=False) if head_bf16
                            else FP8Linear(args.hidden_size, args.vocab_size, False, block_size))
        elif end == n and not head_bf16:
            self.lm_head = FP8Linear(args.hidden_size, args.vocab_size, False, block_size)

    @property
    def layers(self):
        return self.model.layers

    @property
    def dtype(self) -> mx.Dtype:
        return self.model.layers[0].input_layernorm.weight.dtype

    def tie_head(self):
        """After loading: derive the head from the embedding when tied; a middle/last stage that
        does not embed tokens then drops the float embedding."""
        if not (self.model.is_last and self.args.tie_word_embeddings):
            return
        if not self.head_bf16:
            emb = self.model.embed_tokens.weight
            self.lm_head = FP8Linear.from_weight(emb, block_size=self.lm_head.block_size)
            if not self.model.is_first:
                del self.model.embed_tokens

    def __call__(self, inputs: mx.array, cache: list[KVCache] | None = None, last_only: bool = False) -> mx.array:
        """last_only: logits of the last position only, (B, 1, V) (prefill needs no others)."""
        m = self.model
        h = run_layers(self, inputs, cache)
        if not m.is_last:
            return h
        if last_only:
            h = h[:, -1:]
        h = fused.rms_norm(h, m.norm)
        if "lm_head" in self:
            return self.lm_head(h)
        return m.embed_tokens.as_linear(h)

    def fuse_projections(self):
        """After loading: q/k/v and gate/up projections of every layer become one FP8Linear each
        where the block layout allows. Outputs are unchanged (every output row is computed
        exactly as before); parameter names change, so load weights before calling this."""
        for layer in self.layers:
            layer.self_attn.fuse()
            layer.mlp.fuse()
            # one layer at a time, so the unfused weights are freed before the next copy is made
            mx.eval(layer.parameters())
            mx.clear_cache()

    def finish_loading(self) -> "Model":
        """Once the weights are in (load_model, the benchmarks' random models): derive a tied head,
        fuse projections, evaluate, and move the large weights to 2 MB pages."""
        self.tie_head()
        self.fuse_projections()
        use_huge_pages(self)
        return self

    def make_cache(self) -> list[KVCache]:
        return [KVCache() for _ in self.model.layers]
