"""Fusing q/k/v and gate/up into single FP8Linears changes nothing in the outputs, and is skipped
(layers kept apart) when the parts cannot share scale blocks."""

import mlx.core as mx
import numpy as np
import pytest

from mlx_tandem.models import ModelArgs, model_class
from mlx_tandem.nn import FP8Linear

CFG = dict(model_type="llama", hidden_size=256, num_hidden_layers=2, intermediate_size=384,
           num_attention_heads=4, num_key_value_heads=2, vocab_size=300, rms_norm_eps=1e-5)


def random_model(cfg, block):
    model = model_class(cfg["model_type"])(ModelArgs.from_config(cfg), block_size=block)
    from mlx.utils import tree_flatten, tree_unflatten
    rng = np.random.default_rng(0)
    ups = []
    for name, p in tree_flatten(model.parameters()):
        if p.dtype == mx.uint8:
            ups.append((name, mx.array(rng.integers(0, 0x7E, p.shape, dtype=np.uint8) | 
                                       (rng.integers(0, 2, p.shape, dtype=np.uint8) << 7))))
        elif name.endswith("scale_inv"):
            ups.append((name, mx.array(rng.uniform(1e-3, 2e-3, p.shape).astype(np.float32))))
        else:
            ups.append((name, mx.array(rng.standard_normal(p.shape).astype(np.float32) * 0.1)))
    model.update(tree_unflatten(ups))
    model.tie_head()
    return model


@pytest.mark.parametrize("model_type", ["llama", "qwen2"])
@pytest.mark.parametrize("L", [1, 5])
def test_fused_projections_give_identical_logits(model_type, L):
    cfg = dict(CFG, model_type=model_type)
    model = random_model(cfg, (64, 64))
    tokens = mx.array([[3, 1, 4, 1, 5, 9, 2][:L]])
    cache = model.make_cache()
    want = [model(tokens, cache=cache), model(mx.array([[7]]), cache=cache)]
    model.fuse_projections()
    assert all("qkv_proj" in l.self_attn and "gate_up_proj" in l.mlp for l in model.layers)
    cache = model.make_cache()
    got = [model(tokens, cache=cache), model(mx.array([[7]]), cache=cache)]
    for g, w in zip(got, want):
        np.testing.assert_array_equal(np.array(g), np.array(w))


def test_misaligned_parts_stay_separate():
    # q has 4 * 64 = 256 rows, k/v 128: with 96-row blocks q's last block would hold k rows
    model = random_model(CFG, (96, 64))
    model.fuse_projections()
    attn = model.layers[0].self_attn
    assert "qkv_proj" not in attn and isinstance(attn.q_proj, FP8Linear)
    assert FP8Linear.concat([FP8Linear(8, 128, block_size=(128, 128)), FP8Linear(16, 128)]) is None
