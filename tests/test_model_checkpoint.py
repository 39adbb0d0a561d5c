"""Checkpoint loading: float checkpoints quantized at load, sharded + index, per-stage reads, and
clear errors for bad input."""

import json
import os
import shutil

import mlx.core as mx
import numpy as np
import pytest

import mlx_tandem as tdm
from mlx_tandem.checkpoint import Checkpoint, load_model
from mlx_tandem.convert import convert
from mlx_tandem.safetensors_io import SafetensorsFile, save

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")
TOKENS = mx.array([[3, 1, 4, 1, 5, 9, 2, 6]])


def float_checkpoint(path, seed=0, block=None):
    """A tiny float (bf16) Llama checkpoint in the Hugging Face layout."""
    cfg = dict(model_type="llama", hidden_size=64, num_hidden_layers=3, intermediate_size=96,
               num_attention_heads=4, num_key_value_heads=2, vocab_size=40, rms_norm_eps=1e-5,
               tie_word_embeddings=False, torch_dtype="bfloat16")
    rng = np.random.default_rng(seed)
    w = lambda *s: mx.array(rng.standard_normal(s).astype(np.float32) * 0.2).astype(mx.bfloat16)
    t = {"model.embed_tokens.weight": w(40, 64), "model.norm.weight": w(64), "lm_head.weight": w(40, 64)}
    for i in range(3):
        p = f"model.layers.{i}."
        t |= {p + "input_layernorm.weight": w(64), p + "post_attention_layernorm.weight": w(64),
              p + "self_attn.q_proj.weight": w(64, 64), p + "self_attn.k_proj.weight": w(32, 64),
              p + "self_attn.v_proj.weight": w(32, 64), p + "self_attn.o_proj.weight": w(64, 64),
              p + "mlp.gate_proj.weight": w(96, 64), p + "mlp.up_proj.weight": w(96, 64),
              p + "mlp.down_proj.weight": w(64, 96)}
    os.makedirs(path, exist_ok=True)
    save(os.path.join(path, "model.safetensors"), t)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f)
    return t


def test_float_checkpoint_is_quantized_at_load_like_convert(tmp_path):
    t = float_checkpoint(tmp_path / "f")
    model, _ = load_model(str(tmp_path / "f"), dtype="float32")
    codes, scales = tdm.quantize_fp8(t["model.layers.1.mlp.down_proj.weight"], block_size=(128, 128))
    layer = model.layers[1].mlp.down_proj
    assert layer.weight.dtype == mx.uint8 and np.array_equal(np.array(layer.weight), np.array(codes))
    assert np.array_equal(np.array(layer.weight_scale_inv), np.array(scales))
    convert(str(tmp_path / "f"), str(tmp_path / "q"), progress=False)
    fp8, _ = load_model(str(tmp_path / "q"), dtype="float32")
    assert np.array_equal(np.array(model(TOKENS)), np.array(fp8(TOKENS)))


def test_convert_writes_deepseek_v3_format(tmp_path):
    float_checkpoint(tmp_path / "f")
    convert(str(tmp_path / "f"), str(tmp_path / "q"), block_size=(32, 64), progress=False)
    f = SafetensorsFile(str(tmp_path / "q" / "model.safetensors"))
    w = f.tensors["model.layers.0.mlp.down_proj.weight"]
    s = f.tensors["model.layers.0.mlp.down_proj.weight_scale_inv"]
    assert (w["dtype"], w["shape"], s["dtype"], s["shape"]) == ("F8_E4M3", (64, 96), "F32", (2, 2))
    assert f.tensors["model.norm.weight"]["dtype"] == "BF16"
    assert f.tensors["lm_head.weight"]["dtype"] == "F8_E4M3"
    q = json.load(open(tmp_path / "q" / "config.json"))["quantization_config"]
    assert q == {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [32, 64]}
    with pytest.raises(ValueError, match="already an FP8 checkpoint"):
        convert(str(tmp_path / "q"), str(tmp_path / "q2"), progress=False)
    with pytest.raises(ValueError, match="already holds a checkpoint"):
        convert(str(tmp_path / "f"), str(tmp_path / "q"), progress=False)


def test_sharded_checkpoint_and_stage_reads_only_its_files(tmp_path):
    float_checkpoint(tmp_path / "f")
    convert(str(tmp_path / "f"), str(tmp_path / "s"), shard_bytes=8000, progress=False)
    index = json.load(open(tmp_path / "s" / "model.safetensors.index.json"))["weight_map"]
    assert len(set(index.values())) > 5
    convert(str(tmp_path / "f"), str(tmp_path / "one"), progress=False)
    whole, _ = load_model(str(tmp_path / "one"), dtype="float32")
    sharded, _ = load_model(str(tmp_path / "s"), dtype="float32")
    assert np.array_equal(np.array(whole(TOKENS)), np.array(sharded(TOKENS)))
    # delete every shard that holds only layer-2 tensors: the first stage still loads
    by_file = {}
    for name, fname in index.items():
        by_file.setdefault(fname, set()).add(name.startswith("model.layers.2."))
    gone = [f for f, kinds in by_file.items() if kinds == {True}]
    assert gone
    for f in gone:
        os.remove(tmp_path / "s" / f)
    stage, _ = load_model(str(tmp_path / "s"), layer_range=(0, 2), dtype="float32")
    assert len(stage.layers) == 2
    with pytest.raises(FileNotFoundError, match="missing file"):
        load_model(str(tmp_path / "s"), dtype="float32")


