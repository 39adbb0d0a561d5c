"""gather_fp8_matmul (DeepSeek's routed experts, MLA's per-head matrices) against the float64 reference
on every CPU path: ragged shapes and block sizes with partial edge blocks, repeated and unsorted
indices, k = 1..8, up to 256 experts, few rows per expert (the batched GEMV) and many (GEMM),
every dtype, leading dimensions, and the ValueError cases."""

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import mlx_tandem as tdm
import reference as ref
from fp8_cases import DTYPES, EPS, NP_DTYPES, RAGGED, as_dtype, block_sizes, quantized
from isa import PARAMS as ISAS

OP = "gather_fp8_matmul"


def experts(rng, E, n, k, block):
    parts = [quantized(rng, n, k, block) for _ in range(E)]
    return np.stack([c for c, _ in parts]), np.stack([s for _, s in parts])


def check(x, codes, scales, indices, block, dtype):
    K = codes.shape[2]
    x = as_dtype(x, dtype)
    y = tdm.gather_fp8_matmul(mx.array(x.astype(NP_DTYPES[dtype])), mx.array(codes), mx.array(scales),
                              mx.array(indices.astype(np.int32)), block_size=block)
    assert y.dtype == DTYPES[dtype] and y.shape == (*indices.shape, codes.shape[1])
    got = np.array(y.astype(mx.float32)).astype(np.float64)
    want = ref.gather_fp8_matmul(x, codes, scales, indices, block)
    dense = np.stack([ref.fp8_dequantize(codes[e], scales[e], block) for e in range(codes.shape[0])])
    magnitude = np.einsum("...k,...jnk->...jn", np.abs(x), np.abs(dense[indices]))
    tol = (K * 2.0**-23 + 2 * EPS[dtype]) * magnitude + 2.0**-24
    bad = np.abs(got - want) > tol
    i = tuple(np.argwhere(bad)[0]) if bad.any() else None
    assert i is None, f"at {i}: got {got[i]}, want {want[i]}, tol {tol[i]}"


@pytest.mark.parametrize("isa", ISAS)
@given(data=st.data(), T=st.sampled_from([1, 2, 3, 5, 9, 40]), k=st.integers(1, 8), E=st.sampled_from([1, 3, 8, 33]),
       n=RAGGED, K=RAGGED, dtype=st.sampled_from(list(DTYPES)), seed=st.integers(0, 2**16))
def test_gather_matches_reference(monkeypatch, isa, data, T, k, E, n, K, dtype, seed):
    monkeypatch.setenv("TANDEM_ISA", isa)
    block = data.draw(block_sizes(n, K))
    rng = np.random.default_rng(seed)
    codes, scales = experts(rng, E, n, K, block)
    # repeated and unsorted picks; T = 40 with few experts gives some experts > 8 rows (GEMM path)
    indices = rng.integers(0, E, (T, k))
    check(rng.standard_normal((T, K)), codes, scales, indices, block, dtype)


@pytest.mark.parametrize("isa", ISAS)
def test_many_experts_few_chosen(monkeypatch, isa):
    """256 experts, 8 distinct per token (a DeepSeek router's shape, small weights)."""
    monkeypatch.setenv("TANDEM_ISA", isa)
    rng = np.random.default_rng(3)
    codes, scales = experts(rng, 256, 24, 40, (16, 16))
    indices = np.stack([rng.permutation(256)[:8] for _ in range(3)])
    check(rng.standard_normal((3, 40)), codes, scales, indices, (16, 16), "bfloat16")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("rows", [1, 8, 9, 70])
def test_one_expert_many_rows(monkeypatch, isa, rows):
    """Every row on the same expert: the GEMV batch up to 8 rows, the GEMM past it."""
    monkeypatch.setenv("TANDEM_ISA", isa)
    rng = np.random.default_rng(rows)
    codes, scales = experts(rng, 4, 130, 257, (128, 128))
    check(rng.standard_normal((rows, 257)), codes, scales, np.full((rows, 2), 2), (128, 128), "float32")


@pytest.mark.parametrize("isa", ISAS)
def test_leading_dims_down_projection_and_per_head(monkeypatch, isa):
    """x (T, k, N') with indices (T, k, 1), as the experts' down projection; x (B, L, H, d) with
    indices (B, L, H, 1) = h, as MLA's absorbed per-head matrices."""
    monkeypatch.setenv("TANDEM_ISA", isa)
    rng = np.random.default_rng(5)
    codes, scales = experts(rng, 6, 33, 20, (16, 8))
    idx = rng.integers(0, 6, (4, 3))
    check(rng.standard_normal((4, 3, 20)), codes, scales, idx[..., None], (16, 8), "float16")
    heads = np.broadcast_to(np.arange(6)[None, None, :, None], (2, 3, 6, 1))
    check(rng.standard_normal((2, 3, 6, 20)), codes, scales, heads, (16, 8), "float32")


