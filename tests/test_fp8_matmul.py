import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import mlx_tandem as tdm
import reference as ref
from fp8_cases import DTYPES, EPS, NP_DTYPES, RAGGED, as_dtype, block_sizes, quantized
from isa import PARAMS as ISAS

# Absolute rounding step of outputs that land in the dtype's subnormal range.
SUBNORMAL_STEP = {"float32": 2.0**-149, "float16": 2.0**-24, "bfloat16": 2.0**-133}
M_SIZES = st.sampled_from([1, 2, 3, 4, 5, 7, 8, 9, 13, 65, 127, 200])


def check_matmul(x, codes, scales, block, dtype, batch_shape=()):
    """Runs fp8_matmul on x rounded to dtype and compares with the float64 reference
    on the dequantized weights (not the original floats, so kernel bugs cannot
    hide in quantization error)."""
    k = codes.shape[1]
    x = as_dtype(x.reshape(*batch_shape, -1, k), dtype)
    xm = mx.array(x.astype(NP_DTYPES[dtype]))
    y = tdm.fp8_matmul(xm, mx.array(codes), mx.array(scales), block_size=block)
    assert y.dtype == DTYPES[dtype] and y.shape == (*x.shape[:-1], codes.shape[0])
    got = np.array(y.astype(mx.float32)).astype(np.float64)
    want = ref.fp8_matmul(x, codes, scales, block)
    # float32 accumulation error grows with K; the output is rounded to dtype.
    magnitude = np.abs(x) @ np.abs(ref.fp8_dequantize(codes, scales, block)).T
    tol = (k * 2.0**-23 + 2 * EPS[dtype]) * magnitude + SUBNORMAL_STEP[dtype]
    bad = np.abs(got - want) > tol
    i = tuple(np.argwhere(bad)[0]) if bad.any() else None
    assert i is None, f"at {i}: got {got[i]}, want {want[i]}, tol {tol[i]}"


@pytest.mark.parametrize("isa", ISAS)
@given(data=st.data(), m=M_SIZES, n=RAGGED, k=RAGGED, dtype=st.sampled_from(list(DTYPES)),
       seed=st.integers(0, 2**16))
def test_fp8_matmul_ragged(monkeypatch, isa, data, m, n, k, dtype, seed):
    monkeypatch.setenv("TANDEM_ISA", isa)
    block = data.draw(block_sizes(n, k))
    rng = np.random.default_rng(seed)
    codes, scales = quantized(rng, n, k, block)
    check_matmul(rng.standard_normal((m, k)), codes, scales, block, dtype)


@pytest.mark.parametrize("isa", ISAS)
@given(m=st.sampled_from([1, 2, 4, 9]), k=st.sampled_from([7, 128, 300]),
       x_exp=st.integers(-60, 60), s_exp=st.integers(-40, 40), seed=st.integers(0, 2**16))
def test_fp8_matmul_extreme_magnitudes(monkeypatch, isa, m, k, x_exp, s_exp, seed):
    """Kernels that decode with a power-of-two offset (AVX2 carries 2^-120) must
    keep full precision for tiny and huge activations and scales."""
    monkeypatch.setenv("TANDEM_ISA", isa)
    rng = np.random.default_rng(seed)
    block = (16, 64)
    codes, scales = quantized(rng, 37, k, block)
    scales = (scales * 2.0**s_exp).astype(np.float32)
    check_matmul(rng.standard_normal((m, k)) * 2.0**x_exp, codes, scales, block, "float32")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("m, n, k, block", [
    (1, 4096, 4096, (128, 128)),
    (4, 1000, 4096, (1, 4096)),
    (9, 513, 4096, (64, 32)),
    (200, 300, 4096, (128, 128)),
    (130, 4096, 129, (1, 32)),
])
def test_fp8_matmul_large(monkeypatch, isa, m, n, k, block):
    if isa == "scalar" and m * n * k > 2e8:
        pytest.skip("scalar path: covered by smaller shapes")
    monkeypatch.setenv("TANDEM_ISA", isa)
    rng = np.random.default_rng(m * n + k)
    codes, scales = quantized(rng, n, k, block)
    check_matmul(rng.standard_normal((m, k)), codes, scales, block, "float32")


@pytest.mark.parametrize("isa", ISAS)
@given(data=st.data(), m=st.integers(2, 32), n=RAGGED, k=RAGGED, dtype=st.sampled_from(list(DTYPES)),
       seed=st.integers(0, 2**16))
