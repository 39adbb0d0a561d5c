"""Random FP8 checkpoints whose dims split over 2 ranks in whole 128-blocks (Llama here; DeepSeek
through tests/deepseek_ckpt.py with dims chosen by `deepseek_config`)."""

import json
import os

import numpy as np

import deepseek_ckpt
from deepseek_ckpt import _bf16, _fp8
from mlx_tandem import safetensors_io
from pipeline_helpers.tiny_llama import word_tokenizer


def llama_config(**kw):
    cfg = dict(model_type="llama", hidden_size=256, num_hidden_layers=2, intermediate_size=512,
               num_attention_heads=4, num_key_value_heads=2, head_dim=128, vocab_size=512, rms_norm_eps=1e-5,
               tie_word_embeddings=False, rope_theta=10000.0, torch_dtype="bfloat16",
               quantization_config={"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [128, 128]})
    cfg.update(kw)
    return cfg


def write_llama(path, cfg, seed=0):
    rng = np.random.default_rng(seed)
    H, V, I = cfg["hidden_size"], cfg["vocab_size"], cfg["intermediate_size"]
    D = cfg["head_dim"]
    q, kv = cfg["num_attention_heads"] * D, cfg["num_key_value_heads"] * D
    t = {"model.embed_tokens.weight": ("BF16", _bf16(rng.standard_normal((V, H)) * 0.5)),
         "model.norm.weight": ("BF16", _bf16(np.ones(H)))}
    if not cfg["tie_word_embeddings"]:
        t["lm_head.weight"] = ("BF16", _bf16(rng.standard_normal((V, H)) * 0.05))
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        for name, (n, k) in {"self_attn.q_proj": (q, H), "self_attn.k_proj": (kv, H), "self_attn.v_proj": (kv, H),
                             "self_attn.o_proj": (H, q), "mlp.gate_proj": (I, H), "mlp.up_proj": (I, H),
                             "mlp.down_proj": (H, I)}.items():
            codes, scales = _fp8(rng, n, k)
            t[p + name + ".weight"] = ("F8_E4M3", codes)
            t[p + name + ".weight_scale_inv"] = scales
        for name in ("input_layernorm", "post_attention_layernorm"):
            t[p + name + ".weight"] = ("BF16", _bf16(1 + 0.1 * rng.standard_normal(H)))
    os.makedirs(path, exist_ok=True)
    safetensors_io.save(os.path.join(path, "model.safetensors"), t)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f)
    word_tokenizer(V).save(os.path.join(path, "tokenizer.json"))
    return str(path)


def deepseek_config(**kw):
    """tests/deepseek_ckpt.py's tiny model with per-rank parts of whole blocks on 2 ranks."""
    base = dict(num_attention_heads=4, qk_nope_head_dim=64, qk_rope_head_dim=64, v_head_dim=64,
                intermediate_size=512, moe_intermediate_size=256, n_routed_experts=8, num_experts_per_tok=2,
                n_group=2, topk_group=1)
    base.update(kw)
    return deepseek_ckpt.config(**base)


def write_deepseek(path, cfg, seed=0):
    deepseek_ckpt.write(path, cfg, seed)
    word_tokenizer(cfg["vocab_size"]).save(os.path.join(path, "tokenizer.json"))
    return str(path)
