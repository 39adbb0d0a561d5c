"""A tiny random bf16 Llama checkpoint in the Hugging Face layout (6 layers, so splits can vary)."""

import json
import os

import mlx.core as mx
import numpy as np
from tokenizers import Tokenizer, decoders
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit

from mlx_tandem.safetensors_io import save

LAYERS = 6


def tiny_llama(path, seed=0, tied=False):
    H, I, V = 64, 96, 50
    cfg = dict(model_type="llama", hidden_size=H, num_hidden_layers=LAYERS, intermediate_size=I,
               num_attention_heads=4, num_key_value_heads=2, vocab_size=V, rms_norm_eps=1e-5,
               tie_word_embeddings=tied, torch_dtype="bfloat16")
    rng = np.random.default_rng(seed)
    w = lambda *s: mx.array(rng.standard_normal(s).astype(np.float32) * 0.3).astype(mx.bfloat16)
    t = {"model.embed_tokens.weight": w(V, H), "model.norm.weight": w(H) + 1}
    if not tied:
        t["lm_head.weight"] = w(V, H)
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        t |= {p + "input_layernorm.weight": w(H) + 1, p + "post_attention_layernorm.weight": w(H) + 1,
              p + "self_attn.q_proj.weight": w(H, H), p + "self_attn.k_proj.weight": w(H // 2, H),
              p + "self_attn.v_proj.weight": w(H // 2, H), p + "self_attn.o_proj.weight": w(H, H),
              p + "mlp.gate_proj.weight": w(I, H), p + "mlp.up_proj.weight": w(I, H),
              p + "mlp.down_proj.weight": w(H, I)}
    os.makedirs(path, exist_ok=True)
    save(os.path.join(path, "model.safetensors"), t)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f)
    word_tokenizer(V).save(os.path.join(path, "tokenizer.json"))
    return str(path)


def word_tokenizer(vocab_size):
    """Words "w0".."wN" as token ids, enough for rank 0 to encode and decode text."""
    tok = Tokenizer(WordLevel({f"w{i}": i for i in range(vocab_size)}, unk_token="w0"))
    tok.pre_tokenizer = WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok
