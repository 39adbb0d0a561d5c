"""`tandem bench attention`: fused_attention decode and causal prefill on Llama-70B
(Hq=64, Hkv=8, D=128) and DeepSeek MLA (192/128) geometries, against anchors measured in
the same run: mx.fast.scaled_dot_product_attention on CPU, the memory read bandwidth
(decode streams K and V once per step) and numpy/OpenBLAS sgemm throughput (prefill; for decode
shown beside the bandwidth ratio, since GQA decode is FLOP-heavy)."""

import itertools
import statistics
import time

import mlx.core as mx
import numpy as np

import mlx_tandem as tdm
from mlx_tandem import _ext

from .timing import fmt_table, fresh_bytes, measure, numpy_sgemm_flops, paired, read_bandwidth

# name, Hq, Hkv, Dk, Dv
GEOMETRIES = [("llama-70b", 64, 8, 128, 128), ("deepseek-mla", 16, 16, 192, 128)]
DECODE_LENGTHS = [4096, 16384, 32768]
PREFILL_LENGTHS = [2048, 8192]
QUICK_DECODE, QUICK_PREFILL = [4096, 16384], [1024]
MLX_PREFILL_MAX = 2048
READ_BYTES = 256 << 20
COLD_BYTES = 96 << 20  # > the 32 MiB L3 here: decode steps rotate over this many bytes of caches
DTYPES = {"float16": mx.float16, "bfloat16": mx.bfloat16, "float32": mx.float32}


def add_arguments(p):
    p.add_argument("--quick", action="store_true", help="shorter sequences, fewer repetitions")
    p.add_argument("--dtype", choices=list(DTYPES), default="float16", help="q/k/v dtype (default float16)")
    p.add_argument("--reps", type=int, default=7, help="timed repetitions for decode (prefill uses fewer)")
    p.add_argument("--no-mlx", action="store_true", help="skip the mx.fast.scaled_dot_product_attention anchors")


def _sdpa(q, k, v, causal):
    return mx.fast.scaled_dot_product_attention(q, k, v, scale=q.shape[-1] ** -0.5,
                                                mask="causal" if causal else None)


def _sgemm():
    """numpy sgemm 2048^3 throughput (FLOP/s, median; (min, max) spread; BLAS info): the compute anchor."""
    return numpy_sgemm_flops(2048, 2048, 2048, reps=5)


def _row(case, what, med, lo, hi, rate, verdict):
    return [case, what, f"{med * 1e3:.2f}", f"{lo * 1e3:.2f}-{hi * 1e3:.2f}", rate, verdict]


