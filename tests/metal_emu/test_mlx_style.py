"""MLX-style source (bodies in .h, instantiate_kernel, kargs struct, function constants,
METAL_FUNC, program-scope constant tables, vector loads through reinterpret_cast) runs correctly."""
import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

CODEBOOK = np.array([0, .5, 1, 1.5, 2, 3, 4, 6, -0., -.5, -1, -1.5, -2, -3, -4, -6], np.float64)
DTYPES = {"float": (np.float32, 2), "half": (np.float16, 4), "bfloat16": (ml_dtypes.bfloat16, 2)}
KARGS = np.dtype([("n_rows", "<u4"), ("n_cols", "<u4"), ("scale", "<f4")])


def reference(codes, x, scale, bias, y0):
    nib = np.stack([codes & 0xF, codes >> 4], axis=-1).reshape(codes.shape[0], -1)
    w = CODEBOOK[nib]
    r = np.clip((w @ x.astype(np.float64)) * scale, -np.inf, np.inf)
    if bias is not None:
        r = r + bias.astype(np.float64)
    if y0 is not None:
        r = r + y0.astype(np.float64)
    return r


@given(n=st.integers(1, 70), k=st.integers(1, 40).map(lambda c: 32 * c), dtype=st.sampled_from(sorted(DTYPES)),
       use_bias=st.booleans(), acc=st.booleans(), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=20)
def test_toy_gemv_matches_numpy_and_reads_codes_once(mlx_style, n, k, dtype, use_bias, acc, seed):
    np_t, rows_per_tg = DTYPES[dtype]
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 256, (n, k // 2), dtype=np.uint8)
    x = rng.standard_normal(k).astype(np_t)
    bias = rng.standard_normal(n).astype(np_t) if use_bias else None
    y = rng.standard_normal(n).astype(np_t)
    y0 = y.copy() if acc else None
    args = np.array([(n, k, 0.25)], KARGS)
    bufs = {0: codes, 1: x, 2: y, 3: args.tobytes()}
    if use_bias:
        bufs[4] = bias
    ntg = (n + rows_per_tg - 1) // rows_per_tg
    stats = mlx_style.dispatch(f"toy_gemv_{dtype}_{rows_per_tg}", grid=(ntg,), threadgroup=(32 * rows_per_tg,),
                               mode="threadgroups", buffers=bufs,
                               function_constants={0: use_bias, "accumulate": acc})
    expect = reference(codes, x, 0.25, bias, y0)
    tol = {"float": 1e-5, "half": 2e-3, "bfloat16": 1e-2}[dtype]
    np.testing.assert_allclose(y.astype(np.float64), expect, rtol=tol, atol=tol * np.sqrt(k))
    assert stats.bytes_read[0] == codes.nbytes  # the streamed operand is read exactly once
    assert stats.bytes_read[1] == x.nbytes * n  # the shared operand: re-read once per row
    assert stats.bytes_written[2] == y.nbytes
    assert stats.bytes_read.get(4, 0) == (bias.nbytes if use_bias else 0)


def test_unknown_function_constant_is_a_value_error(mlx_style):
    with pytest.raises(ValueError, match="function constant"):
        mlx_style.dispatch("toy_gemv_float_2", grid=(1,), threadgroup=(64,), mode="threadgroups",
                           function_constants={"nope": True})
