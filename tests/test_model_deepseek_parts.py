"""DeepSeek-V3/V2 pieces on their own: YaRN frequencies and softmax scale (DEEPSEEK.md's numbers), the
router against a numpy reference, the exact per-head slices of kv_b_proj, and the absorbed decode
against the expanded form on random models (aligned and unaligned head blocks)."""

import math

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten, tree_unflatten

import mlx_tandem as tdm
import reference as ref
from mlx_tandem.models import deepseek_v3 as ds

V3_YARN = {"rope_type": "yarn", "factor": 40.0, "original_max_position_embeddings": 4096, "beta_fast": 32,
           "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0}


def tiny_config(**kw):
    cfg = dict(model_type="deepseek_v3", hidden_size=160, intermediate_size=192, moe_intermediate_size=48,
               num_hidden_layers=3, first_k_dense_replace=1, num_attention_heads=4, q_lora_rank=96,
               kv_lora_rank=80, qk_nope_head_dim=24, qk_rope_head_dim=16, v_head_dim=20, n_routed_experts=16,
               n_shared_experts=1, num_experts_per_tok=4, n_group=4, topk_group=2, routed_scaling_factor=2.5,
               vocab_size=300, rope_scaling={**V3_YARN, "factor": 4.0, "original_max_position_embeddings": 8})
    cfg.update(kw)
    return cfg


def test_yarn_matches_deepseek_md():
    args = ds.ModelArgs.from_config(tiny_config(qk_rope_head_dim=64, rope_scaling=V3_YARN))
    inv = ds.yarn_inv_freq(64, 10000.0, V3_YARN)
    freqs = 10000.0 ** (-np.arange(0, 64, 2) / 64)
    # low = floor(corr_dim(32)) = 10, high = ceil(corr_dim(1)) = 23: untouched below, / factor above
    np.testing.assert_allclose(inv[:11], freqs[:11], rtol=1e-12)
    np.testing.assert_allclose(inv[23:], freqs[23:] / 40, rtol=1e-12)
    ramp = (np.arange(32) - 10) / 13
    np.testing.assert_allclose(inv[15], freqs[15] * (1 - ramp[15]) + freqs[15] / 40 * ramp[15], rtol=1e-12)
    assert ds.softmax_scale(dataclass_with(args, qk_nope_head_dim=128)) == pytest.approx(0.1352338, rel=1e-6)
    assert ds.InterleavedRoPE(args).amplitude == 1.0


def dataclass_with(args, **kw):
    import dataclasses
    return dataclasses.replace(args, **kw)


def test_v2_mscale_amplitude_and_scale():
    s = {**V3_YARN, "mscale": 0.707, "mscale_all_dim": 0.707}
    args = ds.ModelArgs.from_config(tiny_config(model_type="deepseek_v2", rope_scaling=s, q_lora_rank=None))
    assert ds.InterleavedRoPE(args).amplitude == pytest.approx(1.0)
    m = 0.1 * 0.707 * math.log(40) + 1
    assert ds.softmax_scale(args) == pytest.approx(args.qk_head_dim ** -0.5 * m * m)
    assert (args.scoring_func, args.topk_method, args.norm_topk_prob) == ("softmax", "greedy", False)


def router_reference(x, w, bias, a):
    """float64 numpy: DEEPSEEK.md's noaux_tc / V2's greedy and group_limited_greedy."""
    logits = x.astype(np.float64) @ w.astype(np.float64).T
    if a.scoring_func == "sigmoid":
        s = 1 / (1 + np.exp(-logits))
    else:
        s = np.exp(logits - logits.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
    b = s + bias if a.topk_method == "noaux_tc" else s.copy()
    E, G = s.shape[-1], a.n_group
    if a.topk_method != "greedy":
        g = b.reshape(-1, G, E // G)
        gs = np.sort(g, -1)[..., -2:].sum(-1) if a.topk_method == "noaux_tc" else g.max(-1)
        keep = np.argsort(-gs, -1)[:, :a.topk_group]
        mask = np.full(gs.shape, -np.inf)
        np.put_along_axis(mask, keep, 0.0, -1)
        b = (g + mask[..., None]).reshape(-1, E)
    idx = np.argsort(-b, -1)[:, :a.num_experts_per_tok]
    wts = np.take_along_axis(s, idx, -1)
    if a.norm_topk_prob:
        wts = wts / wts.sum(-1, keepdims=True)
    return idx, wts * a.routed_scaling_factor


@pytest.mark.parametrize("kind", ["v3", "v2_group", "v2_greedy"])
def test_router_matches_reference(kind):
    cfg = {"v3": tiny_config(n_routed_experts=32, n_group=8, topk_group=3, num_experts_per_tok=6),
           "v2_group": tiny_config(model_type="deepseek_v2", n_routed_experts=32, n_group=4, topk_group=2,
                                   topk_method="group_limited_greedy", routed_scaling_factor=1.0),
           "v2_greedy": tiny_config(model_type="deepseek_v2", n_routed_experts=16, n_group=1, topk_group=1,
                                    num_experts_per_tok=3)}[kind]
    args = ds.ModelArgs.from_config(cfg)
    rng = np.random.default_rng(0)
    gate = ds.MoEGate(args)
    E = args.n_routed_experts
    gate.weight = mx.array(rng.standard_normal((E, args.hidden_size)).astype(np.float32))
    bias = rng.standard_normal(E).astype(np.float32) * 0.5  # large enough to change selections
    if "e_score_correction_bias" in gate:
        gate.e_score_correction_bias = mx.array(bias)
    x = rng.standard_normal((64, args.hidden_size)).astype(np.float32) * 0.05
    idx, w = gate(mx.array(x))
    want_idx, want_w = router_reference(x, np.array(gate.weight), bias if args.topk_method == "noaux_tc" else 0, args)
    got_idx = np.array(idx)
    order = np.argsort(got_idx, -1)
    got_idx, got_w = np.take_along_axis(got_idx, order, -1), np.take_along_axis(np.array(w), order, -1)
    order = np.argsort(want_idx, -1)
    want_idx, want_w = np.take_along_axis(want_idx, order, -1), np.take_along_axis(want_w, order, -1)
    np.testing.assert_array_equal(got_idx, want_idx)
    np.testing.assert_allclose(got_w, want_w, rtol=2e-5, atol=1e-7)


@pytest.mark.parametrize("nope,v,block", [(24, 20, (128, 128)), (32, 32, (16, 16)), (32, 16, (16, 64))])
def test_head_slices_are_exact(nope, v, block):
    """W_UK^T and W_UV from kv_b_proj's codes and scales equal the dequantized weight's slices."""
    H, kvr = 3, 80
    rng = np.random.default_rng(1)
    w = rng.standard_normal((H * (nope + v), kvr)).astype(np.float32)
    layer = tdm.nn.FP8Linear.from_weight(mx.array(w), block_size=block)
    dense = ref.fp8_dequantize(np.array(layer.weight), np.array(layer.weight_scale_inv), block)
    per = dense.reshape(H, nope + v, kvr)
    for rows, start, transpose, want in [(nope, 0, True, per[:, :nope].transpose(0, 2, 1)),
                                         (v, nope, False, per[:, nope:])]:
        codes, scales, blk = ds.head_slices(layer, H, rows, start, transpose)
        got = np.stack([ref.fp8_dequantize(np.array(codes[h]), np.array(scales[h]), blk) for h in range(H)])
        np.testing.assert_array_equal(got, want)
        if nope % block[0] == 0 and v % block[0] == 0:
            assert blk == (block[::-1] if transpose else block)  # whole blocks sliced, no per-row grid


def random_model(cfg, block=(128, 128), seed=0):
    """A DeepSeek model with random FP8 weights (float32 activations)."""
    m = ds.Model(cfg, block_size=block)
    key = mx.random.key(seed)
    ups = []
    for name, p in tree_flatten(m.parameters()):
        key, k = mx.random.split(key)
        if name.endswith("weight_scale_inv"):
            continue
        if p.dtype == mx.uint8:
            w = 0.1 * mx.random.normal(p.shape, key=k)
            parts = [tdm.quantize_fp8(wi, block_size=block) for wi in (w if p.ndim == 3 else [w])]
            c, s = (mx.stack([a for a, _ in parts]), mx.stack([b for _, b in parts])) if p.ndim == 3 else parts[0]
            ups += [(name, c), (name + "_scale_inv", s)]
        elif "norm" in name:
            ups.append((name, 1 + 0.2 * mx.random.normal(p.shape, key=k)))
        else:
            ups.append((name, 0.3 * mx.random.normal(p.shape, key=k)))
    m.update(tree_unflatten(ups))
    return m.finish_loading()


@pytest.mark.parametrize("case", ["unaligned", "aligned", "v2_no_q_lora"])
def test_absorbed_decode_equals_expanded_prefill(case):
    cfg, block = {"unaligned": (tiny_config(), (128, 128)),
                  "aligned": (tiny_config(qk_nope_head_dim=32, v_head_dim=16, kv_lora_rank=64, q_lora_rank=64),
                              (16, 16)),
                  "v2_no_q_lora": (tiny_config(model_type="deepseek_v2", q_lora_rank=None, topk_method="greedy",
                                               n_group=1, topk_group=1), (64, 32))}[case]
    m = random_model(cfg, block)
    tokens = mx.array(np.random.default_rng(2).integers(0, 300, (2, 11)))
    full = np.array(m(tokens))                      # expanded everywhere (no cache)
    cache = m.make_cache()
    for c in cache:
        c.step = 4                                  # several regrowths of the latent buffer
    steps = [m(tokens[:, i:i + 1], cache=cache) for i in range(tokens.shape[1])]  # absorbed everywhere
    absorbed = np.array(mx.concatenate(steps, axis=1))
    np.testing.assert_allclose(absorbed, full, atol=2e-4, rtol=2e-4)
    assert cache[0].offset == 11 and cache[0].state[0].shape[-1] == cfg["kv_lora_rank"] + cfg["qk_rope_head_dim"]
    if case == "aligned":
        assert "qa_kva_proj" in m.layers[0].self_attn and "gate_up_proj" in m.layers[1].mlp.switch_mlp


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="n_group"):
        ds.ModelArgs.from_config(tiny_config(n_group=3))
    with pytest.raises(ValueError, match="topk_group"):
        ds.ModelArgs.from_config(tiny_config(num_experts_per_tok=9))
    with pytest.raises(ValueError, match="rope_type"):
        ds.ModelArgs.from_config(tiny_config(rope_scaling={"rope_type": "llama3", "factor": 8.0}))
