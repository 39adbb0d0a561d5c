"""Generate tests/golden/deepseek_v3, deepseek_v3_noyarn and deepseek_v2: tiny random DeepSeek
checkpoints in DeepSeek-V3's published on-disk FP8 layout, with transformers' logits on the same
(dequantized) weights. Needs torch + transformers 5.x and mlx_tandem; the tests do not.

    python scripts/make_goldens_deepseek.py

Per config: random float32 weights (seeded; nonzero random norm weights, a random fp32
e_score_correction_bias for V3) -> FP8 E4M3 codes + F32 weight_scale_inv for every attention / MLP /
expert linear (our ceil-grid quantizer, mlx_tandem.quantize_fp8; all dims leave partial 128-blocks),
BF16 embed_tokens / lm_head / norms / router weight, F32 correction bias, per-expert tensor names, an
MTP layer at index num_hidden_layers (V3 only; loaders must skip it), 3 shards + index, and a
config.json as DeepSeek publishes it. The weights read back from those files (FP8 dequantized in
float64 then rounded to float32, BF16 widened) go into transformers' model, so the golden measures
our code, not quantization error. The same weights also run through an independent float64 numpy
forward written from DEEPSEEK.md (np_forward below); the script asserts that it agrees with
transformers and routes every token to the same experts, that no routing decision is a near-tie,
and that some tokens would route differently without the group limit (and without the V3 bias), so
a model that drops either fails against these goldens.

transformers 5.x behaviour checked (models/deepseek_v3, models/deepseek_v2, modeling_rope_utils):
- config.json with the 4.x keys (rope_theta + rope_scaling {"type": "yarn", ...}) is read as
  rope_parameters {"rope_type": "yarn", ...}. YaRN inverse frequencies are used whenever the rope
  type is yarn, for every sequence length (DeepSeek's own inference code switches YaRN off when its
  max_seq_len <= original_max_position_embeddings; the goldens follow transformers). Correction
  range: floor/ceil of find_correction_dim, clamped to [0, dim - 1] (truncate defaults to True),
  dim = qk_rope_head_dim. With dim 16, base 1e4 and original length 8 (V3 config) the range is
  (0, 1): frequency 0 kept, all others divided by the factor; the V2 config (original 4096) has a
  real ramp over dims 2..6. transformers warns when factor != max_position_embeddings /
  original_max_position_embeddings (it uses the explicit factor anyway), so the configs keep that
  ratio.
- cos/sin are multiplied by attention_factor = mscale(f, mscale) / mscale(f, mscale_all_dim) (1 in
  all these configs, as in the published ones); the softmax scale is qk_head_dim^-0.5 *
  mscale(f, mscale_all_dim)^2 whenever rope type is not default and mscale_all_dim is nonzero.
- V3 rope (rope_interleave True): rotates the checkpoint's interleaved pairs (x0, x1), (x2, x3) ...
  and returns them de-interleaved (evens then odds) for q and k alike: q.k is unchanged. V2
  rotates the same pairs as complex numbers and keeps the order. Only q_pe / k_pe are rotated;
  k_pe is one head shared by all heads.
- V3 router = DEEPSEEK.md: float32 logits, sigmoid, bias for selection only, group score = sum of
  the top 2, keep topk_group groups, others masked with -inf, top-k, unbiased weights normalised
  (+1e-20) and scaled by routed_scaling_factor. It reads no scoring_func / topk_method keys.
- V2 router: softmax; topk_method "greedy" or "group_limited_greedy" (group score = max of the
  group) are both supported; the masked groups are filled with 0.0, not -inf. Softmax scores are
  > 0, so a masked expert can never beat a kept one while num_experts_per_tok <= kept experts
  (here 4 <= 8): identical to -inf. It IGNORES norm_topk_prob (never normalises): the V2 config
  uses norm_topk_prob false (as V2 / V2-Lite publish), so this cannot matter.
- Experts are fused 3-D parameters: mlp.experts.gate_up_proj (E, 2I, H) = [gate; up] per expert and
  mlp.experts.down_proj (E, H, I); the per-expert checkpoint tensors are stacked onto them here.
- RMSNorm: float32, weight * x / sqrt(mean(x^2) + eps); q_a_layernorm / kv_a_layernorm use eps 1e-6
  whatever rms_norm_eps says (equal here).
"""

from __future__ import annotations

import json
import math
import os
import shutil

import ml_dtypes
import numpy as np
import torch
import transformers