def bench_decode(geom, lk, dtype, reps, read_buf, with_mlx):
    """One decode step (Lq=1) over KV cache views [:, :, :lk] of larger buffers. Like the layers
    of a model, successive calls use different caches (more bytes than the last-level cache), so
    every step streams K and V from memory. The bandwidth anchor reads the same number of bytes
    from a large buffer, alternating with our calls."""
    name, hq, hkv, dk, dv = geom
    cap = lk + 256  # the cache has room to grow: K/V are strided views, as in generation
    nbytes = hkv * lk * (dk + dv) * mx.zeros((), dtype).itemsize
    layers = []
    for _ in range(max(2, -(-COLD_BYTES // nbytes))):
        kc = mx.random.normal((1, hkv, cap, dk)).astype(dtype)
        vc = mx.random.normal((1, hkv, cap, dv)).astype(dtype)
        mx.eval(kc, vc)
        layers.append((kc[:, :, :lk, :], vc[:, :, :lk, :]))
    q = mx.random.normal((1, hq, 1, dk)).astype(dtype)
    mx.eval(q)
    steps = itertools.count()
    offsets = itertools.cycle(range(0, max(1, read_buf.size - nbytes + 1), max(1, nbytes)))

    def run(fn):
        k, v = layers[next(steps) % len(layers)]
        mx.eval(fn(q, k, v))

    def read():
        off = next(offsets)
        _ext.stream_read(read_buf[off:off + nbytes])

    case = f"{name} decode Lk={lk}"
    t_ours, t_read, ratios = paired(lambda: run(tdm.fused_attention), read, reps)
    med, lo, hi = statistics.median(t_ours), min(t_ours), max(t_ours)
    ratio = statistics.median(ratios)
    # With GQA the step is FLOP-heavy (8 FLOP per cache byte at group 8): show both rates, and
    # the FLOP rate against numpy sgemm measured right after (the compute roof in practice).
    flops = 2.0 * hq * lk * (dk + dv)
    sgemm, _, _ = _sgemm()
    rows = [_row(case, "tandem fused_attention", med, lo, hi,
                 f"{nbytes / med / 1e9:.1f} GB/s, {flops / med / 1e9:.0f} GFLOPS",
                 f"{ratio:.0%} of bandwidth (paired: {nbytes / statistics.median(t_read) / 1e9:.1f} GB/s); "
                 f"{flops / med / sgemm:.0%} of sgemm")]
    summary = [(f"decode {name} Lk={lk}", ratio, 0.7)]
    if with_mlx:
        m_med, m_lo, m_hi = measure(lambda: run(lambda q, k, v: _sdpa(q, k, v, False)), reps=max(3, reps // 2))
        rows.append(_row(case, "mx.fast sdpa (cpu)", m_med, m_lo, m_hi, f"{nbytes / m_med / 1e9:.1f} GB/s",
                         f"tandem {m_med / med:.1f}x faster"))
    return rows, summary


def bench_prefill(geom, length, dtype, reps, with_mlx):
    """Causal prefill of `length` tokens; useful FLOPs count only the unmasked half. The numpy
    sgemm anchor is measured right after (the machine's load drifts)."""
    name, hq, hkv, dk, dv = geom
    q = mx.random.normal((1, hq, length, dk)).astype(dtype)
    k = mx.random.normal((1, hkv, length, dk)).astype(dtype)
    v = mx.random.normal((1, hkv, length, dv)).astype(dtype)
    mx.eval(q, k, v)
    flops = 2.0 * hq * (dk + dv) * length * (length + 1) / 2
    case = f"{name} prefill L={length}"
    med, lo, hi = measure(lambda: mx.eval(tdm.fused_attention(q, k, v)), reps=reps)
    sgemm, _, _ = _sgemm()
    rows = [_row(case, "tandem fused_attention", med, lo, hi, f"{flops / med / 1e9:.1f} GFLOPS",
                 f"{flops / med / sgemm:.0%} of numpy sgemm ({sgemm / 1e9:.1f} GFLOPS right after)")]
    summary = [(f"prefill {name} L={length}", flops / med / sgemm, 0.4)]
    if with_mlx and length > MLX_PREFILL_MAX:
        rows.append([case, "mx.fast sdpa (cpu)", "-", "-", "-", f"skipped above L={MLX_PREFILL_MAX} (minutes)"])
    elif with_mlx:
        # MLX's CPU sdpa runs at ~1 GFLOPS here and materialises the scores: time 1/8
        # of the heads (every head does the same work) and scale the time by 8.
        hkv_s = max(1, hkv // 8)
        hq_s = hq // hkv * hkv_s
        qs, ks, vs = q[:, :hq_s], k[:, :hkv_s], v[:, :hkv_s]
        m_med, m_lo, m_hi = measure(lambda: mx.eval(_sdpa(qs, ks, vs, True)), reps=1, warmup=0)
        f = hkv / hkv_s
        rows.append(_row(case, f"mx.fast sdpa (cpu), {hq_s}/{hq} heads x{f:g}", m_med * f, m_lo * f, m_hi * f,
                         f"{flops / (m_med * f) / 1e9:.1f} GFLOPS", f"tandem {m_med * f / med:.1f}x faster"))
    return rows, summary


def main(args):
    dtype = DTYPES[args.dtype]
    decode_lengths = QUICK_DECODE if args.quick else DECODE_LENGTHS
    prefill_lengths = QUICK_PREFILL if args.quick else PREFILL_LENGTHS
    reps = 3 if args.quick else args.reps
    prefill_reps = 2 if args.quick else 3
    print(f"# tandem bench attention  (cpu path: {tdm.cpu_isa()}, threads: {tdm.num_threads()}, "
          f"dtype: {args.dtype})")

    read_buf = fresh_bytes(READ_BYTES)
    bw, (bw_lo, bw_hi) = read_bandwidth(read_buf, reps=reps)
    sgemm, (sg_lo, sg_hi), _ = _sgemm()
    rows = [["memory read (stream, 256 MiB)", "anchor", "-", "-", f"{bw / 1e9:.1f} GB/s",
             f"spread {bw_lo / 1e9:.1f}-{bw_hi / 1e9:.1f}"],
            ["numpy sgemm 2048^3 (fp32)", "anchor", "-", "-", f"{sgemm / 1e9:.1f} GFLOPS",
             f"spread {sg_lo / 1e9:.1f}-{sg_hi / 1e9:.1f}"]]
    summary = []
    for geom in GEOMETRIES:
        for lk in decode_lengths:
            r, s = bench_decode(geom, lk, dtype, reps, read_buf, not args.no_mlx)
            rows += r
            summary += s
    for geom in GEOMETRIES:
        for length in prefill_lengths:
            r, s = bench_prefill(geom, length, dtype, prefill_reps, not args.no_mlx)
            rows += r
            summary += s
    # Anchors again at the end: the machine is shared, so show how much they moved.
    bw2, _ = read_bandwidth(read_buf, reps=reps)
    rows.append(["memory read (stream, 256 MiB), again", "anchor", "-", "-", f"{bw2 / 1e9:.1f} GB/s", "-"])

    print(fmt_table(["case", "kernel", "median ms", "min-max ms", "rate", "vs anchor"], rows))
    print()
    for what, ratio, target in summary:
        print(f"{what:34s} {ratio:6.0%}  (target {target:.0%}: {'met' if ratio >= target else 'NOT met'})")
    return 0