def test_lazy_indices_and_views():
    """Indices computed in the graph (as the router makes them) and a strided x view."""
    rng = np.random.default_rng(6)
    codes, scales = experts(rng, 5, 17, 64, (8, 32))
    x = mx.array(rng.standard_normal((6, 128)).astype(np.float32))[:, ::2]
    logits = mx.array(rng.standard_normal((6, 5)).astype(np.float32))
    idx = mx.argpartition(-logits, kth=1, axis=-1)[:, :2].astype(mx.int32)
    y = tdm.gather_fp8_matmul(x, mx.array(codes), mx.array(scales), idx, block_size=(8, 32))
    want = ref.gather_fp8_matmul(np.array(x), codes, scales, np.array(idx), (8, 32))
    np.testing.assert_allclose(np.array(y), want, rtol=1e-5, atol=1e-5)


def test_bad_input_is_a_value_error():
    rng = np.random.default_rng(7)
    c, s = experts(rng, 4, 8, 16, (4, 8))
    codes, scales = mx.array(c), mx.array(s)
    x, idx = mx.zeros((3, 16)), mx.zeros((3, 2), mx.int32)
    cases = [
        (dict(x=x.astype(mx.int32)), "x"),
        (dict(codes=codes[0]), "codes"),
        (dict(codes=codes.astype(mx.int32)), "codes"),
        (dict(indices=idx.astype(mx.int64)), "indices"),
        (dict(indices=idx.astype(mx.float32)), "indices"),
        (dict(indices=mx.zeros((3,), mx.int32)), "leading"),
        (dict(indices=mx.zeros((2, 2), mx.int32)), "leading"),
        (dict(indices=mx.zeros((3, 0), mx.int32)), "at least 1"),
        (dict(x=mx.zeros((3, 15))), "K"),
        (dict(scales=scales[:3]), "scales"),
        (dict(scales=scales[:, :, :1]), "scales"),
        (dict(scales=scales[0]), "scales"),
        (dict(block=(4, 4)), "scales"),
        (dict(block=(0, 8)), "block_size"),
        (dict(codes=mx.zeros((0, 8, 16), mx.uint8), scales=mx.zeros((0, 2, 2))), "empty"),
        (dict(indices=mx.array([[0, 4]] * 3, mx.int32)), "outside"),
        (dict(indices=mx.array([[0, -1]] * 3, mx.int32)), "outside"),
    ]
    for change, word in cases:
        a = {**dict(x=x, codes=codes, scales=scales, indices=idx, block=(4, 8)), **change}
        with pytest.raises(ValueError, match=OP) as e:
            tdm.gather_fp8_matmul(a["x"], a["codes"], a["scales"], a["indices"], block_size=a["block"])
        assert word in str(e.value), (change, str(e.value))


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("bad_index", [7, -4])
def test_lazy_out_of_range_index_fails_at_evaluation_without_reading(dtype, bad_index):
    """An index known only at evaluation is checked in the kernel before any weight byte is read:
    MLX 0.32.4 reports the kernel's std::invalid_argument as a RuntimeError naming the op, the result
    is never stale memory, and the process stays usable."""
    rng = np.random.default_rng(8)
    c, s = experts(rng, 3, 8, 16, (4, 8))
    bad = mx.array([[0, 2]], mx.int32) + mx.array([[0, bad_index - 2]], mx.int32)  # lazy
    y = tdm.gather_fp8_matmul(mx.ones((1, 16), DTYPES[dtype]), mx.array(c), mx.array(s), bad, block_size=(4, 8))
    with pytest.raises(RuntimeError, match=f"{OP}: index {bad_index}"):
        mx.eval(y)
    # Reading y afterwards never shows stale memory: either MLX kept the result marked evaluated (then
    # the kernel's NaN fill is what it holds) or it evaluates again and fails again (seen depending on
    # what ran before in the process).
    try:
        again = np.array(y.astype(mx.float32))
    except RuntimeError as e:
        assert f"{OP}: index {bad_index}" in str(e)
    else:
        assert np.isnan(again).all()
    ok = tdm.gather_fp8_matmul(mx.ones((1, 16)), mx.array(c), mx.array(s), mx.array([[1, 2]], mx.int32),
                               block_size=(4, 8))
    assert np.isfinite(np.array(ok)).all()


def test_empty_rows():
    c, s = experts(np.random.default_rng(9), 2, 8, 16, (4, 8))
    y = tdm.gather_fp8_matmul(mx.zeros((0, 16)), mx.array(c), mx.array(s), mx.zeros((0, 3), mx.int32),
                              block_size=(4, 8))
    assert y.shape == (0, 3, 8)
