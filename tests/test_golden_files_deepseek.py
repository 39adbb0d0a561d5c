"""The DeepSeek golden checkpoints (scripts/make_goldens_deepseek.py) are well-formed in DeepSeek-V3's
published layout: index <-> shards, FP8 codes + ceil-grid F32 scales, BF16 / F32 where DeepSeek has
them, per-expert names, the MTP layer, and logits.npz. A sanity test of the files; the model
comparison is test_model_golden_deepseek's."""

import json
import math
import os

import numpy as np
import pytest

from mlx_tandem.safetensors_io import SafetensorsFile

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")
NAMES = ["deepseek_v3", "deepseek_v3_noyarn", "deepseek_v2"]
QUANT = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8", "weight_block_size": [128, 128]}
MTP_EXTRA = ["enorm.weight", "hnorm.weight", "eh_proj.weight", "shared_head.norm.weight",
             "shared_head.head.weight", "embed_tokens.weight"]


class Golden:
    def __init__(self, name):
        self.dir = os.path.join(GOLDEN, name)
        self.cfg = json.load(open(os.path.join(self.dir, "config.json")))
        self.index = json.load(open(os.path.join(self.dir, "model.safetensors.index.json")))
        self.files = {f: SafetensorsFile(os.path.join(self.dir, f)) for f in set(self.index["weight_map"].values())}
        self.where = {n: f for f, sf in self.files.items() for n in sf.keys()}  # what the shards hold
        self.info = {n: self.files[f].tensors[n] for n, f in self.where.items()}

    def array(self, name):
        return np.array(self.files[self.where[name]].numpy(name))


@pytest.fixture(scope="module", params=NAMES)
def g(request):
    return Golden(request.param)


def expected_shapes(cfg, layer):
    """(N, K) of every tensor a decoder layer must hold, from the config."""
    H, nh, r = cfg["hidden_size"], cfg["num_attention_heads"], cfg["kv_lora_rank"]
    dn, dr, dv = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
    p = f"model.layers.{layer}."
    s = {p + "input_layernorm.weight": (H,), p + "post_attention_layernorm.weight": (H,),
         p + "self_attn.kv_a_proj_with_mqa.weight": (r + dr, H), p + "self_attn.kv_a_layernorm.weight": (r,),
         p + "self_attn.kv_b_proj.weight": (nh * (dn + dv), r), p + "self_attn.o_proj.weight": (H, nh * dv)}
    if cfg["q_lora_rank"]:
        q = cfg["q_lora_rank"]
        s.update({p + "self_attn.q_a_proj.weight": (q, H), p + "self_attn.q_a_layernorm.weight": (q,),
                  p + "self_attn.q_b_proj.weight": (nh * (dn + dr), q)})
    else:
        s[p + "self_attn.q_proj.weight"] = (nh * (dn + dr), H)

    def mlp(q, i):
        s.update({q + "gate_proj.weight": (i, H), q + "up_proj.weight": (i, H), q + "down_proj.weight": (H, i)})
    if layer < cfg["first_k_dense_replace"]:
        mlp(p + "mlp.", cfg["intermediate_size"])
        return s
    E, I = cfg["n_routed_experts"], cfg["moe_intermediate_size"]
    for e in range(E):
        mlp(f"{p}mlp.experts.{e}.", I)
    mlp(p + "mlp.shared_experts.", I * cfg["n_shared_experts"])
    s[p + "mlp.gate.weight"] = (E, H)
    if cfg["model_type"] == "deepseek_v3":
        s[p + "mlp.gate.e_score_correction_bias"] = (E,)
    return s


