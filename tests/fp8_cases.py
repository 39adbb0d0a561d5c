"""Shared strategies and helpers for the FP8 weight tests."""

import ml_dtypes
import mlx.core as mx
import numpy as np
from hypothesis import strategies as st

import mlx_tandem as tdm

DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}
NP_DTYPES = {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}
# Unit roundoff of the output dtype.
EPS = {"float32": 2.0**-24, "float16": 2.0**-11, "bfloat16": 2.0**-8}

RAGGED = st.sampled_from([1, 2, 3, 7, 8, 9, 16, 31, 65, 127, 200])


@st.composite
def block_sizes(draw, n, k):
    kind = draw(st.sampled_from(["128x128", "1xK", "1x32", "64x32", "any"]))
    if kind == "any":
        return draw(st.integers(1, n + 3)), draw(st.integers(1, k + 3))
    return {"128x128": (128, 128), "1xK": (1, k), "1x32": (1, 32), "64x32": (64, 32)}[kind]


def random_weight(rng, n, k, zero_rows=False):
    """A weight with a spread of magnitudes per block so block scales matter."""
    w = rng.standard_normal((n, k)) * np.exp2(rng.integers(-6, 6, size=(n, 1)))
    if zero_rows and n > 1:
        w[: n // 2] = 0.0
    return w.astype(np.float32)


def quantized(rng, n, k, block):
    codes, scales = tdm.quantize_fp8(mx.array(random_weight(rng, n, k)), block_size=block)
    return np.array(codes), np.array(scales)


def as_dtype(x, dtype):
    """x rounded to `dtype`, returned as float64 values (what the kernel actually sees)."""
    return np.asarray(x).astype(NP_DTYPES[dtype]).astype(np.float64)
