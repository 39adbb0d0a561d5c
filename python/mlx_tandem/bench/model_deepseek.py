"""`tandem bench model --arch deepseek_v3`: greedy decode tokens/s of DeepSeek-V3 layers at the real
dimensions (default 1 dense + 1 MoE layer, the full 256 experts, the 129280 head) in FP8 on our
kernels, at cache contexts 1k and 8k, against the bandwidth bound (the bytes a decoded token reads,
from the model's arrays, over the read bandwidth measured in the same run) and against the same
layers in plain MLX as mlx-lm runs them (bf16, gather_mm experts, MLX sdpa over the latent), with
estimates for the whole 61-layer model. Weights are random FP8 codes and block scales; the latent
caches are filled with random rows (their content does not change the cost)."""

from __future__ import annotations

import dataclasses
import gc
import statistics
import sys
import zlib

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from .. import _ext, fused
from ..generate import generate_step
from ..models import deepseek_v3 as ds
from ..nn import FP8Linear, FP8SwitchLinear
from .model import fmt, measure_bandwidth, time_tokens

M3_ULTRA_GBPS = 819.0
FULL_DENSE, FULL_MOE = 3, 58  # DeepSeek-V3's 61 layers


def add_arguments(parser):
    """The flags only --arch deepseek_v3 takes (the shared ones are in bench/model.py)."""
    g = parser.add_argument_group("--arch deepseek_v3 (defaults: DeepSeek-V3's published config)")
    g.add_argument("--dense-layers", type=int, default=1)
    g.add_argument("--moe-layers", type=int, default=1)
    g.add_argument("--experts", type=int, default=256)
    g.add_argument("--expert-width", type=int, default=2048)
    g.add_argument("--top-k", type=int, default=8)
    g.add_argument("--n-group", type=int, default=8)
    g.add_argument("--topk-group", type=int, default=4)
    g.add_argument("--shared-experts", type=int, default=1)
    g.add_argument("--q-lora", type=int, default=1536)
    g.add_argument("--kv-lora", type=int, default=512)
    g.add_argument("--nope", type=int, default=128)
    g.add_argument("--rope-dim", type=int, default=64)
    g.add_argument("--v-dim", type=int, default=128)
    g.add_argument("--head", choices=("fp8", "bf16"), default="fp8",
                   help="fp8 (default; MLX's bf16 CPU matmul is ~1 GB/s here) or bf16 as the checkpoint stores it")
    g.add_argument("--contexts", default="1024,8192", help="comma list of cached tokens before timing decode")
    g.add_argument("--anchor-experts", type=int, default=32,
                   help="experts the bf16 MLX anchor keeps (the router restricted to them; a token still reads top-k)")
    g.add_argument("--seed", type=int, default=0)


def model_args(a) -> ds.ModelArgs:
    pick = lambda v, d: d if v is None else v
    layers = a.dense_layers + a.moe_layers
    if layers < 1:
        raise ValueError("bench model: --dense-layers + --moe-layers must be at least 1")
    cfg = dict(model_type="deepseek_v3", vocab_size=pick(a.vocab, 129280), hidden_size=pick(a.hidden, 7168),
               intermediate_size=pick(a.intermediate, 18432), num_hidden_layers=layers,
               num_attention_heads=pick(a.heads, 128), moe_intermediate_size=a.expert_width,
               n_routed_experts=a.experts if a.moe_layers else None, n_shared_experts=a.shared_experts or None,
               num_experts_per_tok=a.top_k, routed_scaling_factor=2.5, n_group=a.n_group,
               topk_group=a.topk_group, first_k_dense_replace=a.dense_layers, q_lora_rank=a.q_lora,
               kv_lora_rank=a.kv_lora, qk_nope_head_dim=a.nope, qk_rope_head_dim=a.rope_dim, v_head_dim=a.v_dim,
               rms_norm_eps=1e-6, max_position_embeddings=163840, rope_theta=10000.0,
               rope_scaling=dict(type="yarn", factor=40, original_max_position_embeddings=4096, beta_fast=32,
                                 beta_slow=1, mscale=1.0, mscale_all_dim=1.0))
    return ds.ModelArgs.from_config(cfg)