def all_expected(cfg):
    H, V, n = cfg["hidden_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
    s = {"model.embed_tokens.weight": (V, H), "model.norm.weight": (H,), "lm_head.weight": (V, H)}
    for i in range(n + cfg.get("num_nextn_predict_layers", 0)):
        s.update(expected_shapes(cfg, i))
    for i in range(n, n + cfg.get("num_nextn_predict_layers", 0)):
        p = f"model.layers.{i}."
        s.update({p + "enorm.weight": (H,), p + "hnorm.weight": (H,), p + "eh_proj.weight": (H, 2 * H),
                  p + "shared_head.norm.weight": (H,), p + "shared_head.head.weight": (V, H),
                  p + "embed_tokens.weight": (V, H)})
    return s


def test_config_is_deepseeks_published_form(g):
    c = g.cfg
    assert c["quantization_config"] == QUANT and c["torch_dtype"] == "bfloat16"
    assert c["architectures"] == [{"deepseek_v3": "DeepseekV3ForCausalLM",
                                   "deepseek_v2": "DeepseekV2ForCausalLM"}[c["model_type"]]]
    if "rope_parameters" in c:  # transformers-5 style
        assert "rope_scaling" not in c and "rope_theta" in c["rope_parameters"]
    else:  # DeepSeek's published (transformers-4) style
        assert c["rope_scaling"]["type"] == "yarn" and "rope_theta" in c
        r = c["rope_scaling"]
        assert c["max_position_embeddings"] == r["factor"] * r["original_max_position_embeddings"]
    assert c["model_type"] == "deepseek_v2" or c["num_nextn_predict_layers"] == 1
    # dims that leave partial 128-blocks
    assert all(c[k] % 128 for k in ("hidden_size", "intermediate_size", "moe_intermediate_size", "kv_lora_rank"))
    E, G = c["n_routed_experts"], c["n_group"]
    assert c["num_experts_per_tok"] <= c["topk_group"] * E // G


def test_rope_styles_both_present():
    cfgs = [Golden(n).cfg for n in NAMES]
    assert any("rope_parameters" in c for c in cfgs) and any("rope_scaling" in c for c in cfgs)


def test_index_covers_every_shard_tensor(g):
    wm = g.index["weight_map"]
    assert len(g.files) >= 2
    assert g.where == wm
    total = sum(i["offsets"][1] - i["offsets"][0] for i in g.info.values())
    assert g.index["metadata"]["total_size"] == total
    assert all(sf.metadata == {"format": "pt"} for sf in g.files.values())


def test_tensor_names_shapes_and_dtypes(g):
    exp = all_expected(g.cfg)
    weights = {n: i for n, i in g.info.items() if not n.endswith("_scale_inv")}
    assert {n: tuple(i["shape"]) for n, i in weights.items()} == exp
    for n, i in weights.items():
        fp8 = n.endswith(("_proj.weight", "kv_a_proj_with_mqa.weight")) and not n.endswith("eh_proj.weight")
        want = "F8_E4M3" if fp8 else "F32" if n.endswith("e_score_correction_bias") else "BF16"
        assert i["dtype"] == want, n
        assert (n + "_scale_inv" in g.info) == fp8, n


def test_fp8_scales_follow_the_ceil_grid(g):
    partial = 0
    for n, i in g.info.items():
        if i["dtype"] != "F8_E4M3":
            continue
        s = g.info[n + "_scale_inv"]
        N, K = i["shape"]
        assert s["dtype"] == "F32" and tuple(s["shape"]) == (math.ceil(N / 128), math.ceil(K / 128)), n
        scales, codes = g.array(n + "_scale_inv"), g.array(n)
        assert np.isfinite(scales).all() and (scales > 0).all(), n
        assert not np.isin(codes, [0x7F, 0xFF]).any(), n  # no NaN codes
        partial += N % 128 != 0 and K % 128 != 0
    assert partial > 0


def test_float_tensors_are_random_and_nonzero(g):
    """Norm weights and the correction bias random and nonzero everywhere (a ones-norm or a zero
    bias would let a model that skips them pass); matrices random."""
    for n, i in g.info.items():
        if i["dtype"] == "BF16" or n.endswith("e_score_correction_bias"):
            a = g.array(n)
            a = (a.astype(np.uint32) << 16).view(np.float32) if i["dtype"] == "BF16" else a
            assert np.isfinite(a).all(), n
            if a.ndim == 1:
                assert (a != 0).all() and np.unique(a).size > a.size // 4, n
            else:
                assert np.unique(a).size > 1000, n


def test_mtp_layer_is_a_full_layer_past_num_hidden_layers(g):
    n, m = g.cfg["num_hidden_layers"], g.cfg.get("num_nextn_predict_layers", 0)
    layers = {int(k.split(".")[2]) for k in g.info if k.startswith("model.layers.")}
    assert layers == set(range(n + m))
    for i in range(n, n + m):
        p = f"model.layers.{i}."
        assert all(p + k in g.info for k in MTP_EXTRA)
        assert f"{p}mlp.experts.{g.cfg['n_routed_experts'] - 1}.down_proj.weight" in g.info


def test_logits_and_routes(g):
    d = np.load(os.path.join(g.dir, "logits.npz"))
    c = g.cfg
    E, G, k = c["n_routed_experts"], c["n_group"], c["num_experts_per_tok"]
    moe = list(range(c["first_k_dense_replace"], c["num_hidden_layers"]))
    assert set(d.files) == {"tokens", "logits", "moe_layers", "experts", "expert_weights"}
    assert d["tokens"].shape == (2, 12) and d["tokens"].dtype == np.int32
    assert d["tokens"].min() >= 0 and d["tokens"].max() < c["vocab_size"]
    assert d["logits"].shape == (2, 12, c["vocab_size"]) and d["logits"].dtype == np.float32
    assert np.isfinite(d["logits"]).all() and d["logits"].std() > 0.1
    assert list(d["moe_layers"]) == moe
    ex, w = d["experts"], d["expert_weights"]
    assert ex.shape == w.shape == (len(moe), 2, 12, k)
    assert (np.diff(ex, axis=-1) > 0).all() and ex.min() >= 0 and ex.max() < E  # sorted, distinct
    groups = ex // (E // G)
    assert max(len(set(t)) for t in groups.reshape(-1, k).tolist()) <= c["topk_group"]
    assert (w > 0).all()
    if c["norm_topk_prob"]:
        np.testing.assert_allclose(w.sum(-1), c["routed_scaling_factor"], rtol=1e-5)