def test_fp8_matmul_rows_do_not_depend_on_the_batch(monkeypatch, isa, data, m, n, k, dtype, seed):
    """Up to 32 rows (continuous batching's decode step), each row's result is bit-identical to that
    row alone, so a sequence decodes the same tokens batched as by itself."""
    monkeypatch.setenv("TANDEM_ISA", isa)
    block = data.draw(block_sizes(n, k))
    rng = np.random.default_rng(seed)
    codes, scales = (mx.array(a) for a in quantized(rng, n, k, block))
    # rows of different magnitudes: the activation rescaling is shared by the batch
    x = rng.standard_normal((m, k)) * 2.0 ** rng.integers(-8, 9, (m, 1))
    xm = mx.array(x.astype(np.float32)).astype(DTYPES[dtype])
    batched = np.array(tdm.fp8_matmul(xm, codes, scales, block_size=block).astype(mx.float32))
    for i in data.draw(st.lists(st.integers(0, m - 1), min_size=1, max_size=4, unique=True)):
        alone = np.array(tdm.fp8_matmul(xm[i:i + 1], codes, scales, block_size=block).astype(mx.float32))
        np.testing.assert_array_equal(batched[i:i + 1], alone, err_msg=f"row {i} of {m}")


@pytest.mark.parametrize("batch_shape", [(2,), (2, 3), (1, 1, 1)])
def test_fp8_matmul_batch_dims(batch_shape):
    rng = np.random.default_rng(3)
    codes, scales = quantized(rng, 33, 70, (16, 32))
    m = 5
    x = rng.standard_normal((int(np.prod(batch_shape)) * m, 70))
    check_matmul(x, codes, scales, (16, 32), "bfloat16", batch_shape=batch_shape)


def test_fp8_matmul_strided_inputs():
    rng = np.random.default_rng(4)
    n, k, block = 40, 96, (8, 32)
    codes, scales = quantized(rng, n, k, block)
    xs = rng.standard_normal((k, 2 * 9)).astype(np.float32)
    x_view = mx.array(xs).T[::2]  # (9, k), transposed and strided
    codes_view = mx.array(np.ascontiguousarray(codes.T)).T  # (n, k) column-major view
    scales_view = mx.array(np.ascontiguousarray(scales.T)).T
    y = tdm.fp8_matmul(x_view, codes_view, scales_view, block_size=block)
    want = ref.fp8_matmul(xs.T[::2], codes, scales, block)
    np.testing.assert_allclose(np.array(y), want, rtol=1e-5, atol=1e-4)


def test_fp8_matmul_empty_rows():
    codes, scales = quantized(np.random.default_rng(5), 8, 16, (128, 128))
    y = tdm.fp8_matmul(mx.zeros((0, 16)), mx.array(codes), mx.array(scales))
    assert y.shape == (0, 8)


def test_fp8_matmul_composes_lazily():
    rng = np.random.default_rng(6)
    codes, scales = quantized(rng, 64, 64, (32, 32))
    x = mx.array(rng.standard_normal((3, 64)).astype(np.float32))
    y = tdm.fp8_matmul(tdm.fp8_matmul(x, mx.array(codes), mx.array(scales), block_size=(32, 32)) * 2,
                       mx.array(codes), mx.array(scales), block_size=(32, 32))
    w = ref.fp8_dequantize(codes, scales, (32, 32))
    want = (np.array(x, np.float64) @ w.T * 2) @ w.T
    np.testing.assert_allclose(np.array(y), want, rtol=1e-4, atol=1e-3)


C8 = mx.zeros((8, 16), dtype=mx.uint8)
S1 = mx.ones((1, 1))


@pytest.mark.parametrize("call, match", [
    (lambda: tdm.fp8_matmul(mx.zeros((2, 16), dtype=mx.int32), C8, S1), "fp8_matmul: x must be float16"),
    (lambda: tdm.fp8_matmul(mx.zeros((2, 15)), C8, S1), r"fp8_matmul: x's last dimension \(15\)"),
    (lambda: tdm.fp8_matmul(mx.zeros((2, 16)), C8.astype(mx.int8), S1), "fp8_matmul: codes must be uint8"),
    (lambda: tdm.fp8_matmul(mx.zeros((2, 16)), C8.reshape(2, 4, 16), S1), "fp8_matmul: codes must have 2"),
    (lambda: tdm.fp8_matmul(mx.zeros((2, 16)), C8, mx.ones((1, 2))), "fp8_matmul: scales shape"),
    (lambda: tdm.fp8_matmul(mx.zeros((2, 16)), C8, S1, block_size=(0, 16)), "fp8_matmul: block_size"),
    (lambda: tdm.fp8_matmul(mx.zeros((2, 16)), C8, S1, block_size=(8, 8)), r"expected \(1, 2\)"),
    (lambda: tdm.fp8_matmul(mx.zeros((2, 16)), C8, S1.astype(mx.bfloat16)), "scales must be float32"),
    (lambda: tdm.fp8_matmul(mx.zeros((2, 0)), mx.zeros((8, 0), dtype=mx.uint8), S1), "must not be empty"),
    (lambda: tdm.fp8_matmul(mx.array(1.0), C8, S1), "fp8_matmul: x must have at least one"),
])
def test_fp8_matmul_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_bad_isa_env_is_value_error(monkeypatch):
    monkeypatch.setenv("TANDEM_ISA", "sse9")
    with pytest.raises(ValueError, match="TANDEM_ISA"):
        tdm.fp8_matmul(mx.zeros((1, 16)), C8, S1)
