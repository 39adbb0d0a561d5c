"""The fused elementwise ops of a decoder layer (silu_mul, rope, rms_norm, add_rms_norm) against
float64 numpy references: every dtype, ragged shapes, large magnitudes, every ISA path, bad input."""

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, strategies as st

from mlx_tandem import _ext
import reference as ref
from fp8_cases import DTYPES, EPS, NP_DTYPES, as_dtype
from isa import PARAMS as ISAS

# Absolute rounding step of results in the dtype's subnormal range.
TINY = {"float32": 2.0**-149, "float16": 2.0**-24, "bfloat16": 2.0**-133}
SIZES = st.sampled_from([1, 2, 7, 8, 9, 31, 64, 127, 1000])
DT = st.sampled_from(list(DTYPES))


def to_mx(x, dtype):
    return mx.array(np.asarray(x).astype(NP_DTYPES[dtype]))


def to_np(a):
    return np.array(a.astype(mx.float32)).astype(np.float64)


@pytest.mark.parametrize("isa", ISAS)
@given(rows=SIZES, n=SIZES, dtype=DT, magnitude=st.sampled_from([1.0, 30.0, 300.0]), seed=st.integers(0, 2**16))
def test_silu_mul(monkeypatch, isa, rows, n, dtype, magnitude, seed):
    monkeypatch.setenv("TANDEM_ISA", isa)
    rng = np.random.default_rng(seed)
    g = as_dtype(rng.standard_normal((rows, n)) * magnitude, dtype)
    u = as_dtype(rng.standard_normal((rows, n)), dtype)
    got = _ext.silu_mul(to_mx(g, dtype), to_mx(u, dtype))
    assert got.dtype == DTYPES[dtype] and got.shape == (rows, n)
    want = ref.silu_mul(g, u)
    # float32 math (exp2 polynomial ~2 ulp, a division) then one rounding to dtype
    # float32 math: e^-|g| from an argument rounded relative to |g| (error grows with |g|), a
    # division, one rounding to dtype; below g ~ -87, e underflows and results under 2^-118 may flush
    tol = ((8 + np.abs(g)) * 2.0**-23 + EPS[dtype]) * np.abs(want) + max(TINY[dtype], 2.0**-118)
    err = np.abs(to_np(got) - want)
    assert np.all(err <= tol), f"worst at {np.unravel_index(np.argmax(err - tol), err.shape)}"


def test_silu_mul_large_arguments_do_not_overflow():
    g = mx.array([-1e30, -200.0, -89.0, 0.0, 89.0, 200.0, 1e30, -0.0, 3.0])
    got = np.array(_ext.silu_mul(g, mx.ones_like(g)))
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, ref.silu_mul(np.array(g), 1.0), rtol=1e-6, atol=1e-30)


@given(B=st.sampled_from([1, 2]), L=st.sampled_from([1, 3, 17]), H=st.sampled_from([1, 3, 8]),
       D=st.sampled_from([2, 8, 64, 80, 128]), partial=st.booleans(), offset=st.sampled_from([0, 5, 4000]),
       dtype=DT, seed=st.integers(0, 2**16))
