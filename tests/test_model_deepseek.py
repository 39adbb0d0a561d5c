"""Tiny random DeepSeek-V3 / V2 checkpoints in DeepSeek's own on-disk FP8 layout (per-expert tensors,
weight_scale_inv with partial blocks, sharded with an index, an MTP layer) against Hugging Face
transformers' logits on the same dequantized weights; goldens from scripts/make_goldens_deepseek.py."""

import json
import os
import shutil

import mlx.core as mx
import numpy as np
import pytest

from mlx_tandem import safetensors_io
from mlx_tandem.checkpoint import Checkpoint, load_model
from mlx_tandem.convert import convert

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")
MODELS = ["deepseek_v3", "deepseek_v3_noyarn", "deepseek_v2"]
TOL = dict(atol=1e-4, rtol=1e-4)


def golden(name):
    return dict(np.load(os.path.join(GOLDEN, name, "logits.npz")))


@pytest.fixture(scope="module", params=MODELS)
def case(request):
    model, _ = load_model(os.path.join(GOLDEN, request.param), dtype="float32")
    return request.param, model, golden(request.param)


def test_full_forward_matches_transformers(case):
    name, model, g = case
    out = np.array(model(mx.array(g["tokens"])))
    np.testing.assert_allclose(out, g["logits"], **TOL, err_msg=name)