# ---- random weights, deterministic per tensor name (and expert), so the anchor can rebuild a subset

def _rng(seed, name, expert=None):
    key = [seed, zlib.crc32(name.encode())] + ([] if expert is None else [expert])
    return np.random.default_rng(key)


def _fill_codes(out: np.ndarray, rng):
    """Random E4M3 codes into `out`, in chunks (the raw generator: ~6x rng.bytes here); the NaN
    codes 0x7F/0xFF become 0x7E/0xFE."""
    flat = out.reshape(-1)
    step = 1 << 26
    for i in range(0, flat.size, step):
        v = flat[i:i + step]
        v[:] = rng.bit_generator.random_raw(-(-v.size // 8)).view(np.uint8)[:v.size]
        nan = np.bitwise_and(v, 0x7F)
        np.equal(nan, 0x7F, out=nan.view(bool))
        np.bitwise_xor(v, nan, out=v)


def _writable(shape, dtype) -> tuple[mx.array, np.ndarray]:
    """An evaluated mx array and a numpy view of its memory to fill in place (no second copy of a
    3.8 GB expert stack: the build's peak stays near the model's final size)."""
    out = mx.zeros(shape, dtype)
    mx.eval(out)
    view = np.array(out, copy=False)
    if not view.flags.writeable or view.flags.owndata or view.size != out.size:
        raise RuntimeError("bench model: cannot fill an MLX buffer in place through numpy")
    return out, view


def _fp8(name, shape, block, seed):
    """(codes, scales) as mx arrays: random codes (.., N, K), scales ~ U(0.5, 1.5)/448 per block;
    stacked experts one expert at a time, each from its own seed (the anchor rebuilds a subset)."""
    *lead, N, K = shape
    codes, cview = _writable(shape, mx.uint8)
    scales, sview = _writable((*lead, -(-N // block[0]), -(-K // block[1])), mx.float32)
    for e in range(lead[0] if lead else 1):
        rng = _rng(seed, name, e if lead else None)
        _fill_codes(cview[e] if lead else cview, rng)
        (sview[e] if lead else sview)[...] = rng.uniform(0.5, 1.5, sview.shape[-2:]) / 448
    return codes, scales


def _float(name, shape, std, dtype, seed):
    """Normal(0, std) in row chunks (the embedding is 129280 x 7168: no float32 copy of it all)."""
    rng = _rng(seed, name)
    rows = max(1, (1 << 24) // max(1, int(np.prod(shape[1:]))))
    parts = []
    for i in range(0, shape[0], rows):
        n = min(rows, shape[0] - i)
        parts.append(mx.array(rng.standard_normal((n, *shape[1:]), dtype=np.float32) * std).astype(dtype))
        mx.eval(parts[-1])
    out = mx.concatenate(parts) if len(parts) > 1 else parts[0]
    mx.eval(out)
    return out


def _prefuse(model: ds.Model):
    """The fused layout finish_loading() would make (q_a|kv_a, gate|up), built directly: fusing after
    the fact briefly holds a 7.5 GB gate|up expert stack next to its 3.8 GB halves."""
    bn = 128
    for layer in model.layers:
        attn = layer.self_attn
        if attn.q_lora_rank is not None and attn.q_lora_rank % bn == 0:
            K, n = attn.q_a_proj.weight.shape[1], attn.q_lora_rank + attn.kv_a_proj_with_mqa.weight.shape[0]
            attn.qa_kva_proj = FP8Linear(K, n, "bias" in attn.q_a_proj, attn.q_a_proj.block_size)
            del attn.q_a_proj, attn.kv_a_proj_with_mqa
        mlps = [layer.mlp] if not isinstance(layer.mlp, ds.MoE) else \
            [layer.mlp.switch_mlp] + ([layer.mlp.shared_experts] if "shared_experts" in layer.mlp else [])
        for m in mlps:
            g = m.gate_proj
            if g.weight.shape[-2] % bn:
                continue
            *E, N, K = g.weight.shape
            m.gate_up_proj = (FP8SwitchLinear(K, 2 * N, E[0], g.block_size) if E
                              else FP8Linear(K, 2 * N, False, g.block_size))
            del m.gate_proj, m.up_proj


def build_fp8(args: ds.ModelArgs, head_bf16: bool, seed: int, finish: bool = True) -> ds.Model:
    """Our model with random FP8 weights written straight as codes + scales (no float weights),
    bf16 norms (ones), embedding and router, fp32 correction bias; then finish_loading()."""
    model = ds.Model(args, head_bf16=head_bf16)
    _prefuse(model)
    modules = dict(model.named_modules())
    h = args.hidden_size
    for name, p in tree_flatten(model.parameters()):
        owner, leaf = name.rsplit(".", 1)
        m = modules.get(owner)
        if isinstance(m, (FP8Linear, FP8SwitchLinear)):
            if leaf == "weight":
                codes, scales = _fp8(owner, p.shape, m.block_size, seed)
                model.update(tree_unflatten([(name, codes), (name + "_scale_inv", scales)]))
            continue
        if leaf == "e_score_correction_bias":
            v = _float(name, p.shape, 0.01, mx.float32, seed)
        elif isinstance(m, nn.RMSNorm):
            v = mx.ones(p.shape, mx.bfloat16)
        else:  # embedding, bf16 head, router weight: logits of order 1 on normalised inputs
            v = _float(name, p.shape, h ** -0.5 if owner.endswith(".gate") else 0.02, mx.bfloat16, seed)
        mx.eval(v)
        model.update(tree_unflatten([(name, v)]))
    return model.finish_loading() if finish else model


# ---- the plain-MLX anchor (mlx-lm's deepseek_v3.py layout: bf16 nn.Linear, per-head bf16 matrices)

class MLXAbsorbed(nn.Module):
    """mlx-lm's absorbed decode: q_nope through per-head W_UK^T (embed_q), MLX sdpa over the latent
    with the rope scores as an additive mask, per-head W_UV (unembed_out), bf16 batched matmuls."""

    def __init__(self, attn: ds.MLA, kv_b: mx.array):
        super().__init__()
        H, nope, kvr = attn.n_heads, attn.nope, attn.kv_lora_rank
        w = kv_b.reshape(H, nope + attn.v_dim, kvr)
        self.embed_q = mx.contiguous(w[:, :nope, :].swapaxes(-1, -2))  # (H, kvr, nope)
        self.unembed_out = mx.contiguous(w[:, nope:, :])                 # (H, v, kvr)
        self.scale, self.kvr = attn.scale, kvr

    def __call__(self, q_nope, q_pe, keys):
        if q_nope.shape[1] != 1:
            raise ValueError("bench anchor: the MLX absorbed attention decodes one token at a time")
        q = q_nope.transpose(0, 2, 1, 3) @ self.embed_q.swapaxes(-1, -2)      # (B, H, 1, kvr)
        latent, k_pe = keys[..., :self.kvr], keys[..., self.kvr:]
        pe_scores = (q_pe * self.scale) @ k_pe.swapaxes(-1, -2)
        o = mx.fast.scaled_dot_product_attention(q, latent, latent, scale=self.scale, mask=pe_scores)
        return (o @ self.unembed_out.swapaxes(-1, -2)).transpose(0, 2, 1, 3)  # (B, 1, H, v)


class MLXSwitchLinear(nn.Module):
    """mlx-lm's SwitchLinear. MLX's CPU gather_mm takes float32 only (bf16 raises "[GatherMM::eval]
    Currently only supports float32"), so these weights are float32: 4 bytes a weight."""

    def __init__(self, weight: mx.array):
        super().__init__()
        self.weight = weight  # (E, N, K) float32

    def __call__(self, x, idx):
        return mx.gather_mm(x.astype(mx.float32), self.weight.swapaxes(-1, -2), rhs_indices=idx).astype(x.dtype)


class MLXSwitchGLU(nn.Module):
    """mlx-lm's SwitchGLU at decode (fewer than 64 indices: no sort): gather_mm with rhs_indices
    (float32 weights: the only dtype MLX's CPU gather_mm runs)."""

    def __init__(self, sw: ds.SwitchMLP):
        super().__init__()
        gu = _dequant_stack(sw.gate_up_proj)
        n = gu.shape[1] // 2
        self.gate_proj, self.up_proj = MLXSwitchLinear(gu[:, :n]), MLXSwitchLinear(gu[:, n:])
        mx.eval(self.parameters())
        del gu
        self.down_proj = MLXSwitchLinear(_dequant_stack(sw.down_proj))

    def __call__(self, x, idx):  # x (T, dim), idx (T, k) -> (T, k, dim)
        x = mx.expand_dims(x, (-2, -3))
        h = fused.silu_mul(self.gate_proj(x, idx), self.up_proj(x, idx))
        return self.down_proj(h, idx).squeeze(-2)


_SPLITS = {"qa_kva_proj": ("q_a_proj", "kv_a_proj_with_mqa"), "gate_up_proj": ("gate_proj", "up_proj")}


def _linear(w: mx.array) -> nn.Linear:
    lin = nn.Linear(w.shape[1], w.shape[0], bias=False)
    lin.weight = mx.contiguous(w)
    mx.eval(lin.weight)
    return lin


def _dequant(m: FP8Linear) -> mx.array:
    return _ext.dequantize_fp8(m.weight, m.weight_scale_inv, block_size=m.block_size, dtype=mx.bfloat16)


def _dequant_stack(m: FP8SwitchLinear) -> mx.array:
    w = mx.stack([_ext.dequantize_fp8(m.weight[e], m.weight_scale_inv[e], block_size=m.block_size,
                                      dtype=mx.float32) for e in range(m.weight.shape[0])])
    mx.eval(w)
    return w


def build_anchor(args: ds.ModelArgs, experts: int, head_bf16: bool, seed: int) -> ds.Model:
    """The same layers with only the first `experts` experts (same codes: weights are seeded per
    name and expert) and the router cut to them, dequantized to bf16 and run by MLX's own ops."""
    if args.n_routed_experts:
        args = dataclasses.replace(args, n_routed_experts=min(experts, args.n_routed_experts))
        args.validate()
    model = build_fp8(args, head_bf16, seed, finish=False)
    modules = dict(model.named_modules())
    for layer in model.layers:
        attn = layer.self_attn
        attn.mlx_absorbed = MLXAbsorbed(attn, _dequant(attn.kv_b_proj))
        attn.absorbed = attn.mlx_absorbed.__call__  # a plain attribute: shadows the method
        del attn.kv_b_proj  # decode never reads it (only an empty-cache prefill would)
        if isinstance(layer.mlp, ds.MoE):
            layer.mlp.switch_mlp = MLXSwitchGLU(layer.mlp.switch_mlp)
        mx.eval(layer.parameters())
    for name, m in model.named_modules():  # a list: safe to swap modules while walking it
        if isinstance(m, FP8Linear):
            owner, leaf = name.rsplit(".", 1) if "." in name else ("", name)
            parent = modules[owner] if owner else model
            w = _dequant(m)
            delattr(parent, leaf)
            parts = _SPLITS.get(leaf)
            if parts is None:
                setattr(parent, leaf, _linear(w))
            else:  # mlx-lm keeps these separate: split the fused weight back by rows
                n0 = w.shape[0] // 2 if leaf == "gate_up_proj" else model.args.q_lora_rank
                setattr(parent, parts[0], _linear(w[:n0]))
                setattr(parent, parts[1], _linear(w[n0:]))
            del w
    mx.eval(model.parameters())
    return model


# ---- bytes a decoded token reads, from the model's arrays

def _nbytes(module, skip=()) -> int:
    return sum(p.nbytes for n, p in tree_flatten(module.parameters()) if not n.startswith(skip))


def layer_bytes(layer) -> dict[str, float]:
    """Weights one decode step of this layer reads: attention as decode runs it (fused q_a/kv_a,
    q_b, the absorbed W_UK^T / W_UV instead of kv_b_proj, o_proj, norms), the MLP or the MoE's
    router, shared expert and top-k of the stacked experts (k distinct experts per token)."""
    attn = layer.self_attn
    d = {"attention": _nbytes(attn, skip=("kv_b_proj",)) + (attn.derived_nbytes() if "_wuk_t" in attn else 0)
         + layer.input_layernorm.weight.nbytes + layer.post_attention_layernorm.weight.nbytes}
    mlp = layer.mlp
    if isinstance(mlp, ds.MoE):
        a = mlp.gate.args
        d["router"] = _nbytes(mlp.gate)
        d["shared expert"] = _nbytes(mlp.shared_experts) if "shared_experts" in mlp else 0
        d["routed experts"] = _nbytes(mlp.switch_mlp) * a.num_experts_per_tok / a.n_routed_experts
    else:
        d["dense MLP"] = _nbytes(mlp)
    return d


def cache_bytes(args, context, itemsize=2) -> int:
    """One layer's latent cache at `context`: context x (kv_lora + rope) values."""
    return context * (args.kv_lora_rank + args.qk_rope_head_dim) * itemsize


def head_bytes(model) -> int:
    return _nbytes(model.lm_head) + model.model.norm.weight.nbytes


def attention_flops(args, context) -> float:
    """One layer's absorbed attention per token: scores over kv_lora + rope and P V over kv_lora for
    every head against one latent KV head, plus the per-head W_UK / W_UV matmuls."""
    H, kvr, r = args.num_attention_heads, args.kv_lora_rank, args.qk_rope_head_dim
    return 2.0 * H * context * (2 * kvr + r) + 2.0 * H * kvr * (args.qk_nope_head_dim + args.v_head_dim)


def token_bytes(model, context) -> tuple[int, dict[str, float]]:
    parts: dict[str, float] = {}
    for layer in model.layers:
        for k, v in layer_bytes(layer).items():
            parts[k] = parts.get(k, 0) + v
    parts[f"latent cache ({context} tokens)"] = cache_bytes(model.args, context) * len(model.layers)
    parts["head + final norm"] = head_bytes(model)
    return int(sum(parts.values())), parts


def full_model_bytes(model, context) -> tuple[float, float] | None:
    """(bytes per token, of which routed experts) of the 61-layer model (3 dense + 58 MoE layers) from
    this run's per-layer byte functions, or None without one layer of each kind."""
    dense = next((layer_bytes(l) for l in model.layers if not isinstance(l.mlp, ds.MoE)), None)
    moe = next((layer_bytes(l) for l in model.layers if isinstance(l.mlp, ds.MoE)), None)
    if dense is None or moe is None:
        return None
    total = (FULL_DENSE * sum(dense.values()) + FULL_MOE * sum(moe.values()) + head_bytes(model)
             + (FULL_DENSE + FULL_MOE) * cache_bytes(model.args, context))
    return total, FULL_MOE * moe["routed experts"]


# ---- timing

def time_decode_at(model, context, n, repeats, seed=0):
    """Greedy generate_step with a 1-token prompt after `context` random latent rows were put into
    each layer's cache directly (no prefill: the rows' content does not change the decode cost)."""
    cache = model.make_cache()
    a = model.args
    rows = mx.random.normal((1, 1, context, a.kv_lora_rank + a.qk_rope_head_dim), dtype=model.dtype,
                            key=mx.random.key(seed))
    for c in cache:
        c.update_and_fetch(rows)
    mx.eval([c.state for c in cache])
    prompt = mx.array([1], mx.int32)
    return time_tokens(generate_step(model, prompt, temperature=0.0, cache=cache), n, repeats)


def main(a) -> int:
    log = lambda *x: print(*x, file=sys.stderr, flush=True)
    n_tok = a.decode_tokens if a.decode_tokens is not None else 8
    reps = a.repeats if a.repeats is not None else 3
    anchor_ctx = a.anchor_context if a.anchor_context is not None else 1024
    anchors = [k for k in (a.anchors if a.anchors is not None else "bf16").split(",") if k]
    if any(k != "bf16" for k in anchors):
        raise ValueError(f"bench model --arch deepseek_v3: only the bf16 anchor exists, got --anchors {a.anchors!r}")
    contexts = [int(c) for c in a.contexts.split(",") if c]
    if not contexts or min(contexts) < 1:
        raise ValueError(f"bench model: --contexts needs positive token counts, got {a.contexts!r}")
    args = model_args(a)
    head_bf16 = a.head == "bf16"

    log(f"building random FP8 DeepSeek-V3 layers: {a.dense_layers} dense + {a.moe_layers} MoE, hidden "
        f"{args.hidden_size}, {args.num_attention_heads} heads, {args.n_routed_experts or 0} experts, "
        f"vocab {args.vocab_size}, head {a.head}")
    bw = measure_bandwidth()
    mx.reset_peak_memory()
    model = build_fp8(args, head_bf16, a.seed)
    n_params = sum(p.size for n, p in tree_flatten(model.parameters()) if not n.endswith("scale_inv"))
    mem_ours = mx.get_peak_memory()
    rows = []  # (name, context, decode rates, bytes/token, breakdown)
    for ctx in contexts:
        log(f"timing FP8 (ours) at context {ctx}")
        nbytes, parts = token_bytes(model, ctx)
        rows.append(("FP8 (ours)", ctx, time_decode_at(model, ctx, n_tok, reps, a.seed), nbytes, parts))
    full = {ctx: full_model_bytes(model, ctx) for ctx in contexts}
    del model
    gc.collect()
    mx.clear_cache()
    bw += measure_bandwidth()  # before and after ours: the machine is shared, so sample both ends
    mem_anchor = 0
    for kind in anchors:
        E = min(a.anchor_experts, args.n_routed_experts or a.anchor_experts)
        log(f"building the MLX {kind} anchor ({E} experts) and timing it at context {anchor_ctx}")
        mx.reset_peak_memory()
        plain = build_anchor(args, a.anchor_experts, head_bf16, a.seed)
        mem_anchor = mx.get_peak_memory()
        with fused.mlx_ops():  # MLX's norms, rope and silu too
            rates = time_decode_at(plain, anchor_ctx, a.anchor_decode_tokens, a.anchor_repeats, a.seed)
        nbytes, parts = token_bytes(plain, anchor_ctx)
        rows.append((f"MLX {kind} (mlx-lm layout, {E} experts)", anchor_ctx, rates, nbytes, parts))
        del plain
        gc.collect()
        mx.clear_cache()
    bw_med = statistics.median(bw)
    _report(a, args, n_params, rows, full, bw, bw_med, mem_ours, mem_anchor)
    return 0


def _size(n: float) -> str:
    return f"{n / 1e9:.3f} GB" if n >= 1e8 else f"{n / 1e6:.2f} MB"


def _report(a, args, n_params, rows, full, bw, bw_med, mem_ours, mem_anchor):
    L = a.dense_layers + a.moe_layers
    print(f"model: DeepSeek-V3 layers, {a.dense_layers} dense + {a.moe_layers} MoE of 61 (hidden {args.hidden_size}, "
          f"{args.num_attention_heads} heads, {args.n_routed_experts or 0} experts top-{args.num_experts_per_tok}, "
          f"vocab {args.vocab_size}, head {a.head}), {n_params / 1e9:.2f} B parameters; random FP8 weights; "
          f"latent caches filled with random rows (content does not change the cost); greedy decode, "
          f"1-token prompt; read bandwidth {bw_med:.1f} GB/s (median of {len(bw)}, {min(bw):.1f}-{max(bw):.1f}); "
          f"peak memory {mem_ours / 1e9:.1f} GB (ours), {mem_anchor / 1e9:.1f} GB (anchor); medians, spread = min-max")
    print(f"| {'model':36} | {'context':>7} | {'bytes/token':>11} | {'decode tok/s':>12} | {'spread':>13} | "
          f"{'vs FP8':>6} | {'% of bound':>10} | {'attn GFLOP/token':>16} |")
    print("|" + "|".join("-" * (w + 2) for w in (36, 7, 11, 12, 13, 6, 10, 16)) + "|")
    ours = {ctx: statistics.median(r) for name, ctx, r, _, _ in rows if name.startswith("FP8")}
    pct = {}
    for name, ctx, rates, nbytes, _ in rows:
        med = statistics.median(rates)
        p = 100 * med / (bw_med * 1e9 / nbytes)
        if name.startswith("FP8"):
            pct[ctx] = p
        d, ds_ = fmt(rates)
        vs = f"{med / ours[ctx]:6.2f}" if ctx in ours else f"{'-':>6}"
        gfl = attention_flops(args, ctx) * L / 1e9
        print(f"| {name:36} | {ctx:>7} | {_size(nbytes):>11} | {d:>12} | {ds_:>13} | {vs} | {p:9.0f}% | "
              f"{gfl:16.4g} |")
    for ctx, p in pct.items():
        bound = bw_med * 1e9 / next(r[3] for r in rows if r[0].startswith("FP8") and r[1] == ctx)
        print(f"bandwidth bound at context {ctx}: {bound:.2f} tokens/s; ours {p:.0f}% of it "
              f"(target >= 70%: {'met' if p >= 70 else 'MISSED'})")
    if any(r[0].startswith("MLX") for r in rows):
        print(f"the anchor keeps {min(a.anchor_experts, args.n_routed_experts or a.anchor_experts)} experts "
              f"(router restricted to them; a token still reads {args.num_experts_per_tok}); its context: "
              f"{rows[-1][1]}; bf16 head")
    print(f"attention per layer per token (absorbed: {args.num_attention_heads} query heads over one "
          + f"{args.kv_lora_rank + args.qk_rope_head_dim}-wide latent head): "
          + ", ".join(f"{attention_flops(args, c) / 1e9:.4g} GFLOP at {c}" for c in ours))
    print("bytes per decoded token (ours), breakdown:")
    for name, ctx, _, nbytes, parts in rows:
        if name.startswith("FP8"):
            print(f"  context {ctx}: " + ", ".join(f"{k} {_size(v)}" for k, v in parts.items())
                  + f"; total {_size(nbytes)}")
    print("ESTIMATES (not measured) for the full 61-layer model (3 dense + 58 MoE + head), from this run's "
          "per-layer bytes:")
    for ctx, p in pct.items():
        f = full.get(ctx)
        if f is None:
            print(f"  context {ctx}: n/a (needs one dense and one MoE layer in the run)")
            continue
        total, routed = f
        t100 = M3_ULTRA_GBPS * 1e9 / total
        print(f"  context {ctx}: {_size(total)} per token (routed experts {_size(routed)}); one M3 Ultra "
              f"({M3_ULTRA_GBPS:.0f} GB/s): {t100:.1f} tok/s at 100% of bandwidth, {t100 * p / 100:.1f} tok/s at "
              f"the {p:.0f}% measured here; two machines (pipeline, half the layers each): single stream the "
              f"same {t100 * p / 100:.1f} tok/s, two streams in flight ~{2 * t100 * p / 100:.1f} tok/s aggregate")
