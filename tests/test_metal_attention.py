"""The attention Metal kernels (metal/attention_decode.h, attention_prefill.h) run through the Metal-on-CPU
emulator with exactly the launches plan_attention produces for eval_gpu, against a float64 reference:
every dtype and head-dim pair, GQA, causal and not, K/V as strided views of a larger cache whose stale
slots hold NaN (a kernel that reads them fails loudly)."""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fp8_cases import EPS
import reference as ref
from metal_kernels import HEAD_DIMS, NP_DTYPES, check_resources, dispatch, library, plan_attention, require_emulator

pytestmark = pytest.mark.usefixtures("emulator")
DTYPE_NAMES = list(NP_DTYPES)
LAYOUTS = ["contiguous", "cache", "cache_seq_major"]


@pytest.fixture(scope="module")
def emulator():
    require_emulator()


def kv_buffer(rng, b, h, lk, d, layout, dtype):
    """(buffer, view, strides): the view (b, h, lk, d) of keys/values and the buffer the kernel gets."""
    if layout == "contiguous":
        buf = rng.standard_normal((b, h, lk, d)).astype(NP_DTYPES[dtype])
        return buf, buf, None
    cap = lk + 5 + lk // 3
    if layout == "cache":  # (B, H, capacity, D), the first lk slots valid
        buf = np.full((b, h, cap, d), np.nan, NP_DTYPES[dtype])
        buf[:, :, :lk] = rng.standard_normal((b, h, lk, d))
        return buf, buf[:, :, :lk], (h * cap * d, cap * d, d)
    buf = np.full((b, cap, h, d), np.nan, NP_DTYPES[dtype])  # (B, capacity, H, D)
    buf[:, :lk] = rng.standard_normal((b, lk, h, d))
    return buf, buf[:, :lk].transpose(0, 2, 1, 3), (cap * h * d, d, h * d)


def q_buffer(rng, b, hq, lq, dk, transposed, dtype):
    """(buffer, view, strides) of q: contiguous, or the (B, L, H, D) -> (B, H, L, D) view models make."""
    if not transposed:
        buf = rng.standard_normal((b, hq, lq, dk)).astype(NP_DTYPES[dtype])
        return buf, buf, None
    buf = rng.standard_normal((b, lq, hq, dk)).astype(NP_DTYPES[dtype])
    return buf, buf.transpose(0, 2, 1, 3), (lq * hq * dk, dk, hq * dk)


def run_attention(b, hq, hkv, lq, lk, dk, dv, dtype, causal, layout="contiguous", seed=0, scale=None,
                  q_transposed=False):
    """Runs every planned launch and checks the output; returns (plan, stats of the first launch, k buffer)."""
    rng = np.random.default_rng(seed)
    qbuf, q, qs = q_buffer(rng, b, hq, lq, dk, q_transposed, dtype)
    kbuf, k, ks = kv_buffer(rng, b, hkv, lk, dk, layout, dtype)
    vbuf, v, vs = kv_buffer(rng, b, hkv, lk, dv, layout, dtype)
    out = np.full((b, hq, lq, dv), np.nan, NP_DTYPES[dtype])
    plan = plan_attention(q.shape, (b, hkv, lk, dk), dv, dtype, causal, scale=scale, q_strides=qs, k_strides=ks,
                          v_strides=vs)
    first = plan["launches"][0]
    if plan["variant"] == "prefill":
        stats = dispatch(library("attention_prefill"), first, {0: qbuf, 1: kbuf, 2: vbuf, 3: out})
    elif plan["variant"] == "decode":
        stats = dispatch(library("attention_decode"), first, {0: qbuf, 1: kbuf, 2: vbuf, 3: out})
    else:
        part_o = np.full(plan["partial_out_elems"], np.nan, np.float32)
        part_ml = np.full(plan["partial_ml_elems"], np.nan, np.float32)
        lib = library("attention_decode")
        stats = dispatch(lib, first, {0: qbuf, 1: kbuf, 2: vbuf, 3: part_o, 5: part_ml})
        dispatch(lib, plan["launches"][1], {0: part_o, 1: part_ml, 2: out})
    want = ref.attention(q, k, v, scale, causal)
    got = out.astype(np.float64)
    # A convex combination of v rows: float32 math, the output rounded to dtype.
    tol = (2 * EPS[dtype] + 1e-5) * np.abs(v.astype(np.float64)).max()
    bad = ~(np.abs(got - want) <= tol)
    i = tuple(np.argwhere(bad)[0]) if bad.any() else None
    assert i is None, f"{first['kernel']} at {i}: got {got[i]}, want {want[i]}, tol {tol}"
    return plan, stats, kbuf


@given(b=st.integers(1, 2), hkv=st.integers(1, 3), g=st.sampled_from([1, 2, 4, 5]), lq=st.integers(1, 12),
       extra=st.integers(0, 70), dims=st.sampled_from(HEAD_DIMS), dtype=st.sampled_from(DTYPE_NAMES),
       causal=st.booleans(), layout=st.sampled_from(LAYOUTS), q_transposed=st.booleans(),
       seed=st.integers(0, 2**16))
@settings(max_examples=20)
def test_attention_matches_reference(b, hkv, g, lq, extra, dims, dtype, causal, layout, q_transposed, seed):
    run_attention(b, hkv * g, hkv, lq, lq + extra, *dims, dtype, causal, layout, seed, q_transposed=q_transposed)


