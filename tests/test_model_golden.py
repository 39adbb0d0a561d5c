"""Tiny random Llama-3 / Qwen2 / Mistral against Hugging Face transformers' logits on the same
(FP8-dequantized) weights; goldens from scripts/make_goldens.py."""

import os

import mlx.core as mx
import numpy as np
import pytest

from mlx_tandem.checkpoint import load_model

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")
MODELS = ["llama3", "qwen2", "mistral"]


def golden(name):
    d = np.load(os.path.join(GOLDEN, name, "logits.npz"))
    return d["tokens"], d["logits"]


@pytest.fixture(scope="module", params=MODELS)
def case(request):
    model, _ = load_model(os.path.join(GOLDEN, request.param), dtype="float32")
    return (request.param, model, *golden(request.param))


def test_full_forward_matches_transformers(case):
    name, model, tokens, ref = case
    out = np.array(model(mx.array(tokens)))
    np.testing.assert_allclose(out, ref, atol=5e-5, rtol=1e-4, err_msg=name)


@pytest.mark.parametrize("prefill", [1, 5])
def test_decode_with_cache_matches_full_forward(case, prefill):
    name, model, tokens, ref = case
    cache = model.make_cache()
    for c in cache:
        c.step = 4  # force several reallocations of the cache buffer
    outs = [model(mx.array(tokens[:, :prefill]), cache=cache)]
    for i in range(prefill, tokens.shape[1]):
        outs.append(model(mx.array(tokens[:, i:i + 1]), cache=cache))
    out = np.array(mx.concatenate(outs, axis=1))
    assert cache[0].offset == tokens.shape[1]
    np.testing.assert_allclose(out, ref, atol=5e-5, rtol=1e-4, err_msg=name)


@pytest.mark.parametrize("name", MODELS)
def test_two_stages_chain_to_the_full_model(name):
    """Stage (0, 1) then (1, 2): hidden states cross, each stage with its own caches."""
    path = os.path.join(GOLDEN, name)
    first, _ = load_model(path, layer_range=(0, 1), dtype="float32")
    last, _ = load_model(path, layer_range=(1, 2), dtype="float32")
    tokens, ref = golden(name)
    assert "lm_head" not in first and len(first.layers) == 1 and len(last.layers) == 1
    assert "embed_tokens" not in last.model  # a tied head is FP8 on the last stage; no float copy kept
    c0, c1 = first.make_cache(), last.make_cache()
    h = first(mx.array(tokens[:, :7]), cache=c0)
    assert h.shape == (2, 7, first.args.hidden_size)
    outs = [last(h, cache=c1)]
    for i in range(7, tokens.shape[1]):
        outs.append(last(first(mx.array(tokens[:, i:i + 1]), cache=c0), cache=c1))
    np.testing.assert_allclose(np.array(mx.concatenate(outs, axis=1)), ref, atol=5e-5, rtol=1e-4)


@pytest.mark.parametrize("name", MODELS)
def test_bfloat16_activations_stay_close(name):
    model, _ = load_model(os.path.join(GOLDEN, name))  # the checkpoint's dtype: bfloat16
    tokens, ref = golden(name)
    out = model(mx.array(tokens))
    assert out.dtype == mx.bfloat16
    # bfloat16 keeps 8 bits of mantissa: expect errors of a few percent of the logits' spread
    rel = np.sqrt(np.mean((np.array(out.astype(mx.float32)) - ref) ** 2)) / np.std(ref)
    assert rel < 0.05, rel


def test_model_builds_from_a_config_dict():
    import json
    from mlx_tandem.models import model_class
    for name in MODELS:
        config = json.load(open(os.path.join(GOLDEN, name, "config.json")))
        model = model_class(config["model_type"])(config, layer_range=(1, 2))
        assert len(model.make_cache()) == 1 and model.layer_range == (1, 2)


def test_stage_inputs_are_checked():
    path = os.path.join(GOLDEN, "llama3")
    first, _ = load_model(path, layer_range=(0, 1), dtype="float32")
    last, _ = load_model(path, layer_range=(1, 2), dtype="float32")
    with pytest.raises(ValueError, match="token ids"):
        first(mx.zeros((1, 3, 128)))
    with pytest.raises(ValueError, match="hidden states"):
        last(mx.array([[1, 2, 3]]))
    with pytest.raises(ValueError, match="caches"):
        first(mx.array([[1, 2]]), cache=[])
    with pytest.raises(ValueError, match="layer_range"):
        load_model(path, layer_range=(1, 1))
