"""attention_rows (a ragged batch's cache update and attention in one op) against the float64
reference row by row: each row at its own offset in its own buffers, GQA, Dk != Dv, decode and
chunks, every dtype and ISA path; the buffers' contents after the write; in-place vs copy; bad input."""

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, strategies as st

import mlx_tandem as tdm
import reference as ref
from fp8_cases import DTYPES, NP_DTYPES, as_dtype
from isa import PARAMS as ISAS
from mlx_tandem import _ext

TOL = {"float32": 2e-5, "float16": 2e-3, "bfloat16": 1.6e-2}


def rounded(rng, shape, dtype):
    return as_dtype(rng.standard_normal(shape).astype(np.float32), dtype)


def to_mx(a, dtype):
    return mx.array(a.astype(NP_DTYPES[dtype]))


def as64(a):
    return np.array(a.astype(mx.float32)).astype(np.float64)


@st.composite
def problems(draw):
    dk, dv = draw(st.sampled_from([(64, 64), (128, 128), (192, 128), (7, 5), (40, 72)]))
    hkv = draw(st.sampled_from([1, 2, 3]))
    hq = hkv * draw(st.sampled_from([1, 2, 4]))
    b = draw(st.integers(1, 6))
    L = draw(st.sampled_from([1, 1, 2, 5]))
    offsets = draw(st.lists(st.integers(0, 300), min_size=b, max_size=b))
    slack = draw(st.lists(st.integers(0, 40), min_size=b, max_size=b))
    return hq, hkv, L, dk, dv, offsets, [o + L + s for o, s in zip(offsets, slack)]


@pytest.mark.parametrize("isa", ISAS)
@given(p=problems(), dtype=st.sampled_from(list(DTYPES)), layout=st.sampled_from(["bhld", "blhd"]),
       seed=st.integers(0, 2**16))
def test_attention_rows_matches_reference(monkeypatch, isa, p, dtype, layout, seed):
    monkeypatch.setenv("TANDEM_ISA", isa)
    hq, hkv, L, dk, dv, offsets, caps = p
    B, rng = len(offsets), np.random.default_rng(seed)
    kc = [rounded(rng, (1, hkv, c, dk), dtype) for c in caps]
    vc = [rounded(rng, (1, hkv, c, dv), dtype) for c in caps]
    q, k, v = (rounded(rng, (B, h, L, d), dtype) for h, d in ((hq, dk), (hkv, dk), (hkv, dv)))
    if layout == "bhld":
        qm, km, vm = (to_mx(x, dtype) for x in (q, k, v))
    else:  # the projections' (B, L, H, D) layout, transposed views as the model passes them
        qm, km, vm = (to_mx(x.transpose(0, 2, 1, 3), dtype).transpose(0, 2, 1, 3) for x in (q, k, v))
    out, nk, nv = _ext.attention_rows(qm, km, vm, [to_mx(c, dtype) for c in kc], [to_mx(c, dtype) for c in vc],
                                      offsets)
    assert out.dtype == DTYPES[dtype] and out.shape == (B, hq, L, dv)
    got = as64(out)
    for b, off in enumerate(offsets):
        want_k, want_v = kc[b].copy(), vc[b].copy()
        want_k[:, :, off:off + L], want_v[:, :, off:off + L] = k[b:b + 1], v[b:b + 1]
        np.testing.assert_array_equal(as64(nk[b]), want_k)  # written, and nothing else changed
        np.testing.assert_array_equal(as64(nv[b]), want_v)
        want = ref.attention(q[b:b + 1], want_k[:, :, :off + L], want_v[:, :, :off + L])
        np.testing.assert_allclose(got[b:b + 1], want, rtol=TOL[dtype], atol=TOL[dtype], err_msg=f"row {b}")


