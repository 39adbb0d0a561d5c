"""`tandem bench model`: decode and prefill tokens/s of a random ~1B Llama (Llama-3.2-1B's shape:
hidden 2048, 16 layers, GQA 32/8, tied 128256 vocabulary) in FP8 on our kernels, against the same
weights in plain MLX layers (bfloat16 nn.Linear and nn.QuantizedLinear mode "mxfp8", MLX sdpa)
and against the bandwidth bound (weight bytes per token / measured read bandwidth).
`--arch deepseek_v3` dispatches to bench/model_deepseek.py, which reuses the helpers here."""

from __future__ import annotations

import gc
import statistics
import sys
import time

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from .. import _ext, fused
from ..models import ModelArgs, model_class
from ..generate import generate_step
from ..nn import FP8Linear


# --arch llama defaults of the flags both architectures take (None on the parser, filled per arch)
LLAMA_DEFAULTS = dict(hidden=2048, intermediate=8192, heads=32, vocab=128256, decode_tokens=16, repeats=5,
                      anchor_context=4, anchors="bf16,mxfp8")


def add_arguments(parser):
    parser.add_argument("--arch", choices=("llama", "deepseek_v3"), default="llama",
                        help="llama: a random ~1B Llama; deepseek_v3: DeepSeek-V3 layers at full dims "
                             "(bench/model_deepseek.py)")
    parser.add_argument("--layers", type=int, default=16, help="(llama)")
    parser.add_argument("--hidden", type=int, default=None, help="llama 2048, deepseek_v3 7168")
    parser.add_argument("--intermediate", type=int, default=None,
                        help="MLP width: llama 8192, deepseek_v3 18432 (its dense layers)")
    parser.add_argument("--heads", type=int, default=None, help="llama 32, deepseek_v3 128")
    parser.add_argument("--kv-heads", type=int, default=8, help="(llama)")
    parser.add_argument("--vocab", type=int, default=None, help="llama 128256, deepseek_v3 129280")
    parser.add_argument("--context", type=int, default=64, help="(llama) tokens in the cache before timing decode")
    parser.add_argument("--decode-tokens", type=int, default=None, help="llama 16, deepseek_v3 8")
    parser.add_argument("--prompt", type=int, default=128, help="(llama) prefill length for our model")
    parser.add_argument("--repeats", type=int, default=None, help="llama 5, deepseek_v3 3")
    # MLX's CPU matmuls are slow on Linux (mxfp8 ~0.05 GB/s here), so the anchors get short runs
    parser.add_argument("--anchor-context", type=int, default=None, help="llama 4, deepseek_v3 1024")
    parser.add_argument("--anchor-decode-tokens", type=int, default=2)
    parser.add_argument("--anchor-prompt", type=int, default=4, help="(llama) prefill length for the MLX anchors")
    parser.add_argument("--anchor-repeats", type=int, default=2)
    parser.add_argument("--anchors", default=None,
                        help="comma list (empty: none): llama bf16,mxfp8 (default both); deepseek_v3 bf16")
    from . import model_deepseek  # imports this module's helpers: import it here, not at the top
    model_deepseek.add_arguments(parser)


def build_fp8(a) -> nn.Module:
    cfg = dict(model_type="llama", hidden_size=a.hidden, num_hidden_layers=a.layers,
               intermediate_size=a.intermediate, num_attention_heads=a.heads, num_key_value_heads=a.kv_heads,
               vocab_size=a.vocab, rms_norm_eps=1e-5, tie_word_embeddings=True, rope_theta=500000.0,
               max_position_embeddings=8192)
    args = ModelArgs.from_config(cfg)
    model = model_class("llama")(args)
    key = mx.random.key(0)
    updates = []
    for name, p in tree_flatten(model.parameters()):
        key, k = mx.random.split(key)
        if name.endswith("weight_scale_inv") or name.startswith("lm_head"):
            continue
        if name.endswith("layernorm.weight") or name == "model.norm.weight":
            updates.append((name, mx.ones(p.shape, mx.bfloat16)))
        elif p.dtype == mx.uint8:  # an FP8Linear: quantize normal(0, 0.02) weights
            w = (0.02 * mx.random.normal(p.shape, key=k)).astype(mx.bfloat16)
            codes, scales = _ext.quantize_fp8(w, block_size=(128, 128))
            mx.eval(codes, scales)
            updates += [(name, codes), (name + "_scale_inv", scales)]
        else:
            updates.append((name, (0.02 * mx.random.normal(p.shape, key=k)).astype(mx.bfloat16)))
            mx.eval(updates[-1][1])
    model.update(tree_unflatten(updates))
    model.finish_loading()  # the FP8 head from the embedding, fused projections, 2 MB pages: as load()
    return model


