"""One tensor-parallel rank for the tests: `python worker.py RANK PORT0 MODEL N_TOKENS [DTYPE]`.
Greedy-decodes N tokens of a fixed prompt through generate_step and prints one JSON line
(tokens, resident-memory growth over loading, collective counts) on stdout."""

import json
import os
import sys

import mlx.core as mx

from mlx_tandem.generate import generate_step
from mlx_tandem.tp import Collectives, dist, load_sharded

PROMPT = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9]


def rss() -> int:
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS:"))


def main():
    rank, port, model, n = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    dtype = sys.argv[5] if len(sys.argv) > 5 else "float32"
    timeout = float(os.environ.get("TP_TEST_TIMEOUT", "10"))
    group, backend, peers = dist.init("ring", rank, 2, master_port=port)
    comm = Collectives(group, timeout=timeout, peers=peers)
    before = rss()
    m, _, _ = load_sharded(model, comm, dtype=dtype, memory_check=False)
    loaded = rss()
    tokens = []
    gen = generate_step(m, mx.array(PROMPT, mx.int32), temperature=0.0)
    for _ in range(n):
        tokens.append(next(gen))
        print(json.dumps({"token": tokens[-1]}), flush=True)
    gen.close()
    print(json.dumps({"backend": backend, "tokens": tokens, "rss_growth": loaded - before,
                      "collectives": comm.count}), flush=True)


if __name__ == "__main__":
    main()