import mlx.core as mx
import mlx_tandem as tdm
from mlx_tandem.safetensors_io import SafetensorsFile, save

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "tests", "golden")
SEQ, BATCH, BLOCK = 12, 2, (128, 128)
MARGIN = 2e-3  # smallest allowed gap between a chosen and a rejected group / expert score

QUANT = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8", "weight_block_size": [128, 128]}
COMMON = dict(hidden_size=160, intermediate_size=192, moe_intermediate_size=48, num_attention_heads=4,
              num_key_value_heads=4, kv_lora_rank=80, qk_nope_head_dim=24, qk_rope_head_dim=16,
              v_head_dim=20, n_routed_experts=16, num_experts_per_tok=4, n_group=4, topk_group=2,
              first_k_dense_replace=1, vocab_size=300, rms_norm_eps=1e-6, tie_word_embeddings=False,
              attention_bias=False, attention_dropout=0.0, hidden_act="silu", initializer_range=0.02,
              pretraining_tp=1, moe_layer_freq=1, aux_loss_alpha=0.001, seq_aux=True, use_cache=True,
              torch_dtype="bfloat16", transformers_version="4.33.1", quantization_config=QUANT)
V3 = dict(architectures=["DeepseekV3ForCausalLM"], model_type="deepseek_v3", bos_token_id=0, eos_token_id=1,
          ep_size=1, q_lora_rank=96, n_shared_experts=1, topk_method="noaux_tc", scoring_func="sigmoid",
          norm_topk_prob=True, routed_scaling_factor=2.5, num_nextn_predict_layers=1)
CONFIGS = {
    "deepseek_v3": {**COMMON, **V3, "num_hidden_layers": 3, "max_position_embeddings": 32, "rope_theta": 10000,
                    "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 4.0, "mscale": 1.0,
                                     "mscale_all_dim": 1.0, "original_max_position_embeddings": 8,
                                     "type": "yarn"}},
    # transformers-5 style: rope_parameters (rope_theta inside), no rope_scaling; rope_interleave
    # explicit (the published config has no such key: transformers defaults it to True)
    "deepseek_v3_noyarn": {**COMMON, **V3, "num_hidden_layers": 2, "n_shared_experts": 2, "rope_interleave": True,
                           "max_position_embeddings": 256,
                           "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"}},
    "deepseek_v2": {**COMMON, "architectures": ["DeepseekV2ForCausalLM"], "model_type": "deepseek_v2",
                    "bos_token_id": 0, "eos_token_id": 1, "num_hidden_layers": 3, "q_lora_rank": None,
                    "n_shared_experts": 2, "topk_method": "group_limited_greedy", "scoring_func": "softmax",
                    # DeepSeek-V2's own 16.0 (V2-Lite's 1.0 could not catch a dropped factor)
                    "norm_topk_prob": False, "routed_scaling_factor": 16.0,
                    "max_position_embeddings": 163840, "rope_theta": 10000,
                    "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 0.707,
                                     "mscale_all_dim": 0.707, "original_max_position_embeddings": 4096,
                                     "type": "yarn"}},
}
SEEDS = {"deepseek_v3": 3, "deepseek_v3_noyarn": 5, "deepseek_v2": 2}

ATTN_FP8 = ("q_proj", "q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj")


def fp8_names(state):
    """Linears stored as FP8: every attention / MLP / expert projection (not the router, eh_proj, heads)."""
    return [n for n in state if is_fp8(n)]


def is_fp8(name):
    """(kv_a_proj_with_mqa is FP8 in the published checkpoint too, with a partial last row block.)"""
    return (name.endswith(("_proj.weight", "kv_a_proj_with_mqa.weight"))
            and not name.endswith("eh_proj.weight"))


# ---------------------------------------------------------------- random weights --