def _sdpa(attn):
    def attend(q, k, v):
        return mx.fast.scaled_dot_product_attention(q, k, v, scale=attn.scale,
                                                    mask="causal" if q.shape[2] > 1 else None)
    return attend


def plain_copy(model, kind: str):
    """The same weights as plain MLX layers: bf16 nn.Linear (dequantized FP8) or mxfp8
    nn.QuantizedLinear, with MLX's sdpa; returns a new model object."""
    plain = model_class("llama")(model.args)
    plain.fuse_projections()  # the same layer structure as ours (fused q/k/v and gate/up weights)
    plain.update(model.parameters())
    swaps = []
    for name, m in plain.named_modules():
        if isinstance(m, FP8Linear):
            N, K = m.weight.shape
            lin = nn.Linear(K, N, bias=False)
            lin.weight = _ext.dequantize_fp8(m.weight, m.weight_scale_inv, block_size=m.block_size,
                                             dtype=mx.bfloat16)
            if kind == "mxfp8":
                lin = nn.QuantizedLinear.from_linear(lin, group_size=32, bits=8, mode="mxfp8")
            mx.eval(lin.parameters())
            swaps.append((name, lin))
    plain.update_modules(tree_unflatten(swaps))
    for layer in plain.layers:
        layer.self_attn.attend = _sdpa(layer.self_attn)
    mx.eval(plain.parameters())
    return plain


def weight_bytes_per_token(model) -> int:
    """Bytes every decode step must read: all linear weights (codes + scales, or bf16/mxfp8 data)
    and norms; one embedding row (negligible) is not counted."""
    total = 0
    for name, p in tree_flatten(model.parameters()):
        if name.startswith("model.embed_tokens"):
            continue
        total += p.nbytes
    return total


def time_decode(model, context, n, repeats):
    """Decode as users run it: greedy generate_step (each next step is queued before the current
    token is read, so building the graph overlaps with compute) after `context` prompt tokens
    (untimed); `repeats` timed runs of n tokens."""
    rng = np.random.default_rng(0)
    prompt = mx.array(rng.integers(0, model.args.vocab_size, (context,)), mx.int32)
    gen = generate_step(model, prompt, temperature=0.0, cache=model.make_cache(), prefill_step=max(context, 512))
    return time_tokens(gen, n, repeats)


def time_tokens(gen, n, repeats):
    """tokens/s of `repeats` timed runs of n tokens from a generate_step generator (its first
    token, the prompt's, is taken untimed); closes the generator."""
    next(gen)
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(n):
            next(gen)
        rates.append(n / (time.perf_counter() - t))
    gen.close()
    return rates


def time_prefill(model, L, repeats):
    rates = []
    rng = np.random.default_rng(1)
    for _ in range(repeats):
        cache = model.make_cache()
        prompt = mx.array(rng.integers(0, model.args.vocab_size, (1, L)), mx.int32)
        t = time.perf_counter()
        mx.eval(model(prompt, cache=cache)[:, -1])
        rates.append(L / (time.perf_counter() - t))
    return rates