def test_rope(B, L, H, D, partial, offset, dtype, seed):
    rng = np.random.default_rng(seed)
    dims = max(2, (D // 2) & ~1) if partial else D
    freqs = (1.0 / 10000.0 ** (np.arange(0, dims, 2) / dims)).astype(np.float32)
    x = as_dtype(rng.standard_normal((B, L, H, D)), dtype)
    got = _ext.rope(to_mx(x, dtype), mx.array(freqs), offset)
    assert got.dtype == DTYPES[dtype] and got.shape == x.shape
    want = ref.rope(x.transpose(0, 2, 1, 3), freqs.astype(np.float64), offset).transpose(0, 2, 1, 3)
    # the angle is rounded to float32 as in transformers: error ~ position * 2^-24
    atol = (offset + L) * 2.0**-22 + 4 * EPS[dtype]
    np.testing.assert_allclose(to_np(got), want, atol=atol, rtol=2 * EPS[dtype])


@given(offsets=st.lists(st.integers(0, 5000), min_size=1, max_size=6), L=st.sampled_from([1, 2, 5]),
       D=st.sampled_from([8, 64, 80]), dtype=DT, seed=st.integers(0, 2**16))
def test_rope_row_offsets(offsets, L, D, dtype, seed):
    """A ragged batch: row b at its own position; the reference per row, and bit-identical to rotating
    each row alone (a sequence decodes the same in a batch as by itself)."""
    rng = np.random.default_rng(seed)
    freqs = (1.0 / 10000.0 ** (np.arange(0, D, 2) / D)).astype(np.float32)
    x = to_mx(as_dtype(rng.standard_normal((len(offsets), L, 3, D)), dtype), dtype)
    got = _ext.rope(x, mx.array(freqs), row_offsets=mx.array(offsets, mx.int32))
    alone = mx.concatenate([_ext.rope(x[b:b + 1], mx.array(freqs), o) for b, o in enumerate(offsets)])
    assert mx.array_equal(got, alone).item()
    for b, o in enumerate(offsets):
        want = ref.rope(to_np(x[b:b + 1]).transpose(0, 2, 1, 3), freqs.astype(np.float64), o).transpose(0, 2, 1, 3)
        np.testing.assert_allclose(to_np(got[b:b + 1]), want, atol=(o + L) * 2.0**-22 + 4 * EPS[dtype],
                                   rtol=2 * EPS[dtype])


def test_rope_reads_strided_views():
    x = mx.random.normal((1, 4, 6, 32))
    freqs = mx.array((1.0 / 500.0 ** (np.arange(0, 32, 2) / 32)).astype(np.float32))
    view = x.transpose(0, 2, 1, 3)[:, ::2]  # (1, 3, 4, 32), not contiguous
    want = ref.rope(np.array(view).transpose(0, 2, 1, 3), np.array(freqs), 9).transpose(0, 2, 1, 3)
    np.testing.assert_allclose(np.array(_ext.rope(view, freqs, 9)), want, atol=1e-5)


@given(rows=SIZES, D=SIZES, dtype=DT, wdtype=DT, eps=st.sampled_from([1e-6, 1e-5, 0.1]),
       scale=st.sampled_from([1e-3, 1.0, 1e3]), seed=st.integers(0, 2**16))
def test_rms_norm(rows, D, dtype, wdtype, eps, scale, seed):
    rng = np.random.default_rng(seed)
    x = as_dtype(rng.standard_normal((rows, D)) * scale, dtype)
    w = as_dtype(rng.standard_normal(D), wdtype)
    got = _ext.rms_norm(to_mx(x, dtype), to_mx(w, wdtype), eps)
    assert got.dtype == (mx.zeros(1, DTYPES[dtype]) + mx.zeros(1, DTYPES[wdtype])).dtype  # promoted
    out = {DTYPES[k]: k for k in DTYPES}[got.dtype]
    np.testing.assert_allclose(to_np(got), ref.rms_norm(x, w, eps), rtol=8 * EPS["float32"] + 2 * EPS[out],
                               atol=TINY[out])


@given(rows=SIZES, D=SIZES, dtype=DT, seed=st.integers(0, 2**16))
def test_add_rms_norm(rows, D, dtype, seed):
    rng = np.random.default_rng(seed)
    x, r = (as_dtype(rng.standard_normal((rows, D)), dtype) for _ in range(2))
    w = as_dtype(rng.standard_normal(D), dtype)
    h, y = _ext.add_rms_norm(to_mx(x, dtype), to_mx(r, dtype), to_mx(w, dtype), 1e-5)
    # h is x + r rounded to the dtype, exactly what MLX's add gives; y is the norm of that h
    np.testing.assert_array_equal(to_np(h), to_np(to_mx(x, dtype) + to_mx(r, dtype)))
    np.testing.assert_allclose(to_np(y), ref.rms_norm(to_np(h), w, 1e-5), rtol=1e-6 + 2 * EPS[dtype],
                               atol=TINY[dtype])


def test_ops_are_public():
    import mlx_tandem as tdm

    assert (tdm.silu_mul, tdm.rope, tdm.rms_norm, tdm.add_rms_norm) == (
        _ext.silu_mul, _ext.rope, _ext.rms_norm, _ext.add_rms_norm)


X = mx.zeros((2, 8))


@pytest.mark.parametrize("call, match", [
    (lambda: _ext.silu_mul(X, mx.zeros((2, 9))), "silu_mul: gate and up must have the same shape"),
    (lambda: _ext.silu_mul(X.astype(mx.int32), X), "silu_mul: gate must be float16"),
    (lambda: _ext.rope(X, mx.ones((4,)), 0), "rope: x must have 4"),
    (lambda: _ext.rope(mx.zeros((1, 1, 1, 8)), mx.ones((5,)), 0), "rope: inv_freq must have between 1 and D/2"),
    (lambda: _ext.rope(mx.zeros((1, 1, 1, 8)), mx.ones((4,), mx.float16), 0), "rope: inv_freq must be float32"),
    (lambda: _ext.rope(mx.zeros((1, 1, 1, 8)), mx.ones((4,)), -1), "rope: offset must be >= 0"),
    (lambda: _ext.rope(mx.zeros((2, 1, 1, 8)), mx.ones((4,)), row_offsets=mx.array([0, -3], mx.int32)),
     "rope: row_offsets must be >= 0, got -3 at row 1"),
    (lambda: _ext.rope(mx.zeros((2, 1, 1, 8)), mx.ones((4,)), row_offsets=mx.array([0], mx.int32)),
     r"rope: row_offsets needs one entry per batch row \(2\)"),
    (lambda: _ext.rope(mx.zeros((2, 1, 1, 8)), mx.ones((4,)), row_offsets=mx.array([0, 1], mx.int64)),
     "rope: row_offsets must be int32"),
    (lambda: _ext.rope(mx.zeros((2, 1, 1, 8)), mx.ones((4,)), 3, row_offsets=mx.array([0, 1], mx.int32)),
     "rope: give either offset or row_offsets"),
    (lambda: _ext.rms_norm(X, mx.ones((7,)), 1e-5), r"rms_norm: weight must have shape \(8,\)"),
    (lambda: _ext.rms_norm(X, mx.ones((8,)), -1.0), "rms_norm: eps must be >= 0"),
    (lambda: _ext.add_rms_norm(X, mx.zeros((8,)), mx.ones((8,)), 1e-5), "add_rms_norm: x and residual must"),
    (lambda: _ext.rms_norm(mx.zeros((2, 0)), mx.ones((0,)), 1e-5), "rms_norm: x must have a non-empty"),
    (lambda: _ext.silu_mul(X, X.astype(mx.uint8)), "silu_mul: up must be float16"),
    (lambda: _ext.rope(mx.zeros((1, 1, 1, 8)), mx.ones((1, 4)), 0), "rope: inv_freq must have 1"),
    (lambda: _ext.rope(mx.zeros((1, 1, 1, 8), mx.int32), mx.ones((4,)), 0), "rope: x must be float16"),
    (lambda: _ext.rms_norm(X.astype(mx.int32), mx.ones((8,)), 1e-5), "rms_norm: x must be float16"),
    (lambda: _ext.rms_norm(X, mx.ones((8,), mx.int32), 1e-5), "rms_norm: weight must be float16"),
    (lambda: _ext.add_rms_norm(X, X.astype(mx.int32), mx.ones((8,)), 1e-5), "add_rms_norm: residual must be float16"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