def layer_weights(cfg, p, moe, rng):
    """One decoder layer's float32 tensors under prefix p, in the checkpoint's names and (N, K) shapes."""
    H, nh = cfg["hidden_size"], cfg["num_attention_heads"]
    dn, dr, dv, r = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"], cfg["kv_lora_rank"]
    lin = lambda n, k: rng.normal(0, k ** -0.5, (n, k)).astype(np.float32)
    norm = lambda n: rng.uniform(0.6, 1.4, n).astype(np.float32)
    w = {p + "input_layernorm.weight": norm(H), p + "post_attention_layernorm.weight": norm(H)}
    a = p + "self_attn."
    if cfg["q_lora_rank"]:
        q = cfg["q_lora_rank"]
        w.update({a + "q_a_proj.weight": lin(q, H), a + "q_a_layernorm.weight": norm(q),
                  a + "q_b_proj.weight": lin(nh * (dn + dr), q)})
    else:
        w[a + "q_proj.weight"] = lin(nh * (dn + dr), H)
    w.update({a + "kv_a_proj_with_mqa.weight": lin(r + dr, H), a + "kv_a_layernorm.weight": norm(r),
              a + "kv_b_proj.weight": lin(nh * (dn + dv), r), a + "o_proj.weight": lin(H, nh * dv)})

    def mlp(q, i):
        w.update({q + "gate_proj.weight": lin(i, H), q + "up_proj.weight": lin(i, H),
                  q + "down_proj.weight": lin(H, i)})
    m = p + "mlp."
    if not moe:
        mlp(m, cfg["intermediate_size"])
        return w
    E, I = cfg["n_routed_experts"], cfg["moe_intermediate_size"]
    for e in range(E):
        mlp(f"{m}experts.{e}.", I)
    mlp(m + "shared_experts.", I * cfg["n_shared_experts"])
    w[m + "gate.weight"] = rng.normal(0, 2 * H ** -0.5, (E, H)).astype(np.float32)
    if cfg["model_type"] == "deepseek_v3":
        w[m + "gate.e_score_correction_bias"] = rng.normal(0, 0.15, E).astype(np.float32)
    return w


def random_state(cfg, rng):
    H, V, n = cfg["hidden_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
    w = {"model.embed_tokens.weight": rng.normal(0, 1, (V, H)).astype(np.float32),
         "model.norm.weight": rng.uniform(0.6, 1.4, H).astype(np.float32),
         "lm_head.weight": rng.normal(0, H ** -0.5, (V, H)).astype(np.float32)}
    for i in range(n):
        w.update(layer_weights(cfg, f"model.layers.{i}.", i >= cfg["first_k_dense_replace"], rng))
    for i in range(n, n + cfg.get("num_nextn_predict_layers", 0)):  # MTP module: random, never run
        p = f"model.layers.{i}."
        w.update(layer_weights(cfg, p, i >= cfg["first_k_dense_replace"], rng))
        w.update({p + "enorm.weight": rng.uniform(0.6, 1.4, H).astype(np.float32),
                  p + "hnorm.weight": rng.uniform(0.6, 1.4, H).astype(np.float32),
                  p + "eh_proj.weight": rng.normal(0, (2 * H) ** -0.5, (H, 2 * H)).astype(np.float32),
                  p + "shared_head.norm.weight": rng.uniform(0.6, 1.4, H).astype(np.float32),
                  p + "shared_head.head.weight": rng.normal(0, H ** -0.5, (V, H)).astype(np.float32),
                  p + "embed_tokens.weight": rng.normal(0, 1, (V, H)).astype(np.float32)})
    return w


# ---------------------------------------------------------------- checkpoint I/O --

def bf16(a):
    return ("BF16", np.asarray(a, np.float32).astype(ml_dtypes.bfloat16).view(np.uint16))


def shard_of(name, n_layers):
    """3 shards: embedding + first half of the layers | the rest + norm + head | the MTP layer(s)."""
    if name.startswith("model.layers."):
        i = int(name.split(".")[2])
        return 0 if i < (n_layers + 1) // 2 else (1 if i < n_layers else 2)
    return 0 if name.startswith("model.embed_tokens") else 1


def write_checkpoint(out, cfg, state):
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    fp8 = set(fp8_names(state))
    shards = [{}, {}, {}]
    for name, a in state.items():
        s = shards[shard_of(name, cfg["num_hidden_layers"])]
        if name in fp8:
            codes, scales = tdm.quantize_fp8(mx.array(a), block_size=BLOCK)
            s[name] = ("F8_E4M3", np.array(codes))
            s[name.replace(".weight", ".weight_scale_inv")] = np.array(scales)
        elif name.endswith("e_score_correction_bias"):
            s[name] = a.astype(np.float32)
        else:
            s[name] = bf16(a)
    shards = [s for s in shards if s]
    weight_map, total = {}, 0
    for i, s in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save(os.path.join(out, fname), dict(sorted(s.items())), metadata={"format": "pt"})
        for name, a in s.items():
            weight_map[name] = fname
            total += (a[1] if isinstance(a, tuple) else a).nbytes
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, f, indent=2)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(dict(sorted(cfg.items())), f, indent=2)