def measure_bandwidth(repeats=7) -> list[float]:
    buf = np.ones(1 << 30, np.uint8)  # 1 GiB, far beyond the last-level cache
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        _ext.stream_read(buf)
        out.append(buf.nbytes / (time.perf_counter() - t) / 1e9)
    return out


def fmt(rates):
    med = statistics.median(rates)
    return f"{med:8.2f}", f"{min(rates):.2f}-{max(rates):.2f}"


def main(a) -> int:
    if a.arch == "deepseek_v3":
        from . import model_deepseek
        return model_deepseek.main(a)
    for k, v in LLAMA_DEFAULTS.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    log = lambda *x: print(*x, file=sys.stderr, flush=True)
    log(f"building random FP8 Llama: hidden {a.hidden}, {a.layers} layers, heads {a.heads}/{a.kv_heads}, "
        f"ffn {a.intermediate}, vocab {a.vocab}")
    model = build_fp8(a)
    n_params = sum(p.size for n, p in tree_flatten(model.parameters())
                   if not n.endswith("scale_inv") and not n.startswith("lm_head"))  # the head is tied
    rows = []  # (model, decode rates, prefill rates, prefill length, bytes/token)
    bw = measure_bandwidth()
    log(f"read bandwidth {statistics.median(bw):.1f} GB/s; timing FP8 (ours)")
    fp8_bytes = weight_bytes_per_token(model)
    rows.append(("FP8 (ours: fp8_matmul + fused_attention)", time_decode(model, a.context, a.decode_tokens, a.repeats),
                 time_prefill(model, a.prompt, a.repeats), a.prompt, fp8_bytes))
    for kind in [k for k in a.anchors.split(",") if k]:
        log(f"timing MLX {kind} anchor")
        plain = plain_copy(model, kind)
        with fused.mlx_ops():  # MLX's norms, rope and silu too
            rows.append((f"MLX {kind} (nn.{'Linear' if kind == 'bf16' else 'QuantizedLinear'} + sdpa)",
                         time_decode(plain, a.anchor_context, a.anchor_decode_tokens, a.anchor_repeats),
                         time_prefill(plain, a.anchor_prompt, a.anchor_repeats), a.anchor_prompt,
                         weight_bytes_per_token(plain)))
        del plain
        gc.collect()
    bw += measure_bandwidth()  # before and after: the machine is shared, so sample both ends
    bw_med = statistics.median(bw)
    print(f"model: {n_params / 1e9:.2f} B parameters (hidden {a.hidden}, {a.layers} layers, GQA {a.heads}/"
          f"{a.kv_heads}, vocab {a.vocab}, tied), decode after {a.context} tokens ({a.anchor_context} for anchors); "
          f"read bandwidth {bw_med:.1f} GB/s (median of {len(bw)}, {min(bw):.1f}-{max(bw):.1f}); "
          f"medians, spread = min-max")
    print(f"| {'model':42} | {'weights/token':>13} | {'decode tok/s':>12} | {'spread':>11} | {'vs FP8':>6} | "
          f"{'% of bound':>10} | {'prefill tok/s':>13} | {'spread':>13} | {'prompt':>6} |")
    print("|" + "|".join("-" * (w + 2) for w in (42, 13, 12, 11, 6, 10, 13, 13, 6)) + "|")
    ours_dec = statistics.median(rows[0][1])
    for name, dec, pre, L, nbytes in rows:
        bound = bw_med * 1e9 / nbytes
        d, ds = fmt(dec)
        p, ps = fmt(pre)
        print(f"| {name:42} | {nbytes / 1e9:10.2f} GB | {d:>12} | {ds:>11} | "
              f"{statistics.median(dec) / ours_dec:6.2f} | {100 * statistics.median(dec) / bound:9.0f}% | "
              f"{p:>13} | {ps:>13} | {L:>6} |")
    print(f"bandwidth bound for FP8 decode: {bw_med * 1e9 / fp8_bytes:.2f} tokens/s "
          f"({fp8_bytes / 1e9:.2f} GB per token / {bw_med:.1f} GB/s)")
    return 0
