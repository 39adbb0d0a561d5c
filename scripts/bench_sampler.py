"""The sampler's cost per decode step: sampling.sample_graph on B rows of random logits over a
49152-token vocabulary (SmolLM2's), per parameter set; medians of 20 runs on one thread.

    TANDEM_NUM_THREADS=1 taskset -c 1 python scripts/bench_sampler.py
"""

import mlx.core as mx

from mlx_tandem.bench.timing import measure
from mlx_tandem.sampling import SamplingParams, sample_graph

V = 49152
CASES = {"greedy": SamplingParams(), "temperature": SamplingParams(temperature=0.7),
         "top_p 0.9": SamplingParams(temperature=0.7, top_p=0.9), "top_k 40": SamplingParams(temperature=0.7, top_k=40),
         "min_p 0.05": SamplingParams(temperature=0.7, min_p=0.05)}


def median_ms(fn):
    return measure(fn, reps=20)[0] * 1e3


for B in (1, 8):
    logits = mx.random.normal((B, V), key=mx.random.key(0))
    mx.eval(logits)
    row = [f"{name} {median_ms(lambda: mx.eval(sample_graph(logits, [p] * B, list(range(B))))):.2f} ms"
           for name, p in CASES.items()]
    print(f"{B} rows: " + ", ".join(row))
