"""Numpy references (float64 math) that every kernel is compared against."""

import numpy as np

# ---------------------------------------------------------------- FP8 E4M3 --

FP8_MAX = 448.0


def fp8_decode(codes):
    """Exact E4M3 decode of uint8 codes; 0x7F/0xFF give NaN."""
    c = np.asarray(codes, dtype=np.uint8).astype(np.int64)
    sign = np.where(c & 0x80, -1.0, 1.0)
    e = (c >> 3) & 0xF
    m = c & 0x7
    mag = np.where(e == 0, m * 2.0**-9, (1.0 + m / 8.0) * np.exp2(e - 7.0))
    mag = np.where((e == 0xF) & (m == 0x7), np.nan, mag)
    return sign * mag


_GRID = fp8_decode(np.arange(0x7F, dtype=np.uint8))  # all finite non-negative values, ascending


def fp8_encode(x):
    """float -> E4M3 codes: round to nearest even, saturate to +-448, NaN -> 0x7F.

    Written independently of the kernels: nearest point of the exhaustive grid
    of representable values, ties to the even code (even mantissa)."""
    x = np.asarray(x, dtype=np.float64)
    a = np.where(np.isnan(x), 0.0, np.abs(x))  # NaN handled at the end
    idx = np.searchsorted(_GRID, np.minimum(a, FP8_MAX))  # first grid value >= a
    hi = np.minimum(idx, len(_GRID) - 1)
    lo = np.maximum(hi - 1, 0)
    d_lo = np.abs(a - _GRID[lo])
    d_hi = np.abs(_GRID[hi] - a)
    pick_hi = (d_hi < d_lo) | ((d_hi == d_lo) & (hi % 2 == 0))
    code = np.where(pick_hi, hi, lo)
    code = np.where(a >= FP8_MAX, 0x7E, code)
    code = code | np.where(np.signbit(x), 0x80, 0)
    code = np.where(np.isnan(x), 0x7F, code)
    return code.astype(np.uint8)


def block_expand(scales, shape, block_size):
    """Per-element scale of a (N, K) weight from its (ceil(N/bn), ceil(K/bk)) block scales."""
    bn, bk = block_size
    n, k = shape
    return np.repeat(np.repeat(np.asarray(scales, np.float64), bn, 0), bk, 1)[:n, :k]


def fp8_dequantize(codes, scales, block_size):
    return fp8_decode(codes) * block_expand(scales, codes.shape, block_size)


def fp8_quantize(w, block_size):
    """Block scales amax/448 (1 for a zero block) and codes encode(w / scale), computed in float32
    like the kernels (the division is what decides the codes)."""
    w = np.asarray(w, np.float32)
    n, k = w.shape
    bn, bk = block_size
    rb, cb = -(-n // bn), -(-k // bk)
    pad = np.zeros((rb * bn, cb * bk), np.float32)
    pad[:n, :k] = np.abs(w)
    amax = pad.reshape(rb, bn, cb, bk).max(axis=(1, 3))
    scales = np.where(amax > 0, amax / np.float32(FP8_MAX), np.float32(1)).astype(np.float32)
    codes = fp8_encode(w / block_expand(scales, w.shape, block_size).astype(np.float32))
    return codes, scales


def fp8_matmul(x, codes, scales, block_size):
    """x (..., K) @ dequant(W).T in float64."""
    return np.asarray(x, np.float64) @ fp8_dequantize(codes, scales, block_size).T


def gather_fp8_matmul(x, codes, scales, indices, block_size):
    """x (..., K), codes (E, N, K), indices (..., k) -> (..., k, N) float64: row t times expert
    indices[t, j] for every j."""
    x = np.asarray(x, np.float64)
    w = np.stack([fp8_dequantize(codes[e], scales[e], block_size) for e in range(codes.shape[0])])
    sel = w[np.asarray(indices)]                                  # (..., k, N, K)
    return np.einsum("...k,...jnk->...jn", x, sel)


# ---------------------------------------------------------------------------
# Attention (fused_attention): float64 softmax(scale * q k^T + mask) v.


def attention(q, k, v, scale=None, causal=True):
    """q (B, Hq, Lq, Dk), k (B, Hkv, Lk, Dk), v (B, Hkv, Lk, Dv) -> (B, Hq, Lq, Dv) float64.

    Grouped-query: query head h uses KV head h // (Hq // Hkv). Causal masking is
    bottom-right aligned: query i sits at key position Lk - Lq + i and sees keys <= it.
    """
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    Hq, Lq, Dk = q.shape[1:]
    Hkv, Lk = k.shape[1:3]
    group = Hq // Hkv
    k = np.repeat(k, group, axis=1)
    v = np.repeat(v, group, axis=1)
    scale = 1.0 / np.sqrt(Dk) if scale is None else scale
    s = np.einsum("bhqd,bhkd->bhqk", q, k) * scale
    if causal:
        visible = np.arange(Lk)[None, :] <= (Lk - Lq + np.arange(Lq))[:, None]
        s = np.where(visible, s, -np.inf)
    s = s - s.max(axis=-1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(axis=-1, keepdims=True)
    return np.einsum("bhqk,bhkd->bhqd", p, v)


def rope(x, freqs, offset):
    """transformers' apply_rotary_pos_emb in float64 on x (..., L, D) over the first 2 * len(freqs)
    features (the rest pass through)."""
    L, dims = x.shape[-2], 2 * len(freqs)
    ang = np.arange(offset, offset + L)[:, None] * np.asarray(freqs, np.float64)[None, :]
    cos, sin = np.cos(np.concatenate([ang, ang], -1)), np.sin(np.concatenate([ang, ang], -1))
    r = x[..., :dims]
    x1, x2 = r[..., :dims // 2], r[..., dims // 2:]
    return np.concatenate([r * cos + np.concatenate([-x2, x1], -1) * sin, x[..., dims:]], -1)


def silu_mul(g, u):
    g = np.asarray(g, np.float64)
    with np.errstate(over="ignore"):  # exp(-g) = inf for g < -709 gives the right limit, -0
        return g / (1.0 + np.exp(-g)) * np.asarray(u, np.float64)


def rms_norm(x, w, eps):
    x = np.asarray(x, np.float64)
    return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps) * np.asarray(w, np.float64)


def sample_kept(logits, temperature, top_k, top_p, min_p):
    """The token ids a sampler keeps for one row of logits (ascending), the filters applied one after
    another as transformers' warpers and the kernel do: temperature (0: the first maximum), top_k (ties
    at the k-th kept), top_p over the top-k set renormalised (in order of logit, then index), min_p."""
    x = logits.astype(np.float64)
    if temperature == 0:
        return [int(np.argmax(x))]
    x = x / temperature
    keep = np.isfinite(x)
    if 0 < top_k < x.size:
        keep &= logits >= np.sort(logits)[::-1][top_k - 1]
    if top_p < 1:
        idx = np.flatnonzero(keep)
        order = idx[np.lexsort((idx, -logits[idx]))]  # logit descending, then index
        w = np.exp(x[order] - x.max())
        before = np.concatenate([[0.0], np.cumsum(w)[:-1]])
        nucleus = np.zeros_like(keep)
        nucleus[order[before < top_p * w.sum()]] = True
        nucleus[order[0]] = True
        keep &= nucleus
    if min_p > 0:
        keep &= x >= x.max() + np.log(min_p)
    return np.flatnonzero(keep).tolist()
