"""fused_attention (CPU kernels, every ISA path this machine runs) against the float64 reference
and against mx.fast.scaled_dot_product_attention: ragged lengths, all head-dim pairs, GQA, causal
and not, decode and chunked prefill, K/V as strided views of a larger cache, bad input."""

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import mlx_tandem as tdm
import reference as ref
from fp8_cases import DTYPES, NP_DTYPES, as_dtype
from isa import PARAMS as ISAS

HEAD_DIMS = [(64, 64), (80, 80), (96, 96), (128, 128), (192, 128), (256, 256), (576, 512)]
ODD_DIMS = [(1, 1), (7, 5), (33, 17), (40, 72)]  # the generic path: not whole vectors
LENGTHS = [1, 2, 7, 33, 127, 1000]
GROUPS = [1, 2, 4, 8]
# float32 accumulation over a few hundred terms, then rounding to the output dtype.
TOL = {"float32": 2e-5, "float16": 2e-3, "bfloat16": 1.6e-2}
# Keeps a single example (scalar path included) well under a second.
BUDGET = 3e7


def rounded(rng, shape, dtype):
    """Normal values already rounded to dtype, as float64 (what the kernel sees)."""
    return as_dtype(rng.standard_normal(shape).astype(np.float32), dtype)


def run(q, k, v, dtype, **kw):
    """fused_attention on float64 numpy inputs cast to dtype; returns float64 output."""
    out = tdm.fused_attention(*(mx.array(x.astype(NP_DTYPES[dtype])) for x in (q, k, v)), **kw)
    assert out.dtype == DTYPES[dtype]
    assert out.shape == (*q.shape[:3], v.shape[3])
    return np.array(out.astype(mx.float32)).astype(np.float64)


def cache_view(c, lk, dtype, layout):
    """The first lk positions of a (B, H, L, D) float cache as an mx view, stored in that order
    ("bhld") or as (B, L, H, D) ("blhd": rows strided by H * D)."""
    if layout == "bhld":
        return mx.array(c.astype(NP_DTYPES[dtype]))[:, :, :lk]
    return mx.array(c.transpose(0, 2, 1, 3).astype(NP_DTYPES[dtype])).transpose(0, 2, 1, 3)[:, :, :lk]


def check(got, q, k, v, dtype, scale=None, causal=True):
    want = ref.attention(q, k, v, scale=scale, causal=causal)
    np.testing.assert_allclose(got, want, rtol=TOL[dtype], atol=TOL[dtype])


