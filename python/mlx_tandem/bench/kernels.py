"""`tandem bench kernels`: FP8 GEMV (decode) and GEMM (prefill) on Llama-70B projection
shapes against the anchors measured in the same run: memory read bandwidth, numpy/OpenBLAS
sgemm on fp32 weights, MLX bf16 matmul and MLX quantized_matmul (mxfp8, 8-bit affine)."""

import statistics

import mlx.core as mx
import numpy as np

import mlx_tandem as tdm
from mlx_tandem import _ext

from .timing import fmt_table, fresh_bytes, measure, numpy_sgemm_flops, paired, read_bandwidth

SHAPES = [(8192, 8192), (28672, 8192), (8192, 28672)]
QUICK_SHAPES = [(4096, 4096)]
SLOW_SLICE = 128  # MLX's CPU matmuls are ~1-2 GFLOPS here: GEMM anchors run on an N slice


def add_arguments(p):
    p.add_argument("--quick", action="store_true", help="one 4096x4096 shape, fewer repetitions")
    p.add_argument("--reps", type=int, default=7, help="timed repetitions for GEMV (GEMM uses fewer)")
    p.add_argument("--gemm-m", type=int, default=512)
    p.add_argument("--no-mlx", action="store_true", help="skip the (slow) MLX anchors")


def fresh_fp8_weight(n, k, seed):
    """Random codes (no NaN codes) and block scales: fresh bytes, larger than the L3 cache."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 0xFE, size=(n, k), dtype=np.uint8)
    codes[(codes & 0x7F) == 0x7F] = 0x7E
    scales = rng.uniform(1e-3, 1e-2, size=(-(-n // 128), -(-k // 128))).astype(np.float32)
    codes, scales = mx.array(codes), mx.array(scales)
    _ext.advise_hugepages([codes])  # 2 MB pages, as load() places weights (and numpy the anchor's buffer)
    return codes, scales


def mlx_anchors(m, n, k, reps):
    """MLX CPU: bf16 matmul, mxfp8 and 8-bit affine quantized_matmul; returns {name: (med, lo, hi, n_used)}."""
    n_used = n if m <= 8 else min(n, SLOW_SLICE)
    w = mx.random.normal((n_used, k)).astype(mx.bfloat16)
    x = mx.random.normal((m, k)).astype(mx.bfloat16)
    wq8, s8, b8 = mx.quantize(w, group_size=64, bits=8)
    wqf, sqf = mx.quantize(w, group_size=32, bits=8, mode="mxfp8")
    mx.eval(w, x, wq8, s8, b8, wqf, sqf)
    fns = {
        "mlx bf16 matmul": lambda: mx.eval(x @ w.T),
        "mlx mxfp8 qmm": lambda: mx.eval(mx.quantized_matmul(x, wqf, sqf, transpose=True, group_size=32,
                                                             bits=8, mode="mxfp8")),
        "mlx affine8 qmm": lambda: mx.eval(mx.quantized_matmul(x, wq8, s8, b8, transpose=True,
                                                               group_size=64, bits=8)),
    }
    return {name: (*measure(fn, reps=reps), n_used) for name, fn in fns.items()}


def main(args):
    shapes = QUICK_SHAPES if args.quick else SHAPES
    reps = 3 if args.quick else args.reps
    gemm_reps = 2 if args.quick else 3
    print(f"# tandem bench kernels  (cpu path: {tdm.cpu_isa()}, threads: {tdm.num_threads()})")
    rows = []
    summary = []
    for si, (n, k) in enumerate(shapes):
        codes, scales = fresh_fp8_weight(n, k, seed=si)
        mx.eval(codes, scales)
        wbytes = n * k + scales.size * 4
        read_buf = fresh_bytes(n * k)
        bw, bw_spread = read_bandwidth(read_buf, reps=reps)
        rows.append([f"{n}x{k}", "-", "memory read (stream)", "-", "-", f"{bw / 1e9:.1f}", "-", "anchor"])
        for m in (1, 4, args.gemm_m):
            x = mx.random.normal((m, k)).astype(mx.bfloat16)
            mx.eval(x)
            r = reps if m <= 8 else gemm_reps
            if m <= 8:
                # GEMV: each call timed next to a stream read of the same bytes, so the ratio
                # is taken under the same machine load (it drifts a lot here)
                t_ours, t_read, pair = paired(lambda: mx.eval(tdm.fp8_matmul(x, codes, scales)),
                                              lambda: _ext.stream_read(read_buf), 2 * r)
                med, lo, hi = statistics.median(t_ours), min(t_ours), max(t_ours)
                paired_ratio = statistics.median(pair) * wbytes / (n * k)
                paired_bw = n * k / statistics.median(t_read)
            else:
                med, lo, hi = measure(lambda: mx.eval(tdm.fp8_matmul(x, codes, scales)), reps=r)
            flops = 2.0 * m * n * k
            np_flops, _, _ = numpy_sgemm_flops(m, n, k, reps=r)
            ours_gbs = wbytes / med / 1e9
            if m <= 8:
                verdict = (f"{paired_ratio:.0%} of bandwidth (paired {paired_bw / 1e9:.1f} GB/s; "
                           f"{ours_gbs * 1e9 / bw:.0%} of the anchor row)")
                # The target is for M=1 (decode); M=4 is shown, without a target.
                summary.append((f"GEMV M={m} {n}x{k}", paired_ratio, 0.8 if m == 1 else None))
            else:
                verdict = f"{flops / med / np_flops:.0%} of numpy sgemm"
                summary.append((f"GEMM M={m} {n}x{k}", flops / med / np_flops, 0.6))
            rows.append([f"{n}x{k}", m, "tandem fp8_matmul", f"{med * 1e3:.2f}",
                         f"{lo * 1e3:.2f}-{hi * 1e3:.2f}", f"{ours_gbs:.1f}", f"{flops / med / 1e9:.1f}", verdict])
            rows.append([f"{n}x{k}", m, "numpy fp32 x@W.T", f"{flops / np_flops * 1e3:.2f}", "-",
                         f"{n * k * 4 / (flops / np_flops) / 1e9:.1f}", f"{np_flops / 1e9:.1f}",
                         f"ours {(flops / med) / np_flops:.2f}x"])
            if not args.no_mlx:
                for name, (amed, alo, ahi, n_used) in mlx_anchors(m, n, k, max(1, r // 2)).items():
                    aflops = 2.0 * m * n_used * k
                    tag = "" if n_used == n else f" (N slice {n_used})"
                    rows.append([f"{n}x{k}", m, name + tag, f"{amed * 1e3:.2f}", f"{alo * 1e3:.2f}-{ahi * 1e3:.2f}",
                                 f"{n_used * k / amed / 1e9:.2f}", f"{aflops / amed / 1e9:.2f}",
                                 f"ours {(flops / med) / (aflops / amed):.1f}x"])
        del codes, scales
    print(fmt_table(["N x K", "M", "implementation", "median ms", "spread ms", "weight GB/s", "GFLOPS",
                     "ratio"], rows))
    print("\nTargets (GEMV M=1 >= 80% of measured read bandwidth, GEMM >= 60% of numpy sgemm):")
    for name, got, target in summary:
        if target is None:
            print(f"  {name}: {got:.0%} (no target)")
        else:
            print(f"  {name}: {got:.0%} (target {target:.0%}) {'met' if got >= target else 'MISSED'}")
    return 0