def fp8_decode(codes):
    return codes.view(ml_dtypes.float8_e4m3fn).astype(np.float64)


def read_checkpoint(out):
    """The weights as stored, as float32: FP8 codes * block scale (float64, then float32), BF16 widened."""
    with open(os.path.join(out, "model.safetensors.index.json")) as f:
        weight_map = json.load(f)["weight_map"]
    files = {fn: SafetensorsFile(os.path.join(out, fn)) for fn in set(weight_map.values())}
    state = {}
    for name, fn in weight_map.items():
        f = files[fn]
        if name.endswith("_scale_inv"):
            continue
        a, dtype = np.array(f.numpy(name)), f.tensors[name]["dtype"]
        if dtype == "F8_E4M3":
            s = np.array(files[weight_map[name + "_scale_inv"]].numpy(name + "_scale_inv")).astype(np.float64)
            full = np.repeat(np.repeat(s, BLOCK[0], 0), BLOCK[1], 1)[:a.shape[0], :a.shape[1]]
            a = (fp8_decode(a) * full).astype(np.float32)
        elif dtype == "BF16":
            a = a.view(ml_dtypes.bfloat16).astype(np.float32)
        state[name] = a
    return state


# ---------------------------------------------------------------- transformers --

def hf_model(out, cfg, state):
    hf_cfg = transformers.AutoConfig.from_pretrained(out)
    hf_cfg.quantization_config = None
    del hf_cfg.quantization_config
    model = transformers.AutoModelForCausalLM.from_config(hf_cfg, attn_implementation="eager",
                                                          dtype=torch.float32).eval()
    n, E = cfg["num_hidden_layers"], cfg["n_routed_experts"]
    sd = {k: v for k, v in state.items() if shard_of(k, n) < 2}  # MTP layers: not part of the HF model
    for i in range(cfg["first_k_dense_replace"], n):
        m = f"model.layers.{i}.mlp.experts."
        g = lambda e, k: sd.pop(f"{m}{e}.{k}_proj.weight")
        sd[m + "gate_up_proj"] = np.stack([np.concatenate([g(e, "gate"), g(e, "up")]) for e in range(E)])
        sd[m + "down_proj"] = np.stack([g(e, "down") for e in range(E)])
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    return model


def hf_logits_and_routes(model, cfg, tokens):
    routes = {}

    def hook(layer):
        def f(module, args, output):
            _, w, idx = output
            order = np.argsort(idx.numpy(), axis=-1)
            routes[layer] = (np.take_along_axis(idx.numpy(), order, -1),
                             np.take_along_axis(w.detach().numpy(), order, -1))
        return f
    handles = [model.model.layers[i].mlp.gate.register_forward_hook(hook(i))
               for i in range(cfg["first_k_dense_replace"], cfg["num_hidden_layers"])]
    with torch.no_grad():
        logits = model(torch.from_numpy(tokens)).logits.numpy()
    for h in handles:
        h.remove()
    return logits, routes


# ---------------------------------------------------------------- numpy float64 reference --

