"""The FP8 GEMV/GEMM Metal kernels (metal/fp8_gemv.h, fp8_gemm.h) run through the Metal-on-CPU emulator
with exactly the launch plan_fp8_matmul produces for eval_gpu, against the numpy reference."""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import reference as ref
from fp8_cases import EPS, RAGGED, block_sizes, random_weight
from metal_kernels import MX_DTYPES, NP_DTYPES, check_resources, dispatch, library, plan_fp8, require_emulator
from mlx_tandem import _ext

pytestmark = pytest.mark.usefixtures("emulator")
SUBNORMAL_STEP = {"float32": 2.0**-149, "float16": 2.0**-24, "bfloat16": 2.0**-133}
DTYPE_NAMES = list(NP_DTYPES)


@pytest.fixture(scope="module")
def emulator():
    require_emulator()


def run_matmul(m, n, k, block, dtype, seed, check=True):
    """Quantizes a random weight, runs the planned kernel, checks y; returns (plan, stats, buffers)."""
    rng = np.random.default_rng(seed)
    codes, scales = ref.fp8_quantize(random_weight(rng, n, k), block)
    x = rng.standard_normal((m, k)).astype(NP_DTYPES[dtype])
    y = np.full((m, n), np.nan, NP_DTYPES[dtype])  # loud: every element must be written
    plan = plan_fp8(m, n, k, block, dtype)
    lib = library("fp8_gemv" if plan["kernel"].startswith("fp8_gemv") else "fp8_gemm")
    stats = dispatch(lib, plan, {0: x, 1: codes, 2: scales, 3: y})
    if check:
        xs = x.astype(np.float64)
        want = ref.fp8_matmul(xs, codes, scales, block)
        magnitude = np.abs(xs) @ np.abs(ref.fp8_dequantize(codes, scales, block)).T
        # float32 accumulation (error grows with K), output rounded to dtype
        tol = (k * 2.0**-23 + 2 * EPS[dtype]) * magnitude + SUBNORMAL_STEP[dtype]
        got = y.astype(np.float64)
        bad = ~(np.abs(got - want) <= tol)
        i = tuple(np.argwhere(bad)[0]) if bad.any() else None
        assert i is None, f"{plan['kernel']} at {i}: got {got[i]}, want {want[i]}, tol {tol[i]}"
    return plan, stats, (x, codes, scales, y)


@given(data=st.data(), m=st.integers(1, 8), n=RAGGED, k=st.sampled_from([1, 3, 16, 31, 48, 200, 512, 560, 1040]),
       dtype=st.sampled_from(DTYPE_NAMES), seed=st.integers(0, 2**16))
def test_gemv_matches_reference(data, m, n, k, dtype, seed):
    block = data.draw(block_sizes(n, k))
    plan, _, _ = run_matmul(m, n, k, block, dtype, seed)
    assert plan["kernel"].startswith("fp8_gemv_")


@given(data=st.data(), m=st.sampled_from([9, 31, 33, 70]), n=RAGGED, k=st.sampled_from([1, 16, 33, 64, 200]),
       dtype=st.sampled_from(DTYPE_NAMES), seed=st.integers(0, 2**16))
@settings(max_examples=15)
def test_gemm_matches_reference(data, m, n, k, dtype, seed):
    block = data.draw(block_sizes(n, k))
    plan, _, _ = run_matmul(m, n, k, block, dtype, seed)
    assert plan["kernel"].startswith("fp8_gemm_")


# Every kernel the planner can select, each reached through the planner with a ragged shape.
GEMV_CASES = [(dt, m, al) for dt in DTYPE_NAMES for m in (1, 2, 3, 5) for al in (True, False)]
GEMM_CASES = [(dt, al) for dt in DTYPE_NAMES for al in (True, False)]


@pytest.mark.parametrize("dtype,m,aligned", GEMV_CASES)
def test_every_gemv_instantiation(dtype, m, aligned):
    n, k, block = (45, 1024 + 16, (8, 48)) if aligned else (45, 203, (3, 40))
    mt = {1: 1, 2: 2, 3: 4, 5: 8}[m]
    plan, _, _ = run_matmul(m, n, k, block, dtype, seed=m)
    assert plan["kernel"] == f"fp8_gemv_{dtype}_m{mt}_{'a16' if aligned else 'any'}"


