"""Atomics, half/bfloat conversions and the dispatch builtins."""
import ml_dtypes
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st


@given(n=st.integers(1, 4000), tg=st.sampled_from([32, 128, 1024]), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=15)
def test_histogram_with_device_and_threadgroup_atomics(misc, n, tg, seed):
    x = np.random.default_rng(seed).integers(0, 2**31, n).astype(np.uint32)
    bins = np.zeros(16, np.uint32)
    total = np.zeros(1, np.uint32)
    grid = (n + tg - 1) // tg * tg  # uniform threadgroups: lanes past n only count nothing
    misc.dispatch("histogram", grid=(grid,), threadgroup=(tg,), threads=2,
                  buffers={0: x, 1: bins, 2: total, 3: np.array([n], np.uint32)})
    np.testing.assert_array_equal(bins, np.bincount(x % 16, minlength=16))
    assert total[0] == n


def _special_floats():
    f16 = np.float16
    ties_half = (np.arange(1, 200, dtype=np.float32) * 2 + 1) * np.float32(2.0**-11)  # halfway between halves
    bf_ties = np.array([0x3F808000, 0x3F818000, 0x3F80C000, 0x00008000, 0x7F7FFFFF], np.uint32).view(np.float32)
    return np.concatenate([
        np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 65504, 65520, 1e-8, 6e-8, 1e-40, -3.4e38], np.float32),
        ties_half, bf_ties, np.finfo(np.float32).tiny * np.arange(1, 5, dtype=np.float32),
        np.array([f16(1).astype(np.float32) + np.float32(2**-11)], np.float32)])


@given(seed=st.integers(0, 2**32 - 1))
@settings(max_examples=5)
def test_half_and_bfloat_round_to_nearest_even(misc, seed):
    x = np.concatenate([_special_floats(), (np.random.default_rng(seed).standard_normal(2000) * 1e3).astype(np.float32),
                        np.random.default_rng(seed).integers(0, 2**32, 2000, dtype=np.uint64).astype(np.uint32).view(np.float32)])
    hb, bb = np.zeros(len(x), np.uint16), np.zeros(len(x), np.uint16)
    back = np.zeros(2 * len(x), np.float32)
    misc.dispatch("convert", grid=(len(x),), threadgroup=(64,), buffers={0: x, 1: hb, 2: bb, 3: back})
    with np.errstate(over="ignore", invalid="ignore"):
        eh = x.astype(np.float16)
        eb = x.astype(ml_dtypes.bfloat16)
    nan = np.isnan(x)
    np.testing.assert_array_equal(hb[~nan], eh.view(np.uint16)[~nan])
    np.testing.assert_array_equal(bb[~nan], eb.view(np.uint16)[~nan])
    assert np.isnan(hb[nan].view(np.float16)).all() and np.isnan(bb[nan].view(ml_dtypes.bfloat16)).all()
    np.testing.assert_array_equal(back[0::2][~nan], eh.astype(np.float32)[~nan])
    np.testing.assert_array_equal(back[1::2][~nan], eb.astype(np.float32)[~nan])


def _expected_builtins(grid, tg, mode):
    ng = [(g + t - 1) // t for g, t in zip(grid, tg)] if mode == "threads" else list(grid)
    total = [n * t for n, t in zip(ng, tg)] if mode == "threadgroups" else list(grid)
    rows = {}
    for gz in range(ng[2]):
        for gy in range(ng[1]):
            for gx in range(ng[0]):
                g = (gx, gy, gz)
                act = [min(t, total[d] - g[d] * t) for d, t in enumerate(tg)]
                nthreads = act[0] * act[1] * act[2]
                for i in range(nthreads):
                    lid = (i % act[0], (i // act[0]) % act[1], i // (act[0] * act[1]))
                    pos = tuple(g[d] * tg[d] + lid[d] for d in range(3))
                    rows[pos] = [*pos, *lid, i, 0, 0, *g, *ng, *act, i % 32, 0, 0, 32, 0, 0, i // 32, 0, 0,
                                 (nthreads + 31) // 32, 0, 0]
    return total, rows


@given(grid=st.tuples(st.integers(1, 40), st.integers(1, 5), st.integers(1, 3)),
       tg=st.tuples(st.sampled_from([1, 3, 8, 32, 33]), st.integers(1, 4), st.integers(1, 2)),
       mode=st.sampled_from(["threads", "threadgroups"]))
@settings(max_examples=20)
def test_builtins_for_uniform_and_nonuniform_dispatch(misc, grid, tg, mode):
    total, rows = _expected_builtins(grid, tg, mode)
    out = np.full((total[2], total[1], total[0], 30), 0xDEADBEEF, np.uint32)
    misc.dispatch("builtins", grid=grid, threadgroup=tg, mode=mode, buffers={0: out})
    assert len(rows) == total[0] * total[1] * total[2]
    for (x, y, z), expect in rows.items():
        np.testing.assert_array_equal(out[z, y, x], expect, err_msg=f"thread {(x, y, z)}")


@given(n=st.integers(1, 100), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=10)
def test_vector_types_swizzles_and_conversions(shim_lib, n, seed):
    rng = np.random.default_rng(seed)
    a = (rng.standard_normal((n, 4)) * 3).astype(np.float32)
    p = rng.standard_normal((n, 3)).astype(np.float32)
    u = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)
    out = np.zeros((n, 16), np.float32)
    shim_lib.dispatch("vector_ops", grid=(n,), threadgroup=(32,), buffers={0: a, 1: p, 2: u, 3: out})
    bits = a.view(np.uint32)
    expect = np.stack([
        a[:, 3], a[:, 2], p[:, 0], p[:, 1],  # float4(v.zw, q.xy) then .xy = .yx
        (a[:, 0].astype(np.float16) * np.float16(2)).astype(np.float32),
        (a[:, 3].astype(np.float16) * np.float16(2)).astype(np.float32),
        (bits[:, 0] >> 16) & 0xFF, (bits[:, 3] >> 16) & 0xFF,
        np.abs(a).sum(1), np.clip(a[:, 0], -1, 1), np.exp(np.minimum(a[:, 1], 10)),
        (u & 0xFF) + 256.0 * (u >> 24), (a[:, :3] * p).sum(1), np.ones(n), p[:, 2], np.full(n, 28.0)], axis=1)
    np.testing.assert_allclose(out, expect.astype(np.float32), rtol=1e-5, atol=1e-5)