def corrupt(tmp_path, how):
    d = tmp_path / "c"
    shutil.copytree(os.path.join(GOLDEN, "llama3"), d)
    st = d / "model.safetensors"
    cfg = json.load(open(d / "config.json"))
    if how == "no_config":
        os.remove(d / "config.json")
    elif how == "no_weights":
        os.remove(st)
    elif how == "truncated":
        os.truncate(st, os.path.getsize(st) - 100)
    elif how == "garbage":
        st.write_bytes(b"\xff" * 64)
    elif how == "bad_json":
        (d / "config.json").write_text("{not json")
    elif how == "arch":
        json.dump({**cfg, "model_type": "gpt_neox"}, open(d / "config.json", "w"))
    elif how in ("shape", "dtype", "scale_shape", "missing_tensor"):
        f = SafetensorsFile(str(st))
        t = {n: (f.tensors[n]["dtype"], np.array(f.numpy(n))) for n in f.keys()}
        name = "model.layers.1.self_attn.k_proj.weight"
        if how == "shape":
            t[name] = ("F8_E4M3", t[name][1][:-1])
        elif how == "dtype":
            t["model.norm.weight"] = ("I32", np.zeros(128, np.int32))
        elif how == "scale_shape":
            t[name + "_scale_inv"] = ("F32", np.ones((2, 2), np.float32))
        else:
            del t["model.layers.1.mlp.up_proj.weight"]
        os.remove(st)
        save(str(st), t)
    return str(d)


@pytest.mark.parametrize("how, exc, match", [
    ("no_config", FileNotFoundError, "no config.json"),
    ("no_weights", FileNotFoundError, "no \\*.safetensors"),
    ("truncated", ValueError, "truncated"),
    ("garbage", ValueError, "not a valid safetensors"),
    ("bad_json", ValueError, "not valid JSON"),
    ("arch", ValueError, "unknown architecture model_type='gpt_neox'"),
    ("shape", ValueError, "k_proj.weight' has shape \\(63, 128\\), expected \\(64, 128\\)"),
    ("dtype", ValueError, "model.norm.weight' has dtype I32"),
    ("scale_shape", ValueError, "weight_scale_inv' is F32 \\(2, 2\\), expected F32 \\(1, 1\\)"),
    ("missing_tensor", ValueError, "lacks tensor 'model.layers.1.mlp.up_proj.weight'"),
])
def test_bad_checkpoints_raise_clear_errors(tmp_path, how, exc, match):
    path = corrupt(tmp_path, how)
    with pytest.raises(exc, match=match):
        load_model(path)


def test_missing_directory_and_index_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        Checkpoint(str(tmp_path / "nope"))
    d = corrupt(tmp_path, "none")
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"weight_map": {"model.norm.weight": "../elsewhere.safetensors"}}, f)
    with pytest.raises(ValueError, match="outside the directory"):
        Checkpoint(d).get("model.norm.weight")
    with pytest.raises(KeyError, match="not found"):
        Checkpoint(d).get("model.embed_tokens.weight")


def test_head_kept_in_bf16_or_fp8(tmp_path):
    t = float_checkpoint(tmp_path / "f")
    convert(str(tmp_path / "f"), str(tmp_path / "q"), quantize_head=False, progress=False)
    kept, _ = load_model(str(tmp_path / "q"))  # as the checkpoint has it: float
    assert type(kept.lm_head).__name__ == "Linear" and kept.lm_head.weight.dtype == mx.bfloat16
    assert np.array_equal(np.array(kept.lm_head.weight.astype(mx.float32)),
                          np.array(t["lm_head.weight"].astype(mx.float32)))
    forced, _ = load_model(str(tmp_path / "q"), head_bf16=False)
    codes, _ = tdm.quantize_fp8(t["lm_head.weight"], block_size=(128, 128))
    assert np.array_equal(np.array(forced.lm_head.weight), np.array(codes))
    tied, _ = load_model(os.path.join(GOLDEN, "qwen2"), dtype="float32", head_bf16=True)
    assert "lm_head" not in tied  # the float embedding is the head
    fp8, _ = load_model(os.path.join(GOLDEN, "qwen2"), dtype="float32")
    a, b = np.array(tied(TOKENS)), np.array(fp8(TOKENS))
    assert 0 < np.abs(a - b).max() < 0.1 * np.abs(b).max()