@pytest.mark.parametrize("dtype,aligned", GEMM_CASES)
def test_every_gemm_instantiation(dtype, aligned):
    m, n, k, block = (41, 70, 160, (128, 32)) if aligned else (41, 70, 150, (5, 7))
    plan, _, _ = run_matmul(m, n, k, block, dtype, seed=1)
    assert plan["kernel"] == f"fp8_gemm_{dtype}_{'a16' if aligned else 'any'}"


def test_planned_kernels_exist_and_respect_limits():
    gemv, gemm = library("fp8_gemv"), library("fp8_gemm")
    seen = set()
    for m, n, k, block, dt in itertools.product([1, 2, 3, 4, 5, 8, 9, 64, 4096], [1, 7, 4096, 28672],
                                                [1, 16, 7168, 8192], [(1, 1), (128, 128), (1, 32), (3, 7)],
                                                DTYPE_NAMES):
        plan = plan_fp8(m, n, k, block, dt)
        check_resources(plan)
        assert plan["kernel"] in (gemv if m <= 8 else gemm).kernels
        seen.add(plan["kernel"])
    assert seen == set(gemv.kernels) | set(gemm.kernels)  # no dead instantiations


@pytest.mark.parametrize("m,dtype", [(1, "float16"), (4, "bfloat16"), (8, "float32")])
def test_gemv_traffic_reads_codes_once(m, dtype):
    """Llama-like row length: the codes are read exactly once; block scales once per block and row group;
    x once per row group (kGemvRows rows; the GPU serves those re-reads from cache)."""
    n, k, block = 256, 8192, (128, 128)
    plan, stats, (x, codes, scales, y) = run_matmul(m, n, k, block, dtype, seed=7)
    assert stats.bytes_read[1] == codes.nbytes
    row_groups = -(-n // 4)
    assert stats.bytes_read[0] == x.nbytes * row_groups
    assert stats.bytes_read[2] == scales.nbytes * (block[0] // 4)  # each row group reads its blocks' scales
    assert stats.bytes_written[3] == y.nbytes
    assert not stats.bytes_written.get(1) and not stats.bytes_written.get(0)


def test_gemv_general_path_reads_codes_once():
    _, stats, (_, codes, scales, _) = run_matmul(3, 77, 301, (5, 9), "float16", seed=3)
    assert stats.bytes_read[1] == codes.nbytes


def test_gemm_realistic_shape():
    _, stats, (x, codes, _, _) = run_matmul(96, 256, 1024, (128, 128), "bfloat16", seed=5)
    assert stats.bytes_read[1] == codes.nbytes * -(-96 // 32)  # once per row tile of x


@pytest.mark.parametrize("args,match", [((0, 4, 4, (1, 1)), "positive"), ((1, 4, 4, (0, 1)), "block"),
                                        ((1, -1, 4, (1, 1)), "positive")])
def test_plan_rejects_bad_sizes(args, match):
    with pytest.raises(ValueError, match=match):
        plan_fp8(*args, "float32")


def test_unaligned_codes_take_the_byte_load_kernel():
    """eval_gpu passes codes_aligned=False when the codes start off a 16-byte boundary (a sliced weight)."""
    assert plan_fp8(1, 64, 256, (128, 128), "float16")["kernel"].endswith("_a16")
    plan = _ext.plan_fp8_matmul(1, 64, 256, (128, 128), MX_DTYPES["float16"], codes_aligned=False)
    assert plan["kernel"] == "fp8_gemv_float16_m1_any"
    plan = _ext.plan_fp8_matmul(40, 64, 256, (128, 128), MX_DTYPES["float16"], codes_aligned=False)
    assert plan["kernel"] == "fp8_gemm_float16_any"


def test_plan_rejects_bad_dtype():
    import mlx.core as mx
    with pytest.raises(ValueError, match="dtype"):
        _ext.plan_fp8_matmul(1, 4, 4, (1, 1), mx.int32)