@pytest.mark.parametrize("isa", ISAS)
@given(p=problems(), dtype=st.sampled_from(list(DTYPES)), seed=st.integers(0, 2**16))
def test_attention_rows_latent_cache(monkeypatch, isa, p, dtype, seed):
    """MLA's latent cache: one buffer per row, the values its first value_dim features."""
    monkeypatch.setenv("TANDEM_ISA", isa)
    hq, hkv, L, dk, dv, offsets, caps = p
    dv = min(dv, dk)
    B, rng = len(offsets), np.random.default_rng(seed)
    kc = [rounded(rng, (1, hkv, c, dk), dtype) for c in caps]
    q, k = rounded(rng, (B, hq, L, dk), dtype), rounded(rng, (B, hkv, L, dk), dtype)
    out, nk, nv = _ext.attention_rows(to_mx(q, dtype), to_mx(k, dtype), None, [to_mx(c, dtype) for c in kc], [],
                                      offsets, value_dim=dv)
    assert out.shape == (B, hq, L, dv) and nv == []
    for b, off in enumerate(offsets):
        want_k = kc[b].copy()
        want_k[:, :, off:off + L] = k[b:b + 1]
        np.testing.assert_array_equal(as64(nk[b]), want_k)
        keys = want_k[:, :, :off + L]
        want = ref.attention(q[b:b + 1], keys, keys[..., :dv])
        np.testing.assert_allclose(as64(out[b:b + 1]), want, rtol=TOL[dtype], atol=TOL[dtype], err_msg=f"row {b}")


def test_attention_rows_equals_fused_attention_on_each_row():
    """Bit for bit what fused_attention gives each row over its own cache prefix (a sequence
    decodes the same tokens batched as alone)."""
    rng = np.random.default_rng(1)
    offsets = [0, 17, 5, 130]
    kc = [mx.array(rng.standard_normal((1, 2, 160, 64)), mx.bfloat16) for _ in offsets]
    vc = [mx.array(rng.standard_normal((1, 2, 160, 64)), mx.bfloat16) for _ in offsets]
    q = mx.array(rng.standard_normal((4, 8, 2, 64)), mx.bfloat16)
    k = mx.array(rng.standard_normal((4, 2, 2, 64)), mx.bfloat16)
    v = mx.array(rng.standard_normal((4, 2, 2, 64)), mx.bfloat16)
    out, nk, nv = _ext.attention_rows(q, k, v, kc, vc, offsets)
    for b, off in enumerate(offsets):
        alone = tdm.fused_attention(q[b:b + 1], nk[b][:, :, :off + 2], nv[b][:, :, :off + 2])
        np.testing.assert_array_equal(np.array(out[b:b + 1].astype(mx.float32)), np.array(alone.astype(mx.float32)))


def buffers(n=2, cap=8):
    return [mx.zeros((1, 1, cap, 4)) for _ in range(n)], [mx.zeros((1, 1, cap, 4)) for _ in range(n)]


def step(kc, vc, offsets):
    B = len(offsets)
    return _ext.attention_rows(mx.ones((B, 1, 1, 4)), mx.ones((B, 1, 1, 4)), mx.ones((B, 1, 1, 4)), kc, vc, offsets)


def test_a_live_view_of_a_buffer_is_not_changed():
    """With an evaluated view of a buffer alive the op copies that buffer first: the view keeps its
    values, even past the offset (positions the op may otherwise overwrite in place)."""
    kc, vc = buffers()
    view = kc[0][:, :, :4]
    mx.eval(kc, vc, view)
    out, nk, nv = step(kc, vc, [2, 3])
    mx.eval(out, nk, nv)
    assert float(view.sum()) == 0.0
    assert float(nk[0][0, 0, 2].sum()) == 4.0 and float(nk[1][0, 0, 3].sum()) == 4.0


