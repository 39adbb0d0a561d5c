"""GGUF import: the Q/K un-permutation, a tiny llama GGUF written with the gguf package converted and
loaded back, and errors for files we cannot import."""

import json

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, strategies as st

import mlx_tandem as tdm
from mlx_tandem.checkpoint import load_model
from mlx_tandem.convert import convert
from mlx_tandem.gguf_import import unpermute_qk
from mlx_tandem.tokenizer import TokenizerWrapper


def llamacpp_permute(w, n_head):
    """llama.cpp convert_hf_to_gguf.py's LlamaModel.permute."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@given(heads=st.integers(1, 6), half=st.integers(1, 8), cols=st.integers(1, 9))
def test_unpermute_inverts_llamacpp_permute(heads, half, cols):
    w = np.random.default_rng(heads * 100 + half).standard_normal((heads * half * 2, cols))
    assert np.array_equal(unpermute_qk(llamacpp_permute(w, heads), heads), w)


def byte_tokens():
    """GPT-2's bytes_to_unicode alphabet: one token per byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def write_gguf(path, arch="llama", tokenizer_model="gpt2", seed=0):
    import gguf
    H, F, heads, kv, L = 64, 96, 4, 2, 2
    tokens = ["<|endoftext|>"] + byte_tokens() + ["Ġt", "he"]
    V = len(tokens)
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(L)
    w.add_context_length(256)
    w.add_embedding_length(H)
    w.add_feed_forward_length(F)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_tokenizer_model(tokenizer_model)
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types([3] + [1] * (V - 1))
    w.add_token_merges(["Ġ t", "h e"])
    w.add_bos_token_id(0)
    w.add_eos_token_id(0)
    w.add_chat_template("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}")
    rng = np.random.default_rng(seed)
    hf = {}

    def add(gname, hfname, shape, permute_heads=None):
        a = (rng.standard_normal(shape) * 0.3).astype(np.float32)
        hf[hfname] = a
        w.add_tensor(gname, llamacpp_permute(a, permute_heads) if permute_heads else a)

    add("token_embd.weight", "model.embed_tokens.weight", (V, H))
    add("output_norm.weight", "model.norm.weight", (H,))
    for i in range(L):
        p, q = f"blk.{i}.", f"model.layers.{i}."
        add(p + "attn_q.weight", q + "self_attn.q_proj.weight", (H, H), heads)
        add(p + "attn_k.weight", q + "self_attn.k_proj.weight", (kv * H // heads, H), kv)
        add(p + "attn_v.weight", q + "self_attn.v_proj.weight", (kv * H // heads, H))
        add(p + "attn_output.weight", q + "self_attn.o_proj.weight", (H, H))
        add(p + "ffn_gate.weight", q + "mlp.gate_proj.weight", (F, H))
        add(p + "ffn_up.weight", q + "mlp.up_proj.weight", (F, H))
        add(p + "ffn_down.weight", q + "mlp.down_proj.weight", (H, F))
        add(p + "attn_norm.weight", q + "input_layernorm.weight", (H,))
        add(p + "ffn_norm.weight", q + "post_attention_layernorm.weight", (H,))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return hf


def test_tiny_gguf_converts_to_the_hf_layout(tmp_path):
    hf = write_gguf(tmp_path / "m.gguf")
    convert(str(tmp_path / "m.gguf"), str(tmp_path / "out"), progress=False)
    cfg = json.load(open(tmp_path / "out" / "config.json"))
    assert cfg["tie_word_embeddings"] and cfg["num_key_value_heads"] == 2 and cfg["head_dim"] == 16
    model, _ = load_model(str(tmp_path / "out"), dtype="float32")
    for name in ("self_attn.q_proj", "self_attn.k_proj", "mlp.down_proj"):
        layer = model.layers[1]
        for part in name.split("."):
            layer = getattr(layer, part)
        codes, scales = tdm.quantize_fp8(mx.array(hf[f"model.layers.1.{name}.weight"]), block_size=(128, 128))
        assert np.array_equal(np.array(layer.weight), np.array(codes)), name
        assert np.array_equal(np.array(layer.weight_scale_inv), np.array(scales)), name
    emb = np.array(model.model.embed_tokens.weight)
    np.testing.assert_allclose(emb, hf["model.embed_tokens.weight"], rtol=1e-2)  # stored as bf16
    tok = TokenizerWrapper.from_dir(str(tmp_path / "out"))
    ids = tok.encode("the 42", add_special_tokens=False)
    assert tok.decode(ids) == "the 42" and tok.tokenizer.id_to_token(ids[1]) == "he"
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=False) == "<user>hi"
    assert tok.eos_token_ids == {0}


@pytest.mark.parametrize("kw, match", [({"arch": "gpt2"}, "unknown architecture 'gpt2'"),
                                        ({"tokenizer_model": "llama"}, "tokenizer model 'llama'")])
def test_unsupported_gguf_files_raise(tmp_path, kw, match):
    write_gguf(tmp_path / "m.gguf", **kw)
    with pytest.raises(ValueError, match=match):
        convert(str(tmp_path / "m.gguf"), str(tmp_path / "out"), progress=False)


def test_non_gguf_and_missing_files_raise(tmp_path):
    (tmp_path / "x.gguf").write_bytes(b"GGUF" + b"\x00" * 10)
    with pytest.raises(ValueError, match="not a readable GGUF"):
        convert(str(tmp_path / "x.gguf"), str(tmp_path / "out"), progress=False)
    with pytest.raises(FileNotFoundError):
        convert(str(tmp_path / "nope.gguf"), str(tmp_path / "out"), progress=False)
