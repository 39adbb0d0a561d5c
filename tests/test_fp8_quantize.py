import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, strategies as st

import mlx_tandem as tdm
import reference as ref
from fp8_cases import DTYPES, NP_DTYPES, RAGGED, block_sizes, random_weight


@given(data=st.data(), n=RAGGED, k=RAGGED, dtype=st.sampled_from(list(DTYPES)), seed=st.integers(0, 2**16))
def test_quantize_matches_reference(data, n, k, dtype, seed):
    block = data.draw(block_sizes(n, k))
    w = random_weight(np.random.default_rng(seed), n, k, zero_rows=data.draw(st.booleans()))
    w = w.astype(NP_DTYPES[dtype])
    codes, scales = tdm.quantize_fp8(mx.array(w), block_size=block)
    want_codes, want_scales = ref.fp8_quantize(w.astype(np.float32), block)
    np.testing.assert_array_equal(np.array(scales), want_scales)
    np.testing.assert_array_equal(np.array(codes), want_codes)
    s = np.array(scales)
    assert (s > 0).all() and np.isfinite(s).all()

    # Error bound: half an E4M3 ulp relative (2^-4) for normals, 2^-10 * scale absolute below.
    deq = np.array(tdm.dequantize_fp8(codes, scales, block_size=block, dtype=mx.float32))
    scale_el = ref.block_expand(s, w.shape, block)
    w64 = w.astype(np.float64)
    bound = np.maximum(2.0**-4 * np.abs(w64), 2.0**-10 * scale_el) * (1 + 1e-6)
    assert (np.abs(deq - w64) <= bound).all()


@given(data=st.data(), n=RAGGED, k=RAGGED, dtype=st.sampled_from(list(DTYPES)), seed=st.integers(0, 2**16))
def test_dequantize_matches_reference(data, n, k, dtype, seed):
    block = data.draw(block_sizes(n, k))
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 256, size=(n, k), dtype=np.uint8)
    codes[(codes & 0x7F) == 0x7F] = 0x42  # weights never hold NaN codes
    rb, cb = -(-n // block[0]), -(-k // block[1])
    scales = np.exp2(rng.uniform(-10, 4, size=(rb, cb))).astype(np.float32)
    got = tdm.dequantize_fp8(mx.array(codes), mx.array(scales), block_size=block, dtype=DTYPES[dtype])
    want = ref.fp8_dequantize(codes, scales, block).astype(np.float32).astype(NP_DTYPES[dtype])
    np.testing.assert_array_equal(np.array(got.astype(mx.float32)), want.astype(np.float32))


def test_zero_blocks_get_unit_scale_and_zero_codes():
    w = np.zeros((130, 260), np.float32)
    w[129, 259] = 3.0
    codes, scales = tdm.quantize_fp8(mx.array(w))
    assert scales.shape == (2, 3)
    s = np.array(scales)
    assert s[1, 2] == np.float32(3.0) / np.float32(448.0)
    assert (np.delete(s.ravel(), 5) == 1.0).all()
    c = np.array(codes)
    assert c[129, 259] == 0x7E and np.count_nonzero(c) == 1


def test_default_block_is_128():
    w = mx.array(np.ones((256, 384), np.float32))
    codes, scales = tdm.quantize_fp8(w)
    assert scales.shape == (2, 3) and codes.dtype == mx.uint8
    np.testing.assert_array_equal(np.array(tdm.dequantize_fp8(codes, scales, dtype=mx.float32)), 1.0)


W = mx.zeros((4, 8))
C = mx.zeros((4, 8), dtype=mx.uint8)


@pytest.mark.parametrize("call, match", [
    (lambda: tdm.quantize_fp8(mx.zeros((4, 8), dtype=mx.int32)), "quantize_fp8: w must be float16"),
    (lambda: tdm.quantize_fp8(mx.zeros((8,))), "quantize_fp8: w must have 2 dimensions"),
    (lambda: tdm.quantize_fp8(W, block_size=(0, 4)), "quantize_fp8: block_size must be two positive"),
    (lambda: tdm.quantize_fp8(W, block_size=(4, -1)), "quantize_fp8: block_size"),
    (lambda: tdm.quantize_fp8(mx.zeros((0, 8))), "quantize_fp8: w must not be empty"),
    (lambda: tdm.dequantize_fp8(C, mx.ones((2, 2)), block_size=(4, 4)), "dequantize_fp8: scales shape"),
    (lambda: tdm.dequantize_fp8(C, mx.ones((1, 1), dtype=mx.float16), block_size=(4, 8)),
     "dequantize_fp8: scales must be float32"),
    (lambda: tdm.dequantize_fp8(W, mx.ones((1, 1)), block_size=(4, 8)), "dequantize_fp8: codes must be uint8"),
    (lambda: tdm.dequantize_fp8(C, mx.ones((1, 1)), block_size=(4, 8), dtype=mx.int8), "dequantize_fp8: dtype"),
    (lambda: tdm.dequantize_fp8(C, mx.ones((1,)), block_size=(4, 8)), "dequantize_fp8: scales must have 2"),
])
def test_quantize_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
