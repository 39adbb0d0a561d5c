"""DeepSeek-V3/R1 (also Kimi K2, and DeepSeek-V2/V2.5/V2-Lite through config options): multi-head
latent attention (MLA) and a mixture of experts, on FP8 linears, the expert-gathered FP8 matmul and
fused attention. Formulas and pitfalls: shared/DEEPSEEK.md.

Attention keeps only the normalised latent and the rotated shared rope key per token (LatentCache).
Decode runs the absorbed form: q_nope folded through W_UK, attention over the latent with
Dk = kv_lora + rope, Dv = kv_lora and one KV head, W_UV applied after. A prefill from an empty cache
runs the expanded per-head form (kv_b_proj over its own tokens), which costs fewer FLOPs; both give
the same logits.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from .. import _ext, fused
from ..nn import FP8Linear, FP8SwitchLinear, fuse_gate_up, use_huge_pages
from .base import _rope_from_config, run_layers
from .cache import LatentCache, RowCaches, attend_rows, each_row
from .llama import MLP

# Per model_type defaults where the V2 and V3 configs differ (keys the published configs may omit).
_DEFAULTS = {
    "deepseek_v2": dict(scoring_func="softmax", topk_method="greedy", norm_topk_prob=False),
    "deepseek_v3": dict(scoring_func="sigmoid", topk_method="noaux_tc", norm_topk_prob=True),
    "kimi_k2": dict(scoring_func="sigmoid", topk_method="noaux_tc", norm_topk_prob=True),
}
# Prefills of at least this many tokens into an empty cache take the expanded form.
EXPANDED_MIN_TOKENS = 2


@dataclass
class ModelArgs:
    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    moe_intermediate_size: int = 0
    n_routed_experts: int | None = None
    n_shared_experts: int | None = None
    num_experts_per_tok: int = 1
    routed_scaling_factor: float = 1.0
    n_group: int | None = 1
    topk_group: int | None = 1
    topk_method: str = "noaux_tc"
    scoring_func: str = "sigmoid"
    norm_topk_prob: bool = True
    first_k_dense_replace: int = 0
    moe_layer_freq: int = 1
    q_lora_rank: int | None = None
    kv_lora_rank: int = 512
    qk_nope_head_dim: int = 128
    qk_rope_head_dim: int = 64
    v_head_dim: int = 128
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    num_nextn_predict_layers: int = 0
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "ModelArgs":
        theta, scaling = _rope_from_config(config)
        names = {f.name for f in dataclasses.fields(cls)} - {"extra", "rope_theta", "rope_scaling"}
        kw = dict(_DEFAULTS.get(config.get("model_type"), {}))
        kw.update({k: config[k] for k in names if config.get(k) is not None})
        missing = [k for k in ("model_type", "vocab_size", "hidden_size", "intermediate_size",
                               "num_hidden_layers", "num_attention_heads") if k not in kw]
        if missing:
            raise ValueError(f"config.json: missing required key(s) {missing}")
        args = cls(**kw, rope_theta=theta, rope_scaling=scaling,
                   extra={k: v for k, v in config.items() if k not in names})
        args.validate()
        return args

    def validate(self):
        if self.n_routed_experts:
            E, groups = self.n_routed_experts, self.n_group or 1
            if E % groups:
                raise ValueError(f"config: n_routed_experts {E} is not a multiple of n_group {groups}")
            if not 1 <= self.num_experts_per_tok <= E:
                raise ValueError(f"config: num_experts_per_tok {self.num_experts_per_tok} must be in 1..{E}")
            kept = (self.topk_group or groups) * (E // groups)
            if self.topk_method in ("noaux_tc", "group_limited_greedy") and self.num_experts_per_tok > kept:
                raise ValueError(f"config: num_experts_per_tok {self.num_experts_per_tok} exceeds the "
                                 f"{kept} experts that topk_group {self.topk_group} groups hold")
        if self.topk_method not in ("noaux_tc", "greedy", "group_limited_greedy"):
            raise ValueError(f"config: unsupported topk_method {self.topk_method!r}")
        if self.scoring_func not in ("sigmoid", "softmax"):
            raise ValueError(f"config: unsupported scoring_func {self.scoring_func!r}")
        kind = (self.rope_scaling or {}).get("rope_type", "default")
        if kind not in ("default", "yarn"):
            raise ValueError(f"config: DeepSeek rope_type {kind!r} is not supported (default or yarn)")

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    def is_moe_layer(self, i: int) -> bool:
        return bool(self.n_routed_experts) and i >= self.first_k_dense_replace and i % self.moe_layer_freq == 0


def yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def yarn_inv_freq(dim: int, base: float, s: dict) -> np.ndarray:
    """float64 inverse frequencies of YaRN (DEEPSEEK.md; transformers' _compute_yarn_parameters)."""
    factor = float(s["factor"])
    old = float(s["original_max_position_embeddings"])
    fast, slow = float(s.get("beta_fast") or 32), float(s.get("beta_slow") or 1)
    freqs = base ** (-np.arange(0, dim, 2, dtype=np.float64) / dim)

    def corr_dim(rot):
        return dim * math.log(old / (rot * 2 * math.pi)) / (2 * math.log(base))

    low, high = corr_dim(fast), corr_dim(slow)
    if s.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = np.clip((np.arange(dim // 2) - low) / (high - low), 0, 1)
    return freqs * (1 - ramp) + freqs / factor * ramp


class InterleavedRoPE(nn.Module):
    """RoPE on (B, H, L, D) in the checkpoint's interleaved-pair layout, YaRN-aware; `amplitude` is
    YaRN's cos/sin factor mscale(f, mscale) / mscale(f, mscale_all_dim) (1 for V3)."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        dim, s = args.qk_rope_head_dim, args.rope_scaling
        self.dim, self.amplitude = dim, 1.0
        if s:
            inv = yarn_inv_freq(dim, args.rope_theta, s)
            if s.get("attention_factor") is not None:
                self.amplitude = float(s["attention_factor"])
            elif s.get("mscale") and s.get("mscale_all_dim"):
                self.amplitude = yarn_mscale(s["factor"], s["mscale"]) / yarn_mscale(s["factor"], s["mscale_all_dim"])
            else:
                self.amplitude = yarn_mscale(s["factor"])
        else:
            inv = args.rope_theta ** (-np.arange(0, dim, 2, dtype=np.float64) / dim)
        self._periods = mx.array((1.0 / inv).astype(np.float32))

    def __call__(self, x: mx.array, offset: int | list[int]) -> mx.array:
        """offset: the first token's position, or one per batch row (a ragged batch)."""
        if isinstance(offset, list):
            offset = mx.array(offset, mx.int32)
        y = mx.fast.rope(x, self.dim, traditional=True, base=None, scale=1.0, offset=offset, freqs=self._periods)
        return y * self.amplitude if self.amplitude != 1.0 else y


def softmax_scale(args: ModelArgs) -> float:
    """qk_head_dim^-0.5, times mscale(factor, mscale_all_dim)^2 under YaRN (kept in the absorbed form)."""
    scale = args.qk_head_dim ** -0.5
    s = args.rope_scaling
    if s and s.get("mscale_all_dim"):
        scale *= yarn_mscale(float(s["factor"]), float(s["mscale_all_dim"])) ** 2
    return scale


def head_slices(layer: FP8Linear, heads: int, rows: int, start: int, transpose: bool):
    """Per-head (codes (H, ., .), scales, block) of rows [start, start + rows) of each head's
    (nope + v)-row group of kv_b_proj, exact (no re-quantization): row blocks are sliced when every
    head's rows are whole blocks, otherwise every row gets its block's scale (block (1, bk)).
    With `transpose`, each head's matrix is transposed along with its scale grid."""
    bn, bk = layer.block_size
    codes, scales = layer.weight, layer.weight_scale_inv
    N, K = codes.shape
    per = N // heads
    idx = np.arange(heads)[:, None] * per + start + np.arange(rows)[None, :]  # (H, rows) weight rows
    c = codes[mx.array(idx.reshape(-1))].reshape(heads, rows, K)
    if per % bn == 0 and start % bn == 0 and rows % bn == 0:
        sidx = idx[:, ::bn] // bn
        s, block = scales[mx.array(sidx.reshape(-1))].reshape(heads, rows // bn, -1), (bn, bk)
    else:
        s, block = scales[mx.array((idx // bn).reshape(-1))].reshape(heads, rows, -1), (1, bk)
    if transpose:
        c, s, block = c.transpose(0, 2, 1), s.transpose(0, 2, 1), block[::-1]
    return mx.contiguous(c), mx.contiguous(s), block


class MLA(nn.Module):
    def __init__(self, args: ModelArgs, block_size):
        super().__init__()
        H, dim = args.num_attention_heads, args.hidden_size
        self.args, self.n_heads = args, H
        self.q_lora_rank, self.kv_lora_rank = args.q_lora_rank, args.kv_lora_rank
        self.nope, self.rope_dim, self.v_dim = args.qk_nope_head_dim, args.qk_rope_head_dim, args.v_head_dim
        bias = args.attention_bias
        if args.q_lora_rank is None:
            self.q_proj = FP8Linear(dim, H * args.qk_head_dim, False, block_size)
        else:
            self.q_a_proj = FP8Linear(dim, args.q_lora_rank, bias, block_size)
            self.q_a_layernorm = nn.RMSNorm(args.q_lora_rank, eps=1e-6)
            self.q_b_proj = FP8Linear(args.q_lora_rank, H * args.qk_head_dim, False, block_size)
        self.kv_a_proj_with_mqa = FP8Linear(dim, args.kv_lora_rank + args.qk_rope_head_dim, bias, block_size)
        self.kv_a_layernorm = nn.RMSNorm(args.kv_lora_rank, eps=1e-6)
        self.kv_b_proj = FP8Linear(args.kv_lora_rank, H * (self.nope + self.v_dim), False, block_size)
        self.o_proj = FP8Linear(H * self.v_dim, dim, bias, block_size)
        self.rope = InterleavedRoPE(args)
        self.scale = softmax_scale(args)

    def finish_loading(self):
        """Derive the absorbed matrices from kv_b_proj's codes and scales, and fuse q_a with kv_a."""
        H = self.n_heads
        # W_UK_h^T (kv_lora, nope): q_nope_h -> latent space; W_UV_h (v, kv_lora): latent -> v
        self._wuk_t = head_slices(self.kv_b_proj, H, self.nope, 0, transpose=True)
        self._wuv = head_slices(self.kv_b_proj, H, self.v_dim, self.nope, transpose=False)
        self._heads = mx.arange(H, dtype=mx.int32)[:, None]
        if self.q_lora_rank is not None and "qa_kva_proj" not in self:
            fused_a = FP8Linear.concat([self.q_a_proj, self.kv_a_proj_with_mqa])
            if fused_a is not None:
                self.qa_kva_proj = fused_a
                del self.q_a_proj, self.kv_a_proj_with_mqa
        mx.eval(self._wuk_t, self._wuv, self._heads)

    def derived_nbytes(self) -> int:
        return sum(a.nbytes for a in (*self._wuk_t[:2], *self._wuv[:2]))

    def _per_head(self, x: mx.array, mats) -> mx.array:
        """x (B, L, H, d) through head h's matrix for every h -> (B, L, H, n)."""
        codes, scales, block = mats
        B, L, H, _ = x.shape
        idx = mx.broadcast_to(self._heads, (B, L, H, 1))
        return _ext.gather_fp8_matmul(x, codes, scales, idx, block_size=block)[..., 0, :]

    def __call__(self, x: mx.array, cache: LatentCache | None = None) -> mx.array:
        B, L, _ = x.shape
        H, kvr = self.n_heads, self.kv_lora_rank
        if "qa_kva_proj" in self:
            a = self.qa_kva_proj(x)
            qa, kv = a[..., :self.q_lora_rank], a[..., self.q_lora_rank:]
        else:
            kv = self.kv_a_proj_with_mqa(x)
            qa = x if self.q_lora_rank is None else self.q_a_proj(x)
        q = self.q_proj(qa) if self.q_lora_rank is None else self.q_b_proj(fused.rms_norm(qa, self.q_a_layernorm))
        q = q.reshape(B, L, H, self.nope + self.rope_dim)
        q_nope, q_pe = q[..., :self.nope], q[..., self.nope:]
        latent = fused.rms_norm(kv[..., :kvr], self.kv_a_layernorm)
        if isinstance(cache, RowCaches) and len(cache) > 1:
            # ragged decode: RoPE, the cache rows and the head matrices once for all rows; per row only
            # the cache update and attention
            offsets = [c.offset for c in cache]
            q_pe = self.rope(q_pe.transpose(0, 2, 1, 3), offsets)                          # (B, H, L, rope)
            entries = mx.concatenate([latent[:, None], self.rope(kv[..., kvr:][:, None], offsets)], axis=-1)
            q = mx.concatenate([self._per_head(q_nope, self._wuk_t).transpose(0, 2, 1, 3), q_pe], axis=-1)
            if fused.native_rows(self):  # every row's cache update and attention in one op
                o_lat = attend_rows(cache, q, entries, None, self.scale, value_dim=kvr)    # (B, H, L, kvr)
            else:
                o_lat = each_row(cache, self._latent_rows, q, entries)
            o = self._per_head(o_lat.transpose(0, 2, 1, 3), self._wuv)
        else:
            o = each_row(cache, self._attend_at, q_nope, q_pe, latent, kv[..., kvr:])
        return self.o_proj(o.reshape(B, L, H * self.v_dim))

    def _attend_at(self, q_nope, q_pe, latent, k_pe, cache):
        """RoPE at the cache's position, the latent cache update and attention for rows of one
        sequence position -> (b, L, H, v)."""
        L = q_nope.shape[1]
        offset = cache.offset if cache is not None else 0
        q_pe = self.rope(q_pe.transpose(0, 2, 1, 3), offset)                      # (B, H, L, rope)
        k_pe = self.rope(k_pe[:, None], offset)                                   # (B, 1, L, rope)
        if cache is not None:
            entries = mx.concatenate([latent[:, None], k_pe], axis=-1)
            keys = cache.update_and_fetch(entries)                                # (B, 1, T, kvr + rope)
        if cache is None or (offset == 0 and L >= EXPANDED_MIN_TOKENS):
            return self._expanded(q_nope, q_pe, latent, k_pe)
        return self.absorbed(q_nope, q_pe, keys)

    def _latent_rows(self, q, entries, cache):
        """One row of a ragged decode batch: q = [q_nope W_UK, rotated q_pe] (1, H, L, kvr + rope), its
        cache entries (1, 1, L, kvr + rope) -> latent attention output (1, H, L, kvr)."""
        keys = cache.update_and_fetch(entries)
        return _ext.fused_attention(q, keys, keys[..., :self.kv_lora_rank], scale=self.scale, causal=True)

    def _expanded(self, q_nope, q_pe, latent, k_pe):
        """Per-head keys and values from this call's own tokens: (B, L, H, v)."""
        B, L, H, _ = q_nope.shape
        kvb = self.kv_b_proj(latent).reshape(B, L, H, self.nope + self.v_dim).transpose(0, 2, 1, 3)
        k_nope, v = kvb[..., :self.nope], kvb[..., self.nope:]
        k = mx.concatenate([k_nope, mx.broadcast_to(k_pe, (B, H, L, self.rope_dim))], axis=-1)
        q = mx.concatenate([q_nope.transpose(0, 2, 1, 3), q_pe], axis=-1)
        o = _ext.fused_attention(q, k, v, scale=self.scale, causal=True)
        return o.transpose(0, 2, 1, 3)

    def absorbed(self, q_nope, q_pe, keys):
        """Attention over the latent cache: q = [q_nope W_UK, q_pe], k = cache rows, v = their latent.
        A public method so benchmarks can swap in plain MLX for their anchor (bench/model_deepseek.py)."""
        q_lat = self._per_head(q_nope, self._wuk_t).transpose(0, 2, 1, 3)       # (B, H, L, kvr)
        q = mx.concatenate([q_lat, q_pe], axis=-1)
        o_lat = _ext.fused_attention(q, keys, keys[..., :self.kv_lora_rank], scale=self.scale, causal=True)
        return self._per_head(o_lat.transpose(0, 2, 1, 3), self._wuv)            # (B, L, H, v)


class MoEGate(nn.Module):
    """Router in float32: scores, group-limited selection, top-k weights (DEEPSEEK.md "Router")."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        E = args.n_routed_experts
        self.args = args
        self.weight = mx.zeros((E, args.hidden_size))
        if args.topk_method == "noaux_tc":
            self.e_score_correction_bias = mx.zeros((E,))

    def __call__(self, x: mx.array) -> tuple[mx.array, mx.array]:
        a = self.args
        E, k, groups = a.n_routed_experts, a.num_experts_per_tok, a.n_group or 1
        logits = x.astype(mx.float32) @ self.weight.astype(mx.float32).T
        scores = mx.sigmoid(logits) if a.scoring_func == "sigmoid" else mx.softmax(logits, axis=-1)
        choice = scores
        if a.topk_method == "noaux_tc":
            choice = scores + self.e_score_correction_bias  # fp32, for selection only
        if a.topk_method != "greedy" and groups > 1 and (a.topk_group or groups) < groups:
            g = choice.reshape(*choice.shape[:-1], groups, E // groups)
            if a.topk_method == "noaux_tc":
                gscore = mx.topk(g, 2, axis=-1).sum(axis=-1) if E // groups >= 2 else g[..., 0]
            else:
                gscore = g.max(axis=-1)
            keep = mx.argpartition(-gscore, kth=a.topk_group - 1, axis=-1)[..., :a.topk_group]
            kept = mx.put_along_axis(mx.zeros_like(gscore), keep, mx.array(1.0, gscore.dtype), axis=-1)
            # -inf, not 0: a masked group must never win, whatever the sign of the scores
            choice = mx.where(kept[..., None] > 0, g, -float("inf")).reshape(choice.shape)
        idx = mx.argpartition(-choice, kth=k - 1, axis=-1)[..., :k].astype(mx.int32)
        w = mx.take_along_axis(scores, idx, axis=-1)
        if k > 1 and a.norm_topk_prob:
            w = w / (w.sum(axis=-1, keepdims=True) + 1e-20)
        return idx, w * a.routed_scaling_factor


class SwitchMLP(nn.Module):
    """The routed experts, stacked (E, N, K) per projection; gate/up fused after loading."""

    def __init__(self, dim: int, hidden: int, experts: int, block_size):
        super().__init__()
        self.gate_proj = FP8SwitchLinear(dim, hidden, experts, block_size)
        self.up_proj = FP8SwitchLinear(dim, hidden, experts, block_size)
        self.down_proj = FP8SwitchLinear(hidden, dim, experts, block_size)

    def fuse(self):
        fuse_gate_up(self, FP8SwitchLinear)

    def __call__(self, x: mx.array, idx: mx.array) -> mx.array:
        """x (T, dim), idx (T, k) -> (T, k, dim)."""
        return self.down_proj(fused.swiglu(self, x, idx), idx[..., None])[..., 0, :]


class MoE(nn.Module):
    def __init__(self, args: ModelArgs, block_size):
        super().__init__()
        self.gate = MoEGate(args)
        self.switch_mlp = SwitchMLP(args.hidden_size, args.moe_intermediate_size, args.n_routed_experts, block_size)
        if args.n_shared_experts:
            self.shared_experts = MLP(args.hidden_size, args.moe_intermediate_size * args.n_shared_experts,
                                      False, block_size)

    def fuse(self):
        self.switch_mlp.fuse()
        if "shared_experts" in self:
            self.shared_experts.fuse()

    def __call__(self, x: mx.array) -> mx.array:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        idx, w = self.gate(flat)
        y = self.switch_mlp(flat, idx)                                  # (T, k, dim)
        y = (y.astype(mx.float32) * w[..., None]).sum(axis=-2).astype(x.dtype).reshape(shape)
        if "shared_experts" in self:
            y = y + self.shared_experts(x)
        return y


class DecoderLayer(nn.Module):
    def __init__(self, args: ModelArgs, index: int, block_size):
        super().__init__()
        self.self_attn = MLA(args, block_size)
        self.mlp = (MoE(args, block_size) if args.is_moe_layer(index)
                    else MLP(args.hidden_size, args.intermediate_size, False, block_size))
        self.input_layernorm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)
        self.post_attention_layernorm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)

    def __call__(self, x, cache=None):
        r = self.self_attn(fused.rms_norm(x, self.input_layernorm), cache)
        h, n = fused.add_rms_norm(x, r, self.post_attention_layernorm)
        return h + self.mlp(n)


class DeepseekModel(nn.Module):
    def __init__(self, args: ModelArgs, layer_range, block_size):
        super().__init__()
        self.start, self.end = layer_range
        self.is_first = self.start == 0
        self.is_last = self.end == args.num_hidden_layers
        if self.is_first:
            self.embed_tokens = nn.Embedding(args.vocab_size, args.hidden_size)
        self.layers = [DecoderLayer(args, i, block_size) for i in range(self.start, self.end)]
        if self.is_last:
            self.norm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)


class Model(nn.Module):
    """Causal LM for layers `layer_range` (default all; the MTP layers past num_hidden_layers are
    never built or read). Same interface as llama.Model: token ids (B, L) in on the first stage,
    hidden states elsewhere; logits out of the last stage."""

    # checkpoint tensors kept in float32 whatever the activation dtype (a bf16 bias flips selections)
    float32_params = ("e_score_correction_bias",)

    def __init__(self, args: ModelArgs | dict, layer_range: tuple[int, int] | None = None,
                 block_size: tuple[int, int] = (128, 128), head_bf16: bool = False):
        super().__init__()
        if isinstance(args, dict):
            args = ModelArgs.from_config(args)
        if args.tie_word_embeddings:
            raise ValueError("config: DeepSeek models with tied embeddings are not supported")
        n = args.num_hidden_layers
        start, end = layer_range if layer_range is not None else (0, n)
        if not (0 <= start < end <= n):
            raise ValueError(f"model: layer_range {layer_range} must satisfy 0 <= start < end <= {n}")
        self.args, self.layer_range, self.head_bf16 = args, (start, end), head_bf16
        self.model = DeepseekModel(args, (start, end), block_size)
        if end == n:
            self.lm_head = (nn.Linear(args.hidden_size, args.vocab_size, bias=False) if head_bf16
                            else FP8Linear(args.hidden_size, args.vocab_size, False, block_size))

    @staticmethod
    def expert_sources(gowner: str, experts: int) -> list[str] | None:
        """Checkpoint prefixes of a stacked expert projection ("...mlp.switch_mlp.gate_proj" ->
        "...mlp.experts.{e}.gate_proj"), or None for anything else (mlx-lm's sanitize, done lazily)."""
        if ".switch_mlp." not in gowner:
            return None
        return [gowner.replace(".switch_mlp.", f".experts.{e}.") for e in range(experts)]

    @property
    def layers(self):
        return self.model.layers

    @property
    def dtype(self) -> mx.Dtype:
        return self.model.layers[0].input_layernorm.weight.dtype

    def __call__(self, inputs: mx.array, cache: list[LatentCache] | None = None, last_only: bool = False) -> mx.array:
        """last_only: logits of the last position only, (B, 1, V) (prefill needs no others)."""
        h = run_layers(self, inputs, cache)
        if not self.model.is_last:
            return h
        if last_only:
            h = h[:, -1:]
        return self.lm_head(fused.rms_norm(h, self.model.norm))

    def finish_loading(self) -> "Model":
        """Once the weights are in: absorbed MLA matrices, fused projections, 2 MB pages."""
        for layer in self.layers:
            layer.self_attn.finish_loading()
            layer.mlp.fuse()
            # one layer at a time: peak memory stays near the final size plus one layer's copies
            mx.eval(layer.parameters())
            mx.clear_cache()
        mx.eval(self.parameters())
        use_huge_pages(self)
        return self

    def make_cache(self) -> list[LatentCache]:
        return [LatentCache() for _ in self.model.layers]
