"""Shared timing helpers: medians with spread, memory bandwidth, sgemm anchors."""

import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np


def measure(fn, reps=7, warmup=1):
    """Runs fn() reps times after warmup; returns (median, min, max) seconds."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), min(ts), max(ts)


def paired(ours, anchor, reps):
    """Alternates ours() and anchor() reps times (after one warm-up each) so both see the same
    machine load; returns both time lists and the per-pair ratios anchor_time / our_time."""
    ours(), anchor()
    t_ours, t_anchor = [], []
    for _ in range(reps):
        for fn, ts in ((ours, t_ours), (anchor, t_anchor)):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
    return t_ours, t_anchor, [a / o for o, a in zip(t_ours, t_anchor)]


def fresh_bytes(nbytes, seed=0):
    """A random uint8 buffer (numpy backs large ones with 2 MB pages, as the loader does weights)."""
    return np.random.default_rng(seed).integers(0, 255, size=nbytes, dtype=np.uint8)


def read_bandwidth(buf, reps=7):
    """Memory read bandwidth (bytes/s, median) streaming the uint8 buffer `buf` with the kernel
    pool's threads: the same threads and access pattern our GEMV uses."""
    from mlx_tandem import _ext

    med, lo, hi = measure(lambda: _ext.stream_read(buf), reps=reps)
    return buf.nbytes / med, (buf.nbytes / hi, buf.nbytes / lo)


_SGEMM_SNIPPET = r"""
import json, sys, time, numpy as np
m, n, k, reps = map(int, sys.argv[1:5])
rng = np.random.default_rng(0)
a = rng.standard_normal((m, k), dtype=np.float32); b = rng.standard_normal((n, k), dtype=np.float32)
a @ b.T
ts = []
for _ in range(reps):
    t = time.perf_counter(); a @ b.T; ts.append(time.perf_counter() - t)
ts.sort()
try:
    from threadpoolctl import threadpool_info
    info = [(i.get("internal_api"), i.get("architecture"), i.get("num_threads")) for i in threadpool_info()]
except Exception:
    info = []
print(json.dumps({"times": ts, "blas": info}))
"""


def numpy_sgemm_flops(m, n, k, reps=5):
    """numpy/OpenBLAS fp32 x @ W.T throughput (FLOP/s) measured in a subprocess with
    OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset (they slow a current OpenBLAS here)."""
    env = {k_: v for k_, v in os.environ.items() if k_ not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    out = subprocess.run([sys.executable, "-c", _SGEMM_SNIPPET, str(m), str(n), str(k), str(reps)],
                         env=env, capture_output=True, text=True, check=True)
    res = json.loads(out.stdout)
    ts = res["times"]
    flops = 2.0 * m * n * k
    return flops / statistics.median(ts), (flops / ts[-1], flops / ts[0]), res["blas"]


def fmt_table(headers, rows):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(str(h).ljust(w) for h, w in zip(headers, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    return "\n".join([line, sep, *body])