@st.composite
def problems(draw):
    """(B, Hq, Hkv, Lq, Lk, Dk, Dv, causal), shrunk to the work budget."""
    dk, dv = draw(st.sampled_from(HEAD_DIMS + ODD_DIMS))
    g, hkv, b = draw(st.sampled_from(GROUPS)), draw(st.sampled_from([1, 2])), draw(st.sampled_from([1, 2]))
    lk = draw(st.sampled_from(LENGTHS))
    causal = draw(st.booleans())
    kind = draw(st.sampled_from(["decode", "chunk", "full"]))
    if kind == "decode":
        lq = draw(st.integers(1, 8))
    elif kind == "chunk":
        lq = draw(st.sampled_from(LENGTHS))
    else:
        lq = lk
    if causal:
        lq = min(lq, lk)
    while b * g * hkv * lq * lk * (dk + dv) > BUDGET and lq > 1:
        lq = max(1, lq // 4)
    while b * g * hkv * lq * lk * (dk + dv) > BUDGET and lk > 1 and lk > (lq if causal else 0):
        lk = max(lq if causal else 1, lk // 4)
    return b, g * hkv, hkv, lq, lk, dk, dv, causal


@pytest.mark.parametrize("isa", ISAS)
@given(problem=problems(), dtype=st.sampled_from(list(DTYPES)), seed=st.integers(0, 2**16))
def test_matches_reference(monkeypatch, isa, problem, dtype, seed):
    monkeypatch.setenv("TANDEM_ISA", isa)
    b, hq, hkv, lq, lk, dk, dv, causal = problem
    rng = np.random.default_rng(seed)
    q, k, v = rounded(rng, (b, hq, lq, dk), dtype), rounded(rng, (b, hkv, lk, dk), dtype), rounded(
        rng, (b, hkv, lk, dv), dtype)
    check(run(q, k, v, dtype, causal=causal), q, k, v, dtype, causal=causal)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dims", HEAD_DIMS)
def test_every_head_dim_pair_decode_and_prefill(monkeypatch, isa, dims):
    monkeypatch.setenv("TANDEM_ISA", isa)
    dk, dv = dims
    rng = np.random.default_rng(dk * 1000 + dv)
    for lq, lk in [(3, 127), (33, 70)]:  # decode over a long cache, chunked prefill
        q, k, v = rounded(rng, (1, 4, lq, dk), "float32"), rounded(rng, (1, 2, lk, dk), "float32"), rounded(
            rng, (1, 2, lk, dv), "float32")
        check(run(q, k, v, "float32"), q, k, v, "float32")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_long_decode_and_prefill(monkeypatch, isa, dtype):
    """The big shapes, once per path: a decode whose keys are split across threads and merged,
    and a 1000-token causal prefill with GQA 8."""
    monkeypatch.setenv("TANDEM_ISA", isa)
    rng = np.random.default_rng(7)
    for b, hq, hkv, lq, lk in [(2, 8, 1, 1, 4099), (1, 8, 1, 1000, 1000)]:
        q, k, v = rounded(rng, (b, hq, lq, 128), dtype), rounded(rng, (b, hkv, lk, 128), dtype), rounded(
            rng, (b, hkv, lk, 128), dtype)
        check(run(q, k, v, dtype), q, k, v, dtype)


@pytest.mark.parametrize("isa", ISAS)
@given(lq=st.sampled_from([1, 2, 5, 8, 40]), g=st.sampled_from(GROUPS), dims=st.sampled_from(HEAD_DIMS[:5]),
       dtype=st.sampled_from(list(DTYPES)), stale_nan=st.booleans(), seed=st.integers(0, 2**16))
@settings(max_examples=10)
def test_kv_cache_views_are_read_in_place(monkeypatch, isa, lq, g, dims, dtype, stale_nan, seed):
    """K/V are cache[:, :, :L, :] views of a bigger buffer whose unused tail holds huge keys and
    huge or NaN values: any read past L shows in the result, and no copy of the cache is made."""
    monkeypatch.setenv("TANDEM_ISA", isa)
    dk, dv = dims
    rng = np.random.default_rng(seed)
    b, hkv, cap = 2, 2, 640
    length = int(rng.integers(lq, cap - 1))
    # Huge keys would dominate the softmax if read unmasked; NaN values poison the output
    # even when multiplied by a zero weight, so a masked read past L shows too.
    huge = 6e4 if dtype == "float16" else 1e30  # finite in the dtype
    kc = np.full((b, hkv, cap, dk), huge, np.float32)
    vc = np.full((b, hkv, cap, dv), np.nan if stale_nan else -huge, np.float32)
    kc[:, :, :length] = rounded(rng, (b, hkv, length, dk), dtype)
    vc[:, :, :length] = rounded(rng, (b, hkv, length, dv), dtype)
    q = rounded(rng, (b, g * hkv, lq, dk), dtype)
    kcache, vcache = mx.array(kc.astype(NP_DTYPES[dtype])), mx.array(vc.astype(NP_DTYPES[dtype]))
    qm = mx.array(q.astype(NP_DTYPES[dtype]))
    mx.eval(kcache, vcache, qm)
    k, v = kcache[:, :, :length, :], vcache[:, :, :length, :]
    mx.eval(k, v)
    mx.reset_peak_memory()
    before = mx.get_active_memory()
    out = tdm.fused_attention(qm, k, v)
    mx.eval(out)
    extra = mx.get_peak_memory() - before
    assert extra < out.nbytes + (1 << 20), f"fused_attention allocated {extra} bytes for a view"
    got = np.array(out.astype(mx.float32)).astype(np.float64)
    check(got, q, kc[:, :, :length].astype(np.float64), vc[:, :, :length].astype(np.float64), dtype)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dims", [(128, 128), (192, 128), (40, 72)])
def test_decode_groups_and_key_boundaries(monkeypatch, isa, dims):
    """Decode (Lq=1) for every group size 1..8 (row panels of 4 plus remainders; a single row keeps
    its scores contiguous) at key counts around the kernel's tiles (3, 6, 8 keys), chunks (24),
    blocks (240) and the key split across threads (>= 960), with K/V read through views of a
    (B, L, H, D) cache: rows strided, and the unused tail holding huge keys and NaN values that any
    read, prefetch or tile past the length would let into the result."""
    monkeypatch.setenv("TANDEM_ISA", isa)
    dk, dv = dims
    rng = np.random.default_rng(dk + dv)
    hkv, extra = 2, 40
    lengths = [1, 7, 8, 23, 25, 239, 241, 481, 1201]
    for g in range(1, 9):
        for i, lk in enumerate(lengths[g % 3::3] if isa == "scalar" else lengths):
            dtype = list(DTYPES)[(g + i) % len(DTYPES)]
            huge = 6e4 if dtype == "float16" else 1e30
            kc = np.full((1, lk + extra, hkv, dk), huge, np.float32)
            vc = np.full((1, lk + extra, hkv, dv), np.nan, np.float32)
            kc[:, :lk] = rounded(rng, (1, lk, hkv, dk), dtype)
            vc[:, :lk] = rounded(rng, (1, lk, hkv, dv), dtype)
            q = rounded(rng, (1, g * hkv, 1, dk), dtype)
            k, v = (cache_view(x.transpose(0, 2, 1, 3), lk, dtype, "blhd") for x in (kc, vc))
            out = tdm.fused_attention(mx.array(q.astype(NP_DTYPES[dtype])), k, v)
            got = np.array(out.astype(mx.float32)).astype(np.float64)
            kr, vr = (x[:, :lk].transpose(0, 2, 1, 3).astype(np.float64) for x in (kc, vc))
            check(got, q, kr, vr, dtype)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dims", [(192, 128), (576, 512), (40, 72)])
def test_single_row_decode_segments(monkeypatch, isa, dims):
    """One query row per KV head (no GQA) reads its keys as 3 segments side by side, each
    shortened so the segments do not share L1 sets, the rest through plain blocks. Key counts
    around the smallest segmented range (3 x 16 keys), segment blocks (80 keys each) and the key
    split across threads, causal and not, in a dense (B, H, L, D) cache and a (B, L, H, D) one,
    the unused tail holding huge keys and NaN values."""
    monkeypatch.setenv("TANDEM_ISA", isa)
    dk, dv = dims
    rng = np.random.default_rng(dk * dv)
    hkv, extra = 3, 24
    lengths = [47, 48, 50, 241, 1201, 3001] if isa != "scalar" else [48, 241]
    for i, lk in enumerate(lengths):
        dtype = list(DTYPES)[i % len(DTYPES)]
        causal = i % 2 == 0
        huge = 6e4 if dtype == "float16" else 1e30
        kc = np.full((1, hkv, lk + extra, dk), huge, np.float32)
        vc = np.full((1, hkv, lk + extra, dv), np.nan, np.float32)
        kc[:, :, :lk] = rounded(rng, (1, hkv, lk, dk), dtype)
        vc[:, :, :lk] = rounded(rng, (1, hkv, lk, dv), dtype)
        q = rounded(rng, (1, hkv, 1, dk), dtype)
        kr, vr = (x[:, :, :lk].astype(np.float64) for x in (kc, vc))
        qm = mx.array(q.astype(NP_DTYPES[dtype]))
        for layout in ("bhld", "blhd"):
            k, v = (cache_view(x, lk, dtype, layout) for x in (kc, vc))
            out = tdm.fused_attention(qm, k, v, causal=causal)
            got = np.array(out.astype(mx.float32)).astype(np.float64)
            check(got, q, kr, vr, dtype, causal=causal)


@pytest.mark.parametrize("isa", ISAS)
def test_other_strided_layouts(monkeypatch, isa):
    """K/V in (B, L, H, D) storage seen through a transpose (contiguous last dim: read in place),
    and a K whose last dimension is strided (gathered), both equal to the contiguous result."""
    monkeypatch.setenv("TANDEM_ISA", isa)
    rng = np.random.default_rng(3)
    q = rounded(rng, (2, 4, 5, 64), "float32")
    k_blhd = rounded(rng, (2, 50, 2, 64), "float32")
    v_blhd = rounded(rng, (2, 50, 2, 48), "float32")
    k_bhdl = np.ascontiguousarray(k_blhd.transpose(0, 2, 3, 1))
    k_t = mx.array(k_blhd.astype(np.float32)).transpose(0, 2, 1, 3)
    v_t = mx.array(v_blhd.astype(np.float32)).transpose(0, 2, 1, 3)
    k_strided_last = mx.array(k_bhdl.astype(np.float32)).swapaxes(2, 3)
    want = ref.attention(q, k_blhd.transpose(0, 2, 1, 3), v_blhd.transpose(0, 2, 1, 3))
    for k in (k_t, k_strided_last):
        got = tdm.fused_attention(mx.array(q.astype(np.float32)), k, v_t)
        np.testing.assert_allclose(np.array(got), want, rtol=TOL["float32"], atol=TOL["float32"])


@given(problem=problems(), scale=st.sampled_from([None, 0.05, 1.0]), seed=st.integers(0, 2**16))
@settings(max_examples=15)
def test_matches_mlx_sdpa(problem, scale, seed):
    b, hq, hkv, lq, lk, dk, dv, causal = problem
    rng = np.random.default_rng(seed)
    q, k, v = (mx.array(rng.standard_normal(s).astype(np.float32))
               for s in [(b, hq, lq, dk), (b, hkv, lk, dk), (b, hkv, lk, dv)])
    scale_used = dk**-0.5 if scale is None else scale
    got = tdm.fused_attention(q, k, v, scale=scale, causal=causal)
    want = mx.fast.scaled_dot_product_attention(q, k, v, scale=scale_used, mask="causal" if causal else None)
    # Both round the scores in float32; scores (and so their rounding) grow like scale * sqrt(Dk).
    tol = 5e-5 * max(1.0, scale_used * dk**0.5)
    np.testing.assert_allclose(np.array(got), np.array(want), rtol=tol, atol=tol)


def test_decode_steps_equal_one_prefill():
    """Attending token by token (Lq=1 against a growing cache view) gives the rows of one causal pass."""
    rng = np.random.default_rng(11)
    q = mx.array(rng.standard_normal((1, 8, 20, 64)).astype(np.float32))
    k = mx.array(rng.standard_normal((1, 2, 20, 64)).astype(np.float32))
    v = mx.array(rng.standard_normal((1, 2, 20, 64)).astype(np.float32))
    full = np.array(tdm.fused_attention(q, k, v))
    for t in range(20):
        step = tdm.fused_attention(q[:, :, t:t + 1], k[:, :, :t + 1], v[:, :, :t + 1])
        np.testing.assert_allclose(np.array(step)[:, :, 0], full[:, :, t], rtol=1e-5, atol=1e-6)


def _arrays(shapes, dtype=mx.float32):
    return [mx.zeros(s, dtype) for s in shapes]


BAD = [  # (id, expected message, shapes, kwargs)
    ("dtype", "float16, bfloat16 or float32", dict(shapes=[(1, 2, 3, 8)] * 3, dtype=mx.int32), {}),
    ("rank", "4 dimensions", dict(shapes=[(2, 3, 8), (1, 2, 3, 8), (1, 2, 3, 8)]), {}),
    ("gqa", "multiple", dict(shapes=[(1, 3, 2, 8), (1, 2, 4, 8), (1, 2, 4, 8)]), {}),
    ("dk", "head dimension", dict(shapes=[(1, 2, 2, 8), (1, 2, 4, 16), (1, 2, 4, 8)]), {}),
    ("lk", "same length", dict(shapes=[(1, 2, 2, 8), (1, 2, 4, 8), (1, 2, 5, 8)]), {}),
    ("batch", "batch", dict(shapes=[(2, 2, 2, 8), (1, 2, 4, 8), (1, 2, 4, 8)]), {}),
    ("empty", "empty", dict(shapes=[(1, 2, 0, 8), (1, 2, 4, 8), (1, 2, 4, 8)]), {}),
    ("causal", "Lq", dict(shapes=[(1, 2, 5, 8), (1, 2, 4, 8), (1, 2, 4, 8)]), {}),
    ("scale", "scale", dict(shapes=[(1, 2, 2, 8), (1, 2, 4, 8), (1, 2, 4, 8)]), {"scale": float("inf")}),
]


@pytest.mark.parametrize("what,arrays,kw", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_value_error(what, arrays, kw):
    q, k, v = _arrays(**arrays)
    with pytest.raises(ValueError, match=f"fused_attention.*{what}"):
        tdm.fused_attention(q, k, v, **kw)


def test_mixed_dtypes_and_non_causal_long_queries():
    q, k, v = mx.zeros((1, 2, 2, 8)), mx.zeros((1, 2, 4, 8), mx.float16), mx.zeros((1, 2, 4, 8))
    with pytest.raises(ValueError, match="fused_attention.*same dtype"):
        tdm.fused_attention(q, k, v)
    # Without the causal mask more queries than keys is fine.
    q, k, v = _arrays([(1, 2, 5, 8), (1, 2, 3, 8), (1, 2, 3, 4)])
    assert tdm.fused_attention(q, k, v, causal=False).shape == (1, 2, 5, 4)
