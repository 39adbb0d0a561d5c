"""simdgroup_matrix load/store/multiply-accumulate against numpy, and their traffic counts."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

dims8 = st.integers(1, 6).map(lambda k: 8 * k)


def _args(M, N, K):
    return np.array([M, N, K], np.uint32)


@given(M=dims8, N=dims8, K=dims8, dtype=st.sampled_from([np.float32, np.float16]), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=20)
def test_direct_matmul_matches_numpy_and_counts_tiles_once_per_simdgroup(matmul, M, N, K, dtype, seed):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((M, K)).astype(dtype)
    B = rng.standard_normal((K, N)).astype(dtype)
    C = np.full((M, N), np.nan, np.float32)
    name = "matmul_direct_float" if dtype == np.float32 else "matmul_direct_half"
    stats = matmul.dispatch(name, grid=(N // 8, M // 8), threadgroup=(32,), mode="threadgroups",
                            buffers={0: A, 1: B, 2: C, 3: _args(M, N, K)})
    ref = A.astype(np.float64) @ B.astype(np.float64)
    np.testing.assert_allclose(C, ref, rtol=1e-4, atol=1e-4 * K)
    # each 8x8 tile load is counted once per SIMD-group, not once per lane
    assert stats.bytes_read[0] == A.nbytes * (N // 8)
    assert stats.bytes_read[1] == B.nbytes * (M // 8)
    assert stats.bytes_written[2] == C.nbytes


@given(mb=st.integers(1, 3), nb=st.integers(1, 3), K=dims8, seed=st.integers(0, 2**32 - 1))
@settings(max_examples=10)
def test_staged_matmul_through_threadgroup_memory(matmul, mb, nb, K, seed):
    M, N = 16 * mb, 16 * nb
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((M, K)).astype(np.float32)
    B = rng.standard_normal((K, N)).astype(np.float32)
    C = np.full((M, N), np.nan, np.float32)
    stats = matmul.dispatch("matmul_staged", grid=(nb, mb), threadgroup=(128,), mode="threadgroups",
                            buffers={0: A, 1: B, 2: C, 3: _args(M, N, K)})
    np.testing.assert_allclose(C, A.astype(np.float64) @ B, rtol=1e-4, atol=1e-4 * K)
    assert stats.bytes_read[0] == A.nbytes * nb and stats.bytes_read[1] == B.nbytes * mb


def test_transposed_load(matmul):
    M, N, K = 16, 24, 32
    rng = np.random.default_rng(3)
    A = rng.standard_normal((M, K)).astype(np.float32)
    B = rng.standard_normal((K, N)).astype(np.float32)
    C = np.zeros((M, N), np.float32)
    matmul.dispatch("matmul_at", grid=(N // 8, M // 8), threadgroup=(32,), mode="threadgroups",
                    buffers={0: np.ascontiguousarray(A.T), 1: B, 2: C, 3: _args(M, N, K)})
    np.testing.assert_allclose(C, A.astype(np.float64) @ B, rtol=1e-4, atol=1e-3)
