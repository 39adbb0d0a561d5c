"""SIMD-group collectives and barriers against numpy."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

SIMD = 32


@given(n=st.integers(1, 5000), tg=st.sampled_from([32, 64, 96, 256, 1024]), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=25)
def test_reduce_sum_matches_numpy_and_counts_each_element_once(reduce_lib, n, tg, seed):
    x = np.random.default_rng(seed).standard_normal(n).astype(np.float32)
    ng = (n + tg - 1) // tg
    partials = np.full(ng, np.nan, np.float32)
    stats = reduce_lib.dispatch("reduce_sum", grid=(n,), threadgroup=(tg,),
                                buffers={0: x, 1: partials, 2: np.array([n], np.uint32)})
    for g in range(ng):
        np.testing.assert_allclose(partials[g], x[g * tg:(g + 1) * tg].astype(np.float64).sum(), rtol=1e-5, atol=1e-4)
    assert stats.bytes_read[0] == x.nbytes  # lanes past n (none: dispatch_threads) never read
    assert stats.bytes_written[1] == partials.nbytes
    assert stats.threadgroups == ng


@given(groups=st.integers(1, 8), tg_simds=st.sampled_from([1, 2, 4]), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=15)
def test_butterfly_sum_gives_every_lane_its_simdgroup_sum(collectives, groups, tg_simds, seed):
    n = groups * tg_simds * SIMD
    x = np.random.default_rng(seed).random(n, dtype=np.float32)
    out = np.zeros_like(x)
    collectives.dispatch("butterfly_sum", grid=(n,), threadgroup=(tg_simds * SIMD,), buffers={0: x, 1: out})
    expect = np.repeat(x.reshape(-1, SIMD).astype(np.float64).sum(1), SIMD)
    np.testing.assert_allclose(out, expect, rtol=1e-5)


def _shuffle_reference(x: np.ndarray) -> np.ndarray:
    lanes = np.arange(SIMD)
    out = []
    for v in x.reshape(-1, SIMD):
        down = np.where(lanes + 3 < SIMD, v[np.minimum(lanes + 3, SIMD - 1)], v)
        up = np.where(lanes >= 5, v[np.maximum(lanes - 5, 0)], v)
        cs = np.cumsum(v)
        ballot = int(sum(1 << i for i in range(SIMD) if v[i] > 0))
        out.append([v[::-1], down, up, np.full(SIMD, v[7]), np.roll(v, -1), cs, cs - v,
                    np.full(SIMD, v.max()), np.full(SIMD, v.min()),
                    np.full(SIMD, np.array([ballot], np.uint32).view(np.int32)[0])])
    return np.concatenate(np.array(out), axis=1)


@given(groups=st.integers(1, 4), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=10)
def test_shuffles_scans_and_ballot(collectives, groups, seed):
    n = groups * SIMD
    x = np.random.default_rng(seed).integers(-100, 100, n).astype(np.int32)
    out = np.zeros((10, n), np.int32)
    collectives.dispatch("shuffles", grid=(n,), threadgroup=(min(n, 64),), buffers={0: x, 1: out})
    np.testing.assert_array_equal(out, _shuffle_reference(x))


def test_simd_sum_on_float4_and_half2(collectives):
    tg, ngroups = 128, 3
    x = np.random.default_rng(1).standard_normal((tg * ngroups, 4)).astype(np.float32)
    out = np.zeros((ngroups * tg // SIMD, 4), np.float32)
    hout = np.zeros((ngroups * tg // SIMD, 2), np.float16)
    collectives.dispatch("vector_sums", grid=(tg * ngroups,), threadgroup=(tg,), buffers={0: x, 1: out, 2: hout})
    expect = x.reshape(-1, SIMD, 4).astype(np.float64).sum(1)
    np.testing.assert_allclose(out, expect, rtol=1e-5, atol=1e-5)
    hexpect = x[:, :2].astype(np.float16).astype(np.float64).reshape(-1, SIMD, 2).sum(1)
    np.testing.assert_allclose(hout.astype(np.float64), hexpect, rtol=2e-2, atol=5e-2)


@given(n=st.integers(1, 3000), tg=st.sampled_from([16, 64, 100, 256]), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=20)
def test_block_prefix_sum_with_barriers(collectives, n, tg, seed):
    x = np.random.default_rng(seed).integers(0, 1000, n).astype(np.uint32)
    out = np.zeros_like(x)
    mem = (tg * 4 + 15) // 16 * 16
    collectives.dispatch("block_scan", grid=(n,), threadgroup=(tg,), buffers={0: x, 1: out},
                         threadgroup_memory={0: mem})
    expect = np.concatenate([np.cumsum(x[i:i + tg]) for i in range(0, n, tg)]).astype(np.uint32)
    np.testing.assert_array_equal(out, expect)