def decode_cases():
    """(dtype, dims, G, Lq, R, split) reaching every decode instantiation the planner can select."""
    # R -> (G, Lq): R = next power of two of ceil(G * Lq / 32 SIMD-groups), capped by Dv
    rows = {1: (3, 2), 2: (12, 4), 4: (20, 5), 8: (40, 5)}
    for dtype, (dk, dv), split in itertools.product(DTYPE_NAMES, HEAD_DIMS, (False, True)):
        cap = 8 if dv <= 128 else 4 if dv <= 256 else 2
        for r in (1, 2, 4, 8):
            if r <= cap:
                yield pytest.param(dtype, (dk, dv), *rows[r], r, split, id=f"{dtype}-{dk}x{dv}-r{r}-{split}")


@pytest.mark.parametrize("dtype,dims,g,lq,r,split", list(decode_cases()))
def test_every_decode_instantiation(dtype, dims, g, lq, r, split):
    lk = 1024 + 37 if split else 45
    plan, _, _ = run_attention(1, g, 1, lq, lk, *dims, dtype, causal=True, layout="cache", seed=r,
                               q_transposed=split)
    name = "attention_decode_split" if split else "attention_decode"
    assert plan["launches"][0]["kernel"] == f"{name}_{dtype}_{dims[0]}_{dims[1]}_r{r}"
    assert plan["variant"] == ("decode_split" if split else "decode")


@pytest.mark.parametrize("dtype,dims", list(itertools.product(DTYPE_NAMES, HEAD_DIMS)))
def test_every_prefill_instantiation(dtype, dims):
    plan, _, _ = run_attention(1, 2, 1, 37, 70, *dims, dtype, causal=True, layout="cache_seq_major", seed=3)
    assert plan["launches"][0]["kernel"] == f"attention_prefill_{dtype}_{dims[0]}_{dims[1]}"


@pytest.mark.parametrize("causal", [False, True])
def test_prefill_causal_chunk_and_scale(causal):
    """Chunked prefill (Lq < Lk, queries are the last Lq keys) with an explicit scale, Dk != Dv."""
    run_attention(2, 4, 2, 40, 107, 192, 128, "float32", causal, "cache", seed=11, scale=0.3, q_transposed=True)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("g,dims,reads", [(8, (128, 128), 1), (4, (64, 64), 1), (128, (128, 128), 1),
                                          (2, (576, 512), 1), (128, (576, 512), 2)])
def test_decode_reads_each_kv_head_once_per_gqa_group(layout, g, dims, reads):
    """Decode stages each key tile once per threadgroup, and one threadgroup takes the whole GQA group
    (Llama-70B: 8 query heads per KV head) up to 32 SIMD-groups x R rows: K and V are read exactly once;
    DeepSeek MLA (128 heads on one 576/512 latent head) takes two threadgroups, so twice. With the cache
    views the stale slots are never touched (the byte count equals the valid part)."""
    b, hkv, lk = 2, 2, 300 if g < 128 else 40
    dk, dv = dims
    plan, stats, kbuf = run_attention(b, g * hkv, hkv, 1, lk, dk, dv, "float16", False, layout, seed=2)
    assert plan["variant"] == "decode" and plan["launches"][0]["grid"][0] == reads
    assert stats.bytes_read[1] == reads * b * hkv * lk * dk * 2
    assert stats.bytes_read[2] == reads * b * hkv * lk * dv * 2


def test_split_decode_reads_each_kv_head_once():
    b, hkv, g, lk = 1, 1, 8, 2500
    plan, stats, _ = run_attention(b, g * hkv, hkv, 1, lk, 128, 128, "bfloat16", True, "cache", seed=4)
    assert plan["variant"] == "decode_split" and plan["splits"] > 1
    assert stats.bytes_read[1] == b * hkv * lk * 128 * 2


@pytest.mark.parametrize("dims,dv_tiles", [((128, 128), 1), ((576, 512), 2)])
def test_prefill_stages_each_key_tile_once_per_threadgroup(dims, dv_tiles):
    """Non-causal prefill: every threadgroup (32 query rows of one head, one Dv slice) reads K once."""
    b, hq, hkv, lq, lk = 1, 2, 1, 40, 70
    plan, stats, _ = run_attention(b, hq, hkv, lq, lk, *dims, "bfloat16", False, "cache", seed=8)
    groups = b * hq * -(-lq // 32) * dv_tiles
    assert plan["launches"][0]["grid"] == (-(-lq // 32) * dv_tiles, hq, b)
    assert stats.bytes_read[1] == groups * lk * dims[0] * 2


def test_plans_respect_limits_and_exist():
    dec, pre = library("attention_decode"), library("attention_prefill")
    seen = set()
    for (dk, dv), dt, (hq, hkv), lq, lk in itertools.product(HEAD_DIMS, DTYPE_NAMES, [(64, 8), (128, 1), (32, 32)],
                                                            [1, 2, 8, 9, 512], [1, 700, 5000, 131072]):
        if lq > lk:
            continue
        plan = plan_attention((1, hq, lq, dk), (1, hkv, lk, dk), dv, dt, True)
        for launch in plan["launches"]:
            check_resources(launch)
            assert launch["kernel"] in (pre if plan["variant"] == "prefill" else dec).kernels
            seen.add(launch["kernel"])
    assert seen <= set(dec.kernels) | set(pre.kernels)


@pytest.mark.parametrize("kw,match", [(dict(hq=3, hkv=2), "multiple"), (dict(dk=100, dv=100), "head dims"),
                                      (dict(lk=0), "positive"), (dict(scale=-1.0), "scale")])
def test_plan_rejects_bad_input(kw, match):
    a = dict(hq=4, hkv=2, dk=64, dv=64, lk=10, scale=None) | kw
    with pytest.raises(ValueError, match=match):
        plan_attention((1, a["hq"], 1, a["dk"]), (1, a["hkv"], a["lk"], a["dk"]), a["dv"], "float32", True,
                       scale=a["scale"])
