"""A small fake DeepSeek-V3 checkpoint in the Hugging Face layout, for the partition (headers only:
the values are zeros and no model is built from it). FP8 matrices are F8_E4M3 codes plus F32
weight_scale_inv on the 128 x 128 ceil grid; routed experts are stored one tensor set per expert; the
MTP layer (index num_hidden_layers) lives in a shard of its own that is listed in the index but not
written, so anything that opens it fails."""

import json
import os

import numpy as np

from mlx_tandem.safetensors_io import save

H, V = 256, 64  # hidden, vocab
DENSE_I, EXPERT_I = 1024, 128
BLOCK = 128
MTP_SHARD = "model-mtp.safetensors"


def _fp8(n, k):
    return {"weight": ("F8_E4M3", np.zeros((n, k), np.uint8)),
            "weight_scale_inv": np.ones((-(-n // BLOCK), -(-k // BLOCK)), np.float32)}


def _bf16(*shape):
    return ("BF16", np.zeros(shape, np.uint16))


def _mlp(prefix, width):
    out = {}
    for proj, (n, k) in {"gate_proj": (width, H), "up_proj": (width, H), "down_proj": (H, width)}.items():
        out |= {f"{prefix}.{proj}.{leaf}": a for leaf, a in _fp8(n, k).items()}
    return out


def _layer(i, experts, first_dense):
    p = f"model.layers.{i}."
    t = {p + "input_layernorm.weight": _bf16(H), p + "post_attention_layernorm.weight": _bf16(H)}
    for proj, (n, k) in {"q_proj": (H, H), "kv_a_proj_with_mqa": (H // 2 + 64, H), "o_proj": (H, H)}.items():
        t |= {f"{p}self_attn.{proj}.{leaf}": a for leaf, a in _fp8(n, k).items()}
    if i < first_dense:
        return t | _mlp(p + "mlp", DENSE_I)
    t |= {p + "mlp.gate.weight": _bf16(experts, H), p + "mlp.gate.e_score_correction_bias": np.zeros(experts, np.float32)}
    t |= _mlp(p + "mlp.shared_experts", EXPERT_I)
    for e in range(experts):
        t |= _mlp(f"{p}mlp.experts.{e}", EXPERT_I)
    return t


def nbytes(a) -> int:
    return (a[1] if isinstance(a, tuple) else a).nbytes


def tiny_deepseek(path, layers=6, experts=8, per_token=2, first_dense=2, mtp=True):
    """Writes the checkpoint; returns (path, tensors) with tensors {name: array or (dtype, array)} of
    the model proper (the MTP layer excluded)."""
    cfg = dict(model_type="deepseek_v3", hidden_size=H, num_hidden_layers=layers, vocab_size=V,
               n_routed_experts=experts, num_experts_per_tok=per_token, first_k_dense_replace=first_dense,
               moe_intermediate_size=EXPERT_I, intermediate_size=DENSE_I, n_shared_experts=1,
               num_nextn_predict_layers=int(mtp), tie_word_embeddings=False,
               quantization_config=dict(quant_method="fp8", fmt="e4m3", weight_block_size=[BLOCK, BLOCK]))
    t = {"model.embed_tokens.weight": _bf16(V, H), "model.norm.weight": _bf16(H), "lm_head.weight": _bf16(V, H)}
    for i in range(layers):
        t |= _layer(i, experts, first_dense)
    os.makedirs(path, exist_ok=True)
    save(os.path.join(path, "model.safetensors"), t)
    weight_map = {name: "model.safetensors" for name in t}
    if mtp:
        extra = _layer(layers, experts, first_dense) | {f"model.layers.{layers}.eh_proj.weight": _bf16(H, 2 * H)}
        weight_map |= {name: MTP_SHARD for name in extra}
    with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f)
    return str(path), t
