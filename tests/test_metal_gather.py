"""The expert-gathered FP8 matmul on Metal (metal/gather_route.h, gather_gemv.h, gather_gemm.h) run through
the Metal-on-CPU emulator with exactly the launches plan_gather_fp8_matmul produces for eval_gpu (the route,
then the GEMV or the GEMM), against a float64 numpy reference."""
import itertools

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import reference as ref
from fp8_cases import EPS, block_sizes, random_weight
from metal_kernels import NP_DTYPES, check_resources, dispatch, library, require_emulator
from mlx_tandem import _ext

pytestmark = pytest.mark.usefixtures("emulator")
SUBNORMAL_STEP = {"float32": 2.0**-149, "float16": 2.0**-24, "bfloat16": 2.0**-133}
DTYPE_NAMES = list(NP_DTYPES)
STALE = -4096.0  # the output is prefilled with this: every row must be overwritten (result or NaN)
BAD_EXPERTS = [-1, -(2**31), 2**31 - 1]  # plus E itself


@pytest.fixture(scope="module")
def emulator():
    require_emulator()


def gather_fp8_matmul_ref(x, codes, scales, indices, block):
    """out (T, k, N) float64: out[t, j] = x[t] @ dequant(codes[e], scales[e]).T with e = indices[t, j];
    NaN rows where e is out of range (what the Metal kernels write; the CPU op raises). Also returns
    |x| @ |W|^T per element, the scale of the float32 rounding error."""
    x = np.asarray(x, np.float64)
    T, k = indices.shape
    E, N, _ = codes.shape
    out = np.full((T, k, N), np.nan)
    mag = np.zeros((T, k, N))
    w = {}
    for t, j in itertools.product(range(T), range(k)):
        e = int(indices[t, j])
        if 0 <= e < E:
            if e not in w:
                w[e] = ref.fp8_dequantize(codes[e], scales[e], block)
            out[t, j] = x[t] @ w[e].T
            mag[t, j] = np.abs(x[t]) @ np.abs(w[e]).T
    return out, mag


def plan_gather(T, k, E, N, K, block, dtype, **kw):
    return _ext.plan_gather_fp8_matmul(T, k, E, N, K, block, getattr(mx, dtype), **kw)


def experts(rng, E, N, K, block, n_stored=None):
    """Quantized random experts (E, N, K) and scales; only the first n_stored are materialised (a shorter
    buffer: reading any later expert is an emulator bounds error)."""
    n = E if n_stored is None else n_stored
    pairs = [ref.fp8_quantize(random_weight(rng, N, K), block) for _ in range(n)]
    return np.stack([c for c, _ in pairs]), np.ascontiguousarray(np.stack([s for _, s in pairs]))


def run_gather(x, codes, scales, indices, E, block, dtype, check=True, **options):
    """Runs the planned launches; checks out against the reference; returns (plan, [stats], out, route)."""
    T, K = x.shape
    k = indices.shape[1]
    N = codes.shape[1]
    plan = plan_gather(T, k, E, N, K, block, dtype)
    out = np.full((T, k, N), STALE, NP_DTYPES[dtype])
    route = np.full(plan["route_elems"], -7, np.int32)  # loud: unwritten entries are bad indices
    route_launch, mm = plan["launches"]
    st_route = dispatch(library("gather_route"), route_launch, {0: indices, 1: out, 2: route}, **options)
    st_mm = dispatch(library(f"gather_{plan['variant']}"), mm, {0: x, 1: codes, 2: scales, 3: out, 4: route},
                     **options)
    if check:
        want, mag = gather_fp8_matmul_ref(x, codes, scales, indices, block)
        tol = (K * 2.0**-23 + 2 * EPS[dtype]) * mag + SUBNORMAL_STEP[dtype]
        got = out.astype(np.float64)
        bad = ~((np.abs(got - want) <= tol) | (np.isnan(want) & np.isnan(got)))
        i = tuple(np.argwhere(bad)[0]) if bad.any() else None
        assert i is None, f"{mm['kernel']} at {i}: got {got[i]}, want {want[i]}, tol {tol[i]}"
    return plan, (st_route, st_mm), out, route


