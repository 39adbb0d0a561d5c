"""Rope frequencies against transformers (goldens), rope application against numpy, and config
parsing of both the old (rope_theta/rope_scaling) and new (rope_parameters) keys."""

import json
import os

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, strategies as st

from mlx_tandem.models import ModelArgs, model_class
from mlx_tandem.rotary import RoPE, inv_freq

import reference as ref

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")


@pytest.mark.parametrize("name", ["default", "linear", "dynamic_short", "dynamic_long", "llama3"])
def test_inv_freq_matches_transformers(name):
    g = np.load(os.path.join(GOLDEN, "rope_inv_freq.npz"))
    params = json.loads(str(g[name + "_params"]))
    seq_len = params.pop("seq_len")
    got = inv_freq(64, 10000.0, params or None, seq_len=seq_len, max_position_embeddings=512)
    np.testing.assert_allclose(got, g[name], rtol=1e-6)


@given(L=st.sampled_from([1, 3, 17]), offset=st.sampled_from([0, 5, 700]),
       kind=st.sampled_from(["default", "linear", "dynamic", "llama3"]))
def test_rope_matches_rotate_half_reference(L, offset, kind):
    scaling = {"default": None, "linear": {"rope_type": "linear", "factor": 2.0},
               "dynamic": {"rope_type": "dynamic", "factor": 2.0},
               "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                          "high_freq_factor": 4.0, "original_max_position_embeddings": 64}}[kind]
    x = np.random.default_rng(L + offset).standard_normal((1, 2, L, 32)).astype(np.float32)
    # RoPE takes the projections' (B, L, H, D) layout
    got = np.array(RoPE(32, 10000.0, scaling, 512)(mx.array(x.transpose(0, 2, 1, 3)), offset)).transpose(0, 2, 1, 3)
    # dynamic NTK grows the base with the longest position of this call
    freqs = inv_freq(32, 10000.0, scaling, seq_len=offset + L, max_position_embeddings=512)
    np.testing.assert_allclose(got, ref.rope(x.astype(np.float64), freqs, offset),
                               atol=2e-4, rtol=1e-4)


BASE = dict(model_type="llama", hidden_size=64, num_hidden_layers=2, intermediate_size=96,
            num_attention_heads=4, num_key_value_heads=2, vocab_size=50)


def test_old_and_new_rope_keys_parse_the_same():
    scaling = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}
    old = ModelArgs.from_config({**BASE, "rope_theta": 5e5, "rope_scaling": {"rope_type": "llama3", **scaling}})
    older = ModelArgs.from_config({**BASE, "rope_theta": 5e5, "rope_scaling": {"type": "llama3", **scaling}})
    new = ModelArgs.from_config({**BASE, "rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5, **scaling}})
    assert old.rope_theta == older.rope_theta == new.rope_theta == 5e5
    assert old.rope_scaling == older.rope_scaling == new.rope_scaling == {"rope_type": "llama3", **scaling}
    assert new.head_dim == 16 and new.num_key_value_heads == 2
    plain = ModelArgs.from_config({**BASE, "rope_parameters": {"rope_type": "default", "rope_theta": 1e4}})
    assert plain.rope_scaling is None and plain.rope_theta == 1e4


@pytest.mark.parametrize("patch, match", [
    ({"model_type": "gpt2"}, "unknown architecture"),
    ({"num_key_value_heads": 3}, "multiple of num_key_value_heads"),
    ({"hidden_size": None}, "missing required"),
    ({"rope_scaling": {"rope_type": "longrope", "factor": 2.0}}, "unsupported rope_type"),
])
def test_bad_configs_raise(patch, match):
    with pytest.raises(ValueError, match=match):
        args = ModelArgs.from_config({**BASE, **patch})
        model_class(args.model_type)(args)
