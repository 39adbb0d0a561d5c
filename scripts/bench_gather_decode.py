"""Decode rate of gather_fp8_matmul on DeepSeek-V3's routed experts (T=1, k=8 of E=16):
GB/s of the selected experts' bytes against a stream read of as many bytes, each call paired
with the anchor (bench/timing.py's habit), plus the same 8 experts as 8 separate fp8_matmul calls
(8 fork/join rounds) and one fp8_matmul over a weight of the same size.

    python scripts/bench_gather_decode.py [--reps 20] [--experts 16]
"""

import argparse
import statistics

import mlx.core as mx
import numpy as np

import mlx_tandem as tdm
from mlx_tandem import _ext
from mlx_tandem.bench.kernels import fresh_fp8_weight
from mlx_tandem.bench.timing import fresh_bytes, paired

SHAPES = {"gate_up": (4096, 7168), "down": (7168, 2048)}


def stacked(E, n, k, seed):
    parts = [fresh_fp8_weight(n, k, seed * 1000 + e) for e in range(E)]
    codes, scales = mx.stack([c for c, _ in parts]), mx.stack([s for _, s in parts])
    mx.eval(codes, scales)
    _ext.advise_hugepages([codes])
    return codes, scales


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--experts", type=int, default=16)
    p.add_argument("--k", type=int, default=8)
    args = p.parse_args()
    print(f"# gather_fp8_matmul decode (isa {tdm.cpu_isa()}, threads {tdm.num_threads()}), T=1, "
          f"k={args.k} of E={args.experts}, median of {args.reps}")
    rng = np.random.default_rng(0)
    for si, (name, (n, k)) in enumerate(SHAPES.items()):
        codes, scales = stacked(args.experts, n, k, si)
        x = mx.random.normal((1, k)).astype(mx.bfloat16)
        picks = [mx.array(rng.permutation(args.experts)[: args.k][None].astype(np.int32))
                 for _ in range(args.reps + 1)]
        mx.eval(x, *picks)
        sel_bytes = args.k * (n * k + scales[0].size * 4)
        buf = fresh_bytes(args.k * n * k, seed=si + 7)
        it = iter(picks * 4)  # a fresh random choice of experts per call: never the same bytes twice

        def gather():
            mx.eval(tdm.gather_fp8_matmul(x, codes, scales, next(it)))

        # the same experts as k fp8_matmul primitives (k fork/join rounds) on per-expert arrays
        # that alias the stacked codes (slices, evaluated once: no copy per call)
        per_expert = [(codes[e], scales[e]) for e in range(args.experts)]
        mx.eval(per_expert)

        def separate():
            idx = np.array(next(it))[0]
            mx.eval(*[tdm.fp8_matmul(x, *per_expert[int(e)]) for e in idx])

        big_c, big_s = fresh_fp8_weight(args.k * n, k, seed=si + 99)  # one matmul, same bytes
        mx.eval(big_c, big_s)

        def one_matmul():
            mx.eval(tdm.fp8_matmul(x, big_c, big_s))

        read = lambda: _ext.stream_read(buf)  # noqa: E731
        for label, fn in (("gather_fp8_matmul", gather), ("8 x fp8_matmul", separate),
                          ("one fp8_matmul, same bytes", one_matmul)):
            t_ours, t_read, ratio = paired(fn, read, args.reps)
            ours = sel_bytes / statistics.median(t_ours) / 1e9
            anchor = args.k * n * k / statistics.median(t_read) / 1e9
            print(f"{name:8s} {n}x{k}  {label:28s} {statistics.median(t_ours) * 1e3:7.2f} ms  "
                  f"{ours:5.1f} GB/s  stream_read {anchor:5.1f} GB/s  paired ratio "
                  f"{statistics.median(ratio) * sel_bytes / (args.k * n * k):.0%}")
        del codes, scales, big_c, big_s, per_expert


if __name__ == "__main__":
    main()