def case(rng, T, k, E, N, K, block, dtype):
    codes, scales = experts(rng, E, N, K, block)
    x = rng.standard_normal((T, K)).astype(NP_DTYPES[dtype])
    indices = rng.integers(0, E, size=(T, k)).astype(np.int32)  # unsorted, repeats within and across rows
    return x, codes, scales, indices


SHAPES = dict(E=st.sampled_from([1, 3, 8, 17, 64]), N=st.sampled_from([1, 7, 9, 31, 65, 130]),
              K=st.sampled_from([1, 16, 31, 48, 200, 560]), dtype=st.sampled_from(DTYPE_NAMES),
              seed=st.integers(0, 2**16))


@given(data=st.data(), k=st.integers(1, 8), **SHAPES)
def test_gemv_matches_reference(data, k, E, N, K, dtype, seed):
    T = data.draw(st.integers(1, 8 // k))
    block = data.draw(block_sizes(N, K))
    plan, _, _, _ = run_gather(*case(np.random.default_rng(seed), T, k, E, N, K, block, dtype), E, block, dtype)
    assert plan["variant"] == "gemv" and plan["launches"][1]["kernel"].startswith("gather_gemv_")


@given(data=st.data(), k=st.integers(1, 8), **SHAPES)
@settings(max_examples=20)
def test_gemm_matches_reference(data, k, E, N, K, dtype, seed):
    T = data.draw(st.integers(8 // k + 1, 40 // k + 1))
    block = data.draw(block_sizes(N, K))
    plan, _, _, _ = run_gather(*case(np.random.default_rng(seed), T, k, E, N, K, block, dtype), E, block, dtype)
    assert plan["variant"] == "gemm" and plan["launches"][1]["kernel"].startswith("gather_gemm_")


@given(T=st.integers(1, 12), k=st.integers(1, 8), E=st.sampled_from([1, 5, 64]), dtype=st.sampled_from(DTYPE_NAMES),
       seed=st.integers(0, 2**16))
@settings(max_examples=12)
def test_out_of_range_experts_give_nan_rows(T, k, E, dtype, seed):
    """Bad experts are skipped without an out-of-bounds read (the emulator checks every access; the codes
    buffer holds exactly E experts) and their rows are NaN; the other rows are still right."""
    rng = np.random.default_rng(seed)
    N, K, block = 33, 48, (16, 16)
    x, codes, scales, indices = case(rng, T, k, E, N, K, block, dtype)
    bad = rng.random((T, k)) < 0.4
    indices[bad] = rng.choice(BAD_EXPERTS + [E], size=int(bad.sum()))
    _, _, out, _ = run_gather(x, codes, scales, indices, E, block, dtype)
    assert np.isnan(out.astype(np.float32)[bad]).all() and not np.isnan(out.astype(np.float32)[~bad]).any()


def test_all_experts_out_of_range():
    x, codes, scales, _ = case(np.random.default_rng(0), 2, 4, 3, 9, 16, (1, 16), "float16")
    indices = np.full((2, 4), 3, np.int32)
    _, (_, st_mm), out, route = run_gather(x, codes, scales, indices, 3, (1, 16), "float16")
    assert route[0] == 0 and np.isnan(out.astype(np.float32)).all() and not st_mm.bytes_read.get(1)


def test_route_groups_pairs_by_expert():
    """The route's work items cover every valid pair exactly once, in expert order, <= rows_per_item each;
    P > 1024 pairs and E > 1024 experts exercise its threadgroup-strided loops. Run last-to-first too (a
    missing barrier would change the result)."""
    rng = np.random.default_rng(3)
    T, k, E, N, K, block = 300, 4, 1500, 9, 16, (4, 16)
    x, codes, scales, indices = case(rng, T, k, E, N, K, block, "bfloat16")
    indices[:40] = 7  # 160+ rows of one expert: several items
    indices[-1, -1] = -3
    for order in ("forward", "reverse"):
        plan, _, _, route = run_gather(x, codes, scales, indices, E, block, "bfloat16", order=order)
        n = int(route[0])
        items = route[4: 4 + 4 * n].reshape(n, 4)
        pairs = route[4 + 4 * plan["max_items"]:]
        assert (np.diff(items[:, 0]) >= 0).all() and (items[:, 2] >= 1).all() and (items[:, 2] <= 32).all()
        flat = indices.ravel()
        seen = np.concatenate([pairs[s: s + r] for _, s, r, _ in items])
        assert sorted(seen) == [p for p in range(T * k) if 0 <= flat[p] < E]
        for e, s, r, _ in items:
            assert (flat[pairs[s: s + r]] == e).all()
        assert (items[:, 0] == 7).sum() == -(-(flat == 7).sum() // 32) >= 5


# Every matmul kernel the planner can select, reached through the planner with a ragged shape.
GEMV_CASES = [(dt, p, al) for dt in DTYPE_NAMES for p in (1, 2, 3, 6) for al in (True, False)]


@pytest.mark.parametrize("dtype,pairs,aligned", GEMV_CASES)
def test_every_gemv_instantiation(dtype, pairs, aligned):
    T, k = (1, pairs) if pairs % 2 else (pairs // 2, 2)
    N, K, block = (45, 1024 + 16, (8, 48)) if aligned else (45, 203, (3, 40))
    plan, _, _, _ = run_gather(*case(np.random.default_rng(pairs), T, k, 6, N, K, block, dtype), 6, block, dtype)
    mt = {1: 1, 2: 2, 3: 4, 6: 8}[pairs]
    assert plan["launches"][1]["kernel"] == f"gather_gemv_{dtype}_m{mt}_{'a16' if aligned else 'any'}"


@pytest.mark.parametrize("dtype,aligned", [(dt, al) for dt in DTYPE_NAMES for al in (True, False)])
def test_every_gemm_instantiation(dtype, aligned):
    N, K, block = (70, 160, (128, 32)) if aligned else (70, 150, (5, 7))
    plan, _, _, _ = run_gather(*case(np.random.default_rng(1), 13, 3, 5, N, K, block, dtype), 5, block, dtype)
    assert plan["launches"][1]["kernel"] == f"gather_gemm_{dtype}_{'a16' if aligned else 'any'}"


def traffic(T, k, E, N, K, indices, dtype="bfloat16", block=(128, 128)):
    """Runs with codes/scales holding only experts 0..max(selected): a read of any later expert is an
    out-of-bounds error. Returns (plan, codes bytes read, distinct selected experts)."""
    rng = np.random.default_rng(11)
    stored = int(indices.max()) + 1
    codes, scales = experts(rng, E, N, K, block, n_stored=stored)
    x = rng.standard_normal((T, K)).astype(NP_DTYPES[dtype])
    plan, (_, st_mm), _, _ = run_gather(x, codes, scales, indices, E, block, dtype)
    return plan, st_mm.bytes_read[1], len(np.unique(indices))


def test_decode_traffic_reads_each_selected_expert_once():
    """DeepSeek-V3 decode shape (T=1, k=8 of E=64, small N, K): the codes bytes read are exactly
    distinct experts x N x K, and unselected experts (including every expert past the largest selected,
    absent from the buffer) are never read."""
    N, K = 64, 512
    indices = np.array([[41, 3, 17, 8, 50, 22, 9, 30]], np.int32)
    plan, read, distinct = traffic(1, 8, 64, N, K, indices)
    assert plan["variant"] == "gemv" and read == distinct * N * K == 8 * N * K
    indices = np.array([[5, 12, 5, 40, 12, 5, 2, 33]], np.int32)  # repeats inside one token
    plan, read, distinct = traffic(1, 8, 64, N, K, indices)
    assert plan["variant"] == "gemv" and read == distinct * N * K == 5 * N * K


def test_batched_decode_traffic_with_repeated_experts():
    """T=4 tokens sharing experts (P=32 takes the GEMM; every expert has <= 32 rows, one item): each
    distinct expert's codes are still read exactly once."""
    N, K = 96, 256
    rng = np.random.default_rng(5)
    pool = np.array([3, 9, 14, 20, 27, 31, 38, 44, 51, 60])
    indices = np.stack([rng.permutation(pool)[:8] for _ in range(4)]).astype(np.int32)
    plan, read, distinct = traffic(4, 8, 64, N, K, indices)
    assert plan["variant"] == "gemm" and read == distinct * N * K


def test_gemm_reads_codes_once_per_item():
    """An expert with more rows than a GEMM tile is read once per kGemmBM rows (the prefill trade-off)."""
    N, K = 64, 64
    indices = np.full((70, 1), 2, np.int32)
    _, read, _ = traffic(70, 1, 4, N, K, indices, dtype="float32", block=(32, 32))
    assert read == 3 * N * K


def test_planned_kernels_exist_and_respect_limits():
    route, gemv, gemm = library("gather_route"), library("gather_gemv"), library("gather_gemm")
    seen = set()
    for (T, k), E, (N, K), block, dt in itertools.product(
            [(1, 1), (1, 2), (1, 3), (2, 4), (1, 8), (4, 8), (512, 8)], [1, 64, 256], [(2048, 7168), (7, 31)],
            [(128, 128), (1, 32), (3, 7)], DTYPE_NAMES):
        plan = plan_gather(T, k, E, N, K, block, dt)
        r, mm = plan["launches"]
        for launch in plan["launches"]:
            check_resources(launch)
        assert r["kernel"] in route.kernels and r["grid"] == (1, 1, 1)
        assert mm["kernel"] in (gemv if T * k <= 8 else gemm).kernels
        P = T * k  # one item per used expert, plus one per further 32 rows (kGemmBM) in the GEMM
        bound = min(E, P) if P <= 32 else min(E, P) + P // 32
        assert plan["max_items"] == bound
        assert plan["route_elems"] == 4 + 4 * plan["max_items"] + T * k
        seen |= {r["kernel"], mm["kernel"]}
    assert seen == set(route.kernels) | set(gemv.kernels) | set(gemm.kernels)  # no dead instantiations


def test_unaligned_codes_take_the_byte_load_kernel():
    assert plan_gather(1, 8, 64, 64, 256, (128, 128), "float16")["launches"][1]["kernel"].endswith("_a16")
    plan = plan_gather(1, 8, 64, 64, 256, (128, 128), "float16", codes_aligned=False)
    assert plan["launches"][1]["kernel"] == "gather_gemv_float16_m8_any"


@pytest.mark.parametrize("args,match", [((0, 8, 4, 4, 4, (1, 1)), "positive"), ((1, 0, 4, 4, 4, (1, 1)), "positive"),
                                        ((1, 8, 0, 4, 4, (1, 1)), "positive"), ((1, 8, 4, 4, 4, (0, 1)), "block"),
                                        ((1, 8, 4097, 4, 4, (1, 1)), "4096 experts"),
                                        ((2**27, 8, 4, 4, 4, (1, 1)), "too large")])
def test_plan_rejects_bad_sizes(args, match):
    with pytest.raises(ValueError, match=f"plan_gather_fp8_matmul.*{match}"):
        plan_gather(*args, "float32")


def test_plan_rejects_bad_dtype():
    with pytest.raises(ValueError, match="plan_gather_fp8_matmul: dtype"):
        _ext.plan_gather_fp8_matmul(1, 8, 4, 4, 4, (1, 1), mx.int32)


@pytest.mark.parametrize("T,k", [(1, 5), (9, 3)])
def test_result_does_not_depend_on_lane_order(T, k):
    """Last-to-first scheduling (route and matmul) gives the same right answer: no missing barrier."""
    x, codes, scales, indices = case(np.random.default_rng(T), T, k, 6, 70, 96, (32, 32), "float16")
    outs = [run_gather(x, codes, scales, indices, 6, (32, 32), "float16", order=o)[2] for o in ("forward", "reverse")]
    np.testing.assert_array_equal(outs[0], outs[1])