def test_a_buffer_nothing_else_shares_is_written_in_place():
    """The cache path: the previous buffers are dropped, so each step writes into their memory (no
    copy: the peak stays below one more buffer); with a view alive, a copy is made."""
    cap = 1 << 20  # 16 MiB per float32 buffer
    kc, vc = buffers(1, cap)
    mx.eval(kc, vc)
    for off in range(3):
        mx.reset_peak_memory()
        base = mx.get_active_memory()
        out, kc, vc = step(kc, vc, [off])
        mx.eval(out, kc, vc)
        assert mx.get_peak_memory() - base < cap * 16 // 2, "a buffer was copied"
    np.testing.assert_array_equal(np.array(kc[0][:, :, :4]), np.array([[[[1.0] * 4] * 3 + [[0.0] * 4]]]))
    view = kc[0][:, :, :4]
    mx.eval(view)
    mx.reset_peak_memory()
    base = mx.get_active_memory()
    out, kc, vc = step(kc, vc, [3])
    mx.eval(out, kc, vc)
    assert mx.get_peak_memory() - base >= cap * 16, "the viewed buffer was not copied"
    assert float(view.sum()) == 12.0


K1, V1 = buffers(1)


@pytest.mark.parametrize("call, match", [
    (lambda: _ext.attention_rows(mx.ones((1, 1, 1, 4)), mx.ones((1, 1, 1, 4)), mx.ones((1, 1, 1, 4)), K1, V1, [7, 1]),
     "one k cache, v cache and offset per batch row"),
    (lambda: _ext.attention_rows(mx.ones((1, 1, 1, 4)), mx.ones((1, 1, 1, 4)), mx.ones((1, 1, 1, 4)), K1, V1, [8]),
     r"offsets\[0\] = 8 with 1 new positions does not fit the capacity 8"),
    (lambda: _ext.attention_rows(mx.ones((1, 1, 1, 4)), mx.ones((1, 1, 1, 4)), mx.ones((1, 1, 1, 4)), K1, V1, [-1]),
     r"offsets\[0\] = -1"),
    (lambda: _ext.attention_rows(mx.ones((1, 2, 1, 4)), mx.ones((1, 2, 1, 4)), mx.ones((1, 2, 1, 4)), K1, V1, [0]),
     r"k_caches\[0\] must be \(1, 2, capacity, 4\)"),
    (lambda: _ext.attention_rows(mx.ones((1, 3, 1, 4)), mx.ones((1, 2, 1, 4)), mx.ones((1, 2, 1, 4)), K1, V1, [0]),
     "must be a multiple"),
    (lambda: _ext.attention_rows(mx.ones((1, 1, 1, 4)), mx.ones((1, 1, 1, 4)), mx.ones((1, 1, 1, 4)),
                                 [K1[0].astype(mx.float16)], V1, [0]), "must have q's dtype"),
    (lambda: _ext.attention_rows(mx.ones((1, 1, 1, 4)), mx.ones((1, 1, 1, 4)), mx.ones((1, 1, 1, 4)),
                                 K1, [mx.zeros((1, 1, 9, 4))], [0]), "the same capacity"),
    (lambda: _ext.attention_rows(mx.ones((1, 1, 2, 4)), mx.ones((1, 1, 1, 4)), mx.ones((1, 1, 1, 4)), K1, V1, [0]),
     "same batch size and length"),
    (lambda: _ext.attention_rows(mx.ones((1, 1, 1, 4)), mx.ones((1, 1, 1, 4)), None, K1, [], [0]),
     "give either v and v_caches, or value_dim"),
    (lambda: _ext.attention_rows(mx.ones((1, 1, 1, 4)), mx.ones((1, 1, 1, 4)), None, K1, [], [0], value_dim=5),
     r"value_dim must be in \[1, Dk = 4\]"),
    (lambda: _ext.attention_rows(mx.ones((1, 1, 1, 4), mx.int32), mx.ones((1, 1, 1, 4)), mx.ones((1, 1, 1, 4)),
                                 K1, V1, [0]), "q must be"),
    (lambda: _ext.attention_rows(mx.ones((1, 1, 1, 4)), mx.ones((1, 1, 1, 4)), mx.ones((1, 1, 1, 4)), K1, V1, [0],
                                 scale=float("nan")), "scale must be finite"),
])
def test_attention_rows_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
