"""The Metal kernels on a real Apple GPU (mx.gpu stream), against the numpy references. Runs only where
MLX has a Metal device and the extension was built with the metallib (the macOS workflow); everywhere
else the kernels are covered through the emulator (tests/test_metal_fp8.py, test_metal_attention.py)."""
import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import mlx_tandem as tdm
import reference as ref
from fp8_cases import DTYPES, EPS, NP_DTYPES, RAGGED, block_sizes, random_weight
from metal_kernels import HEAD_DIMS

SUBNORMAL_STEP = {"float32": 2.0**-149, "float16": 2.0**-24, "bfloat16": 2.0**-133}
pytestmark = pytest.mark.skipif(not mx.metal.is_available(), reason="needs a Metal GPU (macOS, Apple silicon)")


def to_mx(a, dtype):
    return mx.array(np.asarray(a).astype(NP_DTYPES[dtype]))


def as_f64(a):
    return np.array(a.astype(mx.float32)).astype(np.float64)


@given(data=st.data(), m=st.sampled_from([1, 2, 3, 5, 8, 9, 33, 100]), n=RAGGED,
       k=st.sampled_from([1, 16, 31, 200, 512, 1040]), dtype=st.sampled_from(list(DTYPES)), sliced=st.booleans(),
       seed=st.integers(0, 2**16))
@settings(max_examples=20)
def test_fp8_matmul_on_gpu(data, m, n, k, dtype, sliced, seed):
    """GEMV and GEMM, both code-load paths; `sliced` passes the codes as rows 1.. of a bigger array, so
    they start off a 16-byte boundary unless K is a multiple of 16."""
    block = data.draw(block_sizes(n, k))
    rng = np.random.default_rng(seed)
    codes, scales = ref.fp8_quantize(random_weight(rng, n, k), block)
    x = rng.standard_normal((m, k)).astype(NP_DTYPES[dtype])
    c = mx.array(np.concatenate([codes[:1] ^ 0x55, codes]))[1:] if sliced else mx.array(codes)
    y = tdm.fp8_matmul(to_mx(x, dtype), c, mx.array(scales), block_size=block, stream=mx.gpu)
    want = ref.fp8_matmul(x.astype(np.float64), codes, scales, block)
    magnitude = np.abs(x.astype(np.float64)) @ np.abs(ref.fp8_dequantize(codes, scales, block)).T
    tol = (k * 2.0**-22 + 2 * EPS[dtype]) * magnitude + SUBNORMAL_STEP[dtype]
    assert np.all(np.abs(as_f64(y) - want) <= tol)


def cache_view(rng, b, h, lk, d, dtype):
    """k/v as cache[:, :, :lk] of a bigger buffer whose stale tail is NaN."""
    buf = np.full((b, h, lk + 17, d), np.nan, np.float32)
    buf[:, :, :lk] = rng.standard_normal((b, h, lk, d))
    return to_mx(buf, dtype)[:, :, :lk], buf[:, :, :lk]


@pytest.mark.parametrize("dims", HEAD_DIMS)
@pytest.mark.parametrize("lq,lk", [(1, 45), (3, 1300), (8, 200), (37, 70)])  # decode, split decode, prefill
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_fused_attention_on_gpu(dims, lq, lk, dtype):
    dk, dv = dims
    rng = np.random.default_rng(lq * lk + dk)
    b, hkv, g = 2, 2, 4
    qn = rng.standard_normal((b, lq, hkv * g, dk)).astype(np.float32)
    q = to_mx(qn, dtype).transpose(0, 2, 1, 3)  # the (B, L, H, D) -> (B, H, L, D) view models make
    k, kn = cache_view(rng, b, hkv, lk, dk, dtype)
    v, vn = cache_view(rng, b, hkv, lk, dv, dtype)
    for causal in (True, False):
        o = tdm.fused_attention(q, k, v, causal=causal, stream=mx.gpu)
        qr = qn.astype(NP_DTYPES[dtype]).transpose(0, 2, 1, 3)
        want = ref.attention(qr, kn.astype(NP_DTYPES[dtype]), vn.astype(NP_DTYPES[dtype]), None, causal)
        tol = (2 * EPS[dtype] + 1e-4) * np.abs(vn).max()
        assert np.all(np.abs(as_f64(o) - want) <= tol), (dims, lq, lk, dtype, causal)


@pytest.mark.parametrize("T,k", [(1, 8), (2, 3), (40, 8)])  # decode GEMV, few rows, GEMM
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_gather_fp8_matmul_on_gpu(T, k, dtype):
    rng = np.random.default_rng(T * k)
    E, n, K, block = 16, 70, 300, (32, 128)
    parts = [ref.fp8_quantize(random_weight(rng, n, K), block) for _ in range(E)]
    codes, scales = np.stack([c for c, _ in parts]), np.stack([s for _, s in parts])
    idx = np.stack([rng.permutation(E)[:k] for _ in range(T)]).astype(np.int32)
    x = rng.standard_normal((T, K)).astype(NP_DTYPES[dtype])
    y = tdm.gather_fp8_matmul(to_mx(x, dtype), mx.array(codes), mx.array(scales), mx.array(idx), block_size=block,
                              stream=mx.gpu)
    want = ref.gather_fp8_matmul(x.astype(np.float64), codes, scales, idx, block)
    tol = (K * 2.0**-22 + 2 * EPS[dtype]) * np.abs(want).max() + SUBNORMAL_STEP[dtype]
    assert np.all(np.abs(as_f64(y) - want) <= tol)