def rope_params(cfg):
    """(rope dict, inv_freq float64, cos/sin amplitude, softmax scale) following DEEPSEEK.md."""
    rp = cfg.get("rope_parameters") or {**cfg.get("rope_scaling", {}), "rope_theta": cfg["rope_theta"]}
    base, d = float(rp["rope_theta"]), cfg["qk_rope_head_dim"]
    freq = base ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    scale = (cfg["qk_nope_head_dim"] + d) ** -0.5
    kind = rp.get("type", rp.get("rope_type", "default"))
    if kind == "default":
        return freq, 1.0, scale
    assert kind == "yarn"
    f, L0 = rp["factor"], rp["original_max_position_embeddings"]
    ms = lambda m: 1.0 if f <= 1 else 0.1 * m * math.log(f) + 1.0
    corr = lambda r: d * math.log(L0 / (2 * math.pi * r)) / (2 * math.log(base))
    low, high = max(math.floor(corr(rp["beta_fast"])), 0), min(math.ceil(corr(rp["beta_slow"])), d - 1)
    ramp = np.clip((np.arange(d // 2) - low) / max(high - low, 1e-3), 0, 1)
    inv = freq * (1 - ramp) + freq / f * ramp
    return inv, ms(rp["mscale"]) / ms(rp["mscale_all_dim"]), scale * ms(rp["mscale_all_dim"]) ** 2


def rms(x, w, eps):
    return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps) * w


def rope(x, pos, inv, amp):
    """Interleaved pairs (x0, x1), (x2, x3) ... rotated by pos * inv_freq (DeepSeek's complex form)."""
    ang = pos[:, None] * inv[None]  # (L, d/2)
    c, s = np.cos(ang) * amp, np.sin(ang) * amp
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = x0 * c - x1 * s, x0 * s + x1 * c
    return out


def select(cfg, b, log_margin):
    """Group-limited top-k on the selection scores b (T, E): sorted ids (T, k) and the smallest gap
    between a kept and a dropped group / expert (in log space for softmax scores, where float
    error is uniform)."""
    E, G, kg, k = cfg["n_routed_experts"], cfg["n_group"], cfg["topk_group"], cfg["num_experts_per_tok"]
    space = np.log if log_margin else (lambda v: v)
    grouped = b.reshape(-1, G, E // G)
    if cfg["topk_method"] == "noaux_tc":
        gs = np.sort(grouped, -1)[..., -2:].sum(-1)
    else:
        assert cfg["topk_method"] == "group_limited_greedy"
        gs = grouped.max(-1)
    gsort = np.sort(space(gs), -1)
    margin = (gsort[:, G - kg] - gsort[:, G - kg - 1]).min()
    mask = np.zeros_like(gs, bool)
    np.put_along_axis(mask, np.argsort(-gs, -1)[:, :kg], True, -1)
    masked = np.where(np.repeat(mask, E // G, -1), b, -np.inf)
    msort = np.sort(np.where(masked > -np.inf, space(b), -np.inf), -1)
    margin = min(margin, (msort[:, E - k] - msort[:, E - k - 1]).min())
    return np.sort(np.argsort(-masked, -1)[:, :k], -1), margin


def route(cfg, x, w, bias):
    """DEEPSEEK.md router on (T, H) float64: sorted expert ids (T, k), their weights, the smallest
    margin, and how many tokens would pick other experts without the group limit / the bias."""
    k = cfg["num_experts_per_tok"]
    logits = x @ w.T
    if cfg["scoring_func"] == "sigmoid":
        s = 1 / (1 + np.exp(-logits))
    else:
        s = np.exp(logits - logits.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
    b = s + bias if bias is not None else s
    idx, margin = select(cfg, b, cfg["scoring_func"] == "softmax")
    differ = lambda other: int((other != idx).any(-1).sum())
    sens = {"no_group_limit": differ(np.sort(np.argsort(-b, -1)[:, :k], -1))}
    if bias is not None:
        sens["no_bias"] = differ(select(cfg, s, False)[0])
    wts = np.take_along_axis(s, idx, -1)
    if cfg["norm_topk_prob"]:
        wts = wts / wts.sum(-1, keepdims=True)
    return idx, wts * cfg["routed_scaling_factor"], margin, sens


def np_forward(cfg, W, tokens):
    W = {k: v.astype(np.float64) for k, v in W.items()}
    B, L = tokens.shape
    nh, dn, dr, dv = (cfg[k] for k in ("num_attention_heads", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"))
    r, eps = cfg["kv_lora_rank"], cfg["rms_norm_eps"]
    inv, amp, scale = rope_params(cfg)
    pos = np.arange(L, dtype=np.float64)
    causal = np.triu(np.full((L, L), -np.inf), 1)
    mlp = lambda h, p: (lambda g: g / (1 + np.exp(-g)))(h @ W[p + "gate_proj.weight"].T) * \
        (h @ W[p + "up_proj.weight"].T) @ W[p + "down_proj.weight"].T
    x = W["model.embed_tokens.weight"][tokens]
    routes, margin, sensitivity = {}, np.inf, {}
    for i in range(cfg["num_hidden_layers"]):
        p, a = f"model.layers.{i}.", f"model.layers.{i}.self_attn."
        h = rms(x, W[p + "input_layernorm.weight"], eps)
        if cfg["q_lora_rank"]:
            q = rms(h @ W[a + "q_a_proj.weight"].T, W[a + "q_a_layernorm.weight"], 1e-6) @ W[a + "q_b_proj.weight"].T
        else:
            q = h @ W[a + "q_proj.weight"].T
        q = q.reshape(B, L, nh, dn + dr).transpose(0, 2, 1, 3)  # (B, nh, L, 40)
        kv = h @ W[a + "kv_a_proj_with_mqa.weight"].T
        c, k_pe = rms(kv[..., :r], W[a + "kv_a_layernorm.weight"], 1e-6), kv[..., r:]
        kvb = (c @ W[a + "kv_b_proj.weight"].T).reshape(B, L, nh, dn + dv).transpose(0, 2, 1, 3)
        q_pe, k_pe = rope(q[..., dn:], pos, inv, amp), rope(k_pe[:, None], pos, inv, amp)
        sc = (q[..., :dn] @ kvb[..., :dn].transpose(0, 1, 3, 2) + q_pe @ k_pe.transpose(0, 1, 3, 2)) * scale
        pr = np.exp(sc + causal - (sc + causal).max(-1, keepdims=True))
        pr /= pr.sum(-1, keepdims=True)
        o = (pr @ kvb[..., dn:]).transpose(0, 2, 1, 3).reshape(B, L, nh * dv)
        x = x + o @ W[a + "o_proj.weight"].T
        h = rms(x, W[p + "post_attention_layernorm.weight"], eps)
        m = p + "mlp."
        if i < cfg["first_k_dense_replace"]:
            x = x + mlp(h, m)
            continue
        t = h.reshape(B * L, -1)
        idx, wts, mg, sens = route(cfg, t, W[m + "gate.weight"], W.get(m + "gate.e_score_correction_bias"))
        routes[i], margin = (idx.reshape(B, L, -1), wts.reshape(B, L, -1)), min(margin, mg)
        for key, n in sens.items():
            sensitivity[key] = sensitivity.get(key, 0) + n
        y = mlp(t, m + "shared_experts.")
        for j in range(idx.shape[1]):
            for e in np.unique(idx[:, j]):
                sel = idx[:, j] == e
                y[sel] += wts[sel, j, None] * mlp(t[sel], f"{m}experts.{e}.")
        x = x + y.reshape(B, L, -1)
    x = rms(x, W["model.norm.weight"], eps)
    return x @ W["lm_head.weight"].T, routes, margin, sensitivity


# ---------------------------------------------------------------- main --

def make(name):
    cfg = CONFIGS[name]
    out = os.path.join(GOLDEN, name)
    rng = np.random.default_rng(SEEDS[name])
    write_checkpoint(out, cfg, random_state(cfg, rng))
    state = read_checkpoint(out)
    model = hf_model(out, cfg, state)
    main = {k: v for k, v in state.items() if shard_of(k, cfg["num_hidden_layers"]) < 2}
    for attempt in range(100):  # token draws until no routing decision is a near-tie
        tokens = rng.integers(0, cfg["vocab_size"], size=(BATCH, SEQ))
        ref, np_routes, margin, sens = np_forward(cfg, main, tokens)
        if margin > MARGIN and all(sens.values()):
            break
    else:
        raise RuntimeError(f"{name}: no token draw without near-ties that needs the group limit and bias")
    logits, routes = hf_logits_and_routes(model, cfg, tokens)
    err = np.abs(logits - ref).max() / np.abs(ref).max()
    assert err < 1e-5, (name, err)
    moe = sorted(routes)
    for i in moe:
        assert (routes[i][0].reshape(BATCH, SEQ, -1) == np_routes[i][0]).all(), (name, i)
        np.testing.assert_allclose(routes[i][1].reshape(BATCH, SEQ, -1), np_routes[i][1], rtol=1e-4, atol=1e-6)
    np.savez_compressed(
        os.path.join(out, "logits.npz"), tokens=tokens.astype(np.int32), logits=logits.astype(np.float32),
        moe_layers=np.array(moe, np.int32),
        experts=np.stack([routes[i][0].reshape(BATCH, SEQ, -1) for i in moe]).astype(np.int32),
        expert_weights=np.stack([routes[i][1].reshape(BATCH, SEQ, -1) for i in moe]).astype(np.float32))
    size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    print(f"{name}: logits {logits.shape} max|.| {np.abs(logits).max():.3f} std {logits.std():.3f}; "
          f"numpy float64 vs transformers rel err {err:.2e}; min routing margin {margin:.2e} "
          f"(draw {attempt}); token-layers routed differently by {sens}; {size / 1e6:.2f} MB")
    return cfg, main, tokens, margin


if __name__ == "__main__":
    torch.manual_seed(0)
    for n in CONFIGS:
        make(n)
