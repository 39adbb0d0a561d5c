"""Random checkpoints in DeepSeek-V3's on-disk layout (FP8 codes + F32 weight_scale_inv per linear,
per-expert tensors, bf16 norms/embeddings/router, an F32 correction bias, one shard per layer), for
tests that need a model of a chosen size rather than transformers goldens."""

import json
import os

import numpy as np

from mlx_tandem import safetensors_io

BLOCK = (128, 128)


def config(**kw):
    cfg = dict(model_type="deepseek_v3", architectures=["DeepseekV3ForCausalLM"], vocab_size=512,
               hidden_size=256, intermediate_size=384, moe_intermediate_size=128, num_hidden_layers=3,
               first_k_dense_replace=1, num_attention_heads=4, q_lora_rank=128, kv_lora_rank=128,
               qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32, n_routed_experts=16, n_shared_experts=1,
               num_experts_per_tok=4, n_group=4, topk_group=2, routed_scaling_factor=2.5, norm_topk_prob=True,
               topk_method="noaux_tc", scoring_func="sigmoid", rms_norm_eps=1e-6, max_position_embeddings=4096,
               tie_word_embeddings=False, rope_theta=10000.0, torch_dtype="bfloat16", num_nextn_predict_layers=0,
               quantization_config={"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                    "weight_block_size": list(BLOCK)})
    cfg.update(kw)
    return cfg


def _fp8(rng, n, k):
    codes = rng.integers(0, 0x7E, (n, k), dtype=np.uint8) | (rng.integers(0, 2, (n, k), dtype=np.uint8) << 7)
    scales = (rng.random((-(-n // BLOCK[0]), -(-k // BLOCK[1]))) * 0.02 / 448 + 1e-4).astype(np.float32)
    return codes, scales


def _bf16(a):
    return (np.asarray(a, np.float32).view(np.uint32) >> 16).astype(np.uint16)


def layer_tensors(cfg, i, rng):
    p = f"model.layers.{i}."
    H, D = cfg["hidden_size"], cfg["num_attention_heads"]
    nope, rope, v, r = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"], cfg["kv_lora_rank"]
    lin = {"self_attn.q_a_proj": (cfg["q_lora_rank"], H), "self_attn.q_b_proj": (D * (nope + rope), cfg["q_lora_rank"]),
           "self_attn.kv_a_proj_with_mqa": (r + rope, H), "self_attn.kv_b_proj": (D * (nope + v), r),
           "self_attn.o_proj": (H, D * v)}
    norms = {"input_layernorm": H, "post_attention_layernorm": H, "self_attn.q_a_layernorm": cfg["q_lora_rank"],
             "self_attn.kv_a_layernorm": r}
    out = {}
    if i >= cfg["first_k_dense_replace"]:
        E, I = cfg["n_routed_experts"], cfg["moe_intermediate_size"]
        for e in range(E):
            lin.update({f"mlp.experts.{e}.gate_proj": (I, H), f"mlp.experts.{e}.up_proj": (I, H),
                        f"mlp.experts.{e}.down_proj": (H, I)})
        S = I * cfg["n_shared_experts"]
        lin.update({"mlp.shared_experts.gate_proj": (S, H), "mlp.shared_experts.up_proj": (S, H),
                    "mlp.shared_experts.down_proj": (H, S)})
        out[p + "mlp.gate.weight"] = ("BF16", _bf16(rng.standard_normal((E, H)) * 0.05))
        out[p + "mlp.gate.e_score_correction_bias"] = rng.standard_normal(E).astype(np.float32) * 0.1
    else:
        I = cfg["intermediate_size"]
        lin.update({"mlp.gate_proj": (I, H), "mlp.up_proj": (I, H), "mlp.down_proj": (H, I)})
    for name, (n, k) in lin.items():
        codes, scales = _fp8(rng, n, k)
        out[p + name + ".weight"] = ("F8_E4M3", codes)
        out[p + name + ".weight_scale_inv"] = scales
    for name, n in norms.items():
        out[p + name + ".weight"] = ("BF16", _bf16(1 + 0.1 * rng.standard_normal(n)))
    return out


def write(path, cfg, seed=0):
    """Writes config.json, one shard per layer plus one for embeddings/head, and the index."""
    os.makedirs(path, exist_ok=True)
    rng = np.random.default_rng(seed)
    H, V = cfg["hidden_size"], cfg["vocab_size"]
    shards = [{"model.embed_tokens.weight": ("BF16", _bf16(rng.standard_normal((V, H)) * 0.5)),
               "model.norm.weight": ("BF16", _bf16(np.ones(H))),
               "lm_head.weight": ("BF16", _bf16(rng.standard_normal((V, H)) * 0.05))}]
    for i in range(cfg["num_hidden_layers"] + cfg.get("num_nextn_predict_layers", 0)):
        shards.append(layer_tensors(cfg, i, rng))
    weight_map = {}
    for j, tensors in enumerate(shards):
        fname = f"model-{j + 1:05d}-of-{len(shards):05d}.safetensors"
        safetensors_io.save(os.path.join(path, fname), tensors)
        weight_map.update({k: fname for k in tensors})
    with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f)
    return path
