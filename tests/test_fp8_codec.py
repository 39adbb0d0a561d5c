import ml_dtypes
import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

import mlx_tandem as tdm
import reference as ref

ALL_CODES = np.arange(256, dtype=np.uint8)
MX_DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}
NP_DTYPES = {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}


def test_reference_decode_matches_ml_dtypes():
    want = ALL_CODES.view(ml_dtypes.float8_e4m3fn).astype(np.float64)
    np.testing.assert_array_equal(ref.fp8_decode(ALL_CODES), want)


@pytest.mark.parametrize("dtype", MX_DTYPES)
def test_decode_all_codes_exact(dtype):
    got = np.array(tdm.from_fp8(mx.array(ALL_CODES), dtype=MX_DTYPES[dtype]).astype(mx.float32))
    want = ALL_CODES.view(ml_dtypes.float8_e4m3fn).astype(np.float32)
    np.testing.assert_array_equal(got, want)  # NaN positions must match too
    assert np.isnan(got[[0x7F, 0xFF]]).all() and np.isfinite(np.delete(got, [0x7F, 0xFF])).all()


def test_reference_encode_matches_ml_dtypes_in_range():
    x = np.random.default_rng(0).standard_normal(100_000).astype(np.float32) * 100
    x = x[np.abs(x) <= 448]
    want = x.astype(ml_dtypes.float8_e4m3fn).view(np.uint8)
    np.testing.assert_array_equal(ref.fp8_encode(x), want)


def _encode(x, dtype):
    return np.array(tdm.to_fp8(mx.array(np.asarray(x, NP_DTYPES[dtype]))))


def _special_values():
    grid = ref.fp8_decode(np.arange(0x7F, dtype=np.uint8))
    mids = (grid[:-1] + grid[1:]) / 2  # exact ties, representable in float32
    return np.concatenate([
        grid, mids, np.nextafter(mids, 0), np.nextafter(mids, 1000),
        [447.0, 448.0, 449.0, 463.9, 464.0, 464.1, 480.0, 500.0, 1e6, 3.4e38,
         np.inf, -np.inf, np.nan, -np.nan, 0.0, -0.0, 2.0**-10, 2.0**-11, 1e-30,
         2.0**-9 * 1.5, 2.0**-9 * 2.5, 2.0**-6 - 2.0**-12],
    ]).astype(np.float32)


@pytest.mark.parametrize("dtype", ["float32"])
def test_encode_specials_bit_exact(dtype):
    x = _special_values()
    x = np.concatenate([x, -x])
    np.testing.assert_array_equal(_encode(x, dtype), ref.fp8_encode(x))


@given(hnp.arrays(np.float32, st.integers(1, 300),
                  elements=st.floats(width=32, allow_nan=True, allow_infinity=True, allow_subnormal=True)))
def test_encode_float32_bit_exact(x):
    np.testing.assert_array_equal(_encode(x, "float32"), ref.fp8_encode(x))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@given(bits=hnp.arrays(np.uint16, st.integers(1, 300)))
def test_encode_half_types_bit_exact(dtype, bits):
    x = bits.view(NP_DTYPES[dtype])  # every bit pattern: subnormals, inf, NaN included
    np.testing.assert_array_equal(_encode(x, dtype), ref.fp8_encode(x.astype(np.float64)))


def test_encode_non_contiguous_and_shape():
    base = np.random.default_rng(1).standard_normal((6, 8)).astype(np.float32) * 50
    xt = mx.array(base).T[::2]  # transposed and sliced view
    got = np.array(tdm.to_fp8(xt))
    assert got.shape == (4, 6)
    np.testing.assert_array_equal(got, ref.fp8_encode(base.T[::2]))


def test_roundtrip_every_code():
    finite = np.delete(ALL_CODES, [0x7F, 0xFF])
    back = tdm.to_fp8(tdm.from_fp8(mx.array(finite), dtype=mx.float32))
    want = np.where(finite == 0x80, 0x80, finite)  # -0 stays -0
    np.testing.assert_array_equal(np.array(back), want)


@pytest.mark.parametrize("call, match", [
    (lambda: tdm.to_fp8(mx.array([1, 2], dtype=mx.int32)), "to_fp8: x must be float16"),
    (lambda: tdm.from_fp8(mx.array([1.0])), "from_fp8: codes must be uint8"),
    (lambda: tdm.from_fp8(mx.array([1], dtype=mx.uint8), dtype=mx.int32), "from_fp8: dtype"),
])
def test_codec_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