def test_routing_matches_transformers(case):
    """The experts each MoE layer picks for each token, fed transformers' own layer inputs would be
    the cleanest; here the whole forward runs ours, so equal picks also show no near-tie flipped."""
    name, model, g = case
    if "experts" not in g:
        pytest.skip("golden without routes")
    h = model.model.embed_tokens(mx.array(g["tokens"]))
    picks = {}
    from mlx_tandem import fused

    for i, layer in enumerate(model.layers):
        n = fused.rms_norm(h, layer.input_layernorm)
        h2, n2 = fused.add_rms_norm(h, layer.self_attn(n), layer.post_attention_layernorm)
        if "gate" in layer.mlp:
            idx, w = layer.mlp.gate(n2.reshape(-1, n2.shape[-1]))
            order = np.argsort(np.array(idx), -1)
            picks[i] = (np.take_along_axis(np.array(idx), order, -1), np.take_along_axis(np.array(w), order, -1))
        h = h2 + layer.mlp(n2)
    for j, i in enumerate(g["moe_layers"]):
        idx, w = picks[int(i)]
        np.testing.assert_array_equal(idx, g["experts"][j].reshape(idx.shape), err_msg=f"{name} layer {i}")
        np.testing.assert_allclose(w, g["expert_weights"][j].reshape(w.shape), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("prefill", [1, 5])
def test_absorbed_decode_matches_transformers(case, prefill):
    name, model, g = case
    tokens = g["tokens"]
    cache = model.make_cache()
    for c in cache:
        c.step = 4  # several regrowths of the latent buffer
    outs = [model(mx.array(tokens[:, :prefill]), cache=cache)]
    outs += [model(mx.array(tokens[:, i:i + 1]), cache=cache) for i in range(prefill, tokens.shape[1])]
    assert cache[0].offset == tokens.shape[1]
    np.testing.assert_allclose(np.array(mx.concatenate(outs, axis=1)), g["logits"], **TOL, err_msg=name)


@pytest.mark.parametrize("name", MODELS)
def test_two_stages_chain_to_the_full_model(name):
    path = os.path.join(GOLDEN, name)
    n = json.load(open(os.path.join(path, "config.json")))["num_hidden_layers"]
    first, _ = load_model(path, layer_range=(0, 1), dtype="float32")
    last, _ = load_model(path, layer_range=(1, n), dtype="float32")
    assert "lm_head" not in first and "embed_tokens" not in last.model
    g = golden(name)
    c0, c1 = first.make_cache(), last.make_cache()
    outs = [last(first(mx.array(g["tokens"][:, :7]), cache=c0), cache=c1)]
    for i in range(7, g["tokens"].shape[1]):
        outs.append(last(first(mx.array(g["tokens"][:, i:i + 1]), cache=c0), cache=c1))
    np.testing.assert_allclose(np.array(mx.concatenate(outs, axis=1)), g["logits"], **TOL)


def _reads(monkeypatch):
    seen = []
    orig = safetensors_io.SafetensorsFile.read_into

    def spy(self, name, out):
        seen.append(name)
        return orig(self, name, out)

    monkeypatch.setattr(safetensors_io.SafetensorsFile, "read_into", spy)
    return seen


def test_a_layer_range_reads_only_its_tensors_and_never_mtp(monkeypatch):
    path = os.path.join(GOLDEN, "deepseek_v3")
    n = json.load(open(os.path.join(path, "config.json")))["num_hidden_layers"]
    assert any(k.startswith(f"model.layers.{n}.") for k in Checkpoint(path).where), "golden lacks its MTP layer"
    seen = _reads(monkeypatch)
    load_model(path, layer_range=(1, 2), dtype="float32")
    layers = {int(s.split(".")[2]) for s in seen if s.startswith("model.layers.")}
    assert layers == {1}, layers
    assert not any(s.startswith(("model.embed_tokens", "lm_head", "model.norm")) for s in seen)
    seen.clear()
    load_model(path, dtype="float32")
    assert not any(s.startswith(f"model.layers.{n}.") for s in seen)
    assert any(".mlp.experts.15.down_proj.weight_scale_inv" in s for s in seen)


def test_mtp_shard_is_never_opened(tmp_path):
    """The MTP layer's tensors moved to a shard of their own, which is then truncated: the model
    still loads and matches, so not even its header was read."""
    src = os.path.join(GOLDEN, "deepseek_v3")
    dst = tmp_path / "ckpt"
    shutil.copytree(src, dst)
    index = json.load(open(dst / "model.safetensors.index.json"))
    n = json.load(open(dst / "config.json"))["num_hidden_layers"]
    ckpt = Checkpoint(str(dst))
    mtp = [k for k in index["weight_map"] if k.startswith(f"model.layers.{n}.")]
    for k in mtp:
        index["weight_map"][k] = "mtp.safetensors"
    (dst / "mtp.safetensors").write_bytes(b"\0" * 3)  # not even a valid header
    with open(dst / "model.safetensors.index.json", "w") as f:
        json.dump(index, f)
    assert mtp and ckpt.where  # (the original shards still hold them too; the index decides)
    model, _ = load_model(str(dst), dtype="float32")
    g = golden("deepseek_v3")
    np.testing.assert_allclose(np.array(model(mx.array(g["tokens"]))), g["logits"], **TOL)


def test_convert_a_bf16_deepseek_directory(tmp_path):
    """A bf16 DeepSeek-architecture directory (the golden's weights dequantized) converts into
    DeepSeek's FP8 layout, which gives exactly the logits of the bf16 directory quantized at load
    (the same quantizer), and the golden's up to the bf16 rounding of the weights."""
    src = os.path.join(GOLDEN, "deepseek_v3")
    ckpt = Checkpoint(src)
    floats = {}
    for name in ckpt.where:
        if name.endswith("_scale_inv"):
            continue
        a = ckpt.get(name)
        if name + "_scale_inv" in ckpt:
            from mlx_tandem import _ext
            a = _ext.dequantize_fp8(a, ckpt.get(name + "_scale_inv"), block_size=(128, 128), dtype=mx.bfloat16)
        floats[name] = a if a.dtype == mx.float32 else a.astype(mx.bfloat16)
    bf16 = tmp_path / "bf16"
    bf16.mkdir()
    safetensors_io.save(str(bf16 / "model.safetensors"), floats)
    cfg = dict(ckpt.config)
    cfg.pop("quantization_config")
    json.dump(cfg, open(bf16 / "config.json", "w"))
    out = convert(str(bf16), str(tmp_path / "fp8"), progress=False)
    conv = Checkpoint(out)
    assert conv.info("model.layers.1.mlp.experts.3.up_proj.weight")["dtype"] == "F8_E4M3"
    assert conv.info("model.layers.1.self_attn.kv_a_proj_with_mqa.weight_scale_inv")["dtype"] == "F32"
    assert conv.info("model.layers.1.mlp.gate.weight")["dtype"] == "BF16"
    assert conv.info("model.layers.1.mlp.gate.e_score_correction_bias")["dtype"] == "F32"
    g = golden("deepseek_v3")
    got = np.array(load_model(out, dtype="float32")[0](mx.array(g["tokens"])))
    direct = np.array(load_model(str(bf16), dtype="float32")[0](mx.array(g["tokens"])))
    np.testing.assert_array_equal(got, direct)
    np.testing.assert_allclose(got, g["logits"], atol=0.2)
