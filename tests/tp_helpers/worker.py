"""One tensor-parallel rank for the tests: `python worker.py RANK PORT MODEL N_TOKENS [DTYPE]`
(RANK -1: a single process, no backend). Prints one JSON line per generated token, then one with
the greedy tokens, the prompt's last-position logits, the resident-memory growth over loading and
the collective count."""

import json
import os
import sys

import mlx.core as mx

from mlx_tandem.checkpoint import load_model
from mlx_tandem.generate import generate_step

PROMPT = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9]


def rss() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def main():
    rank, port, model, n = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    dtype = sys.argv[5] if len(sys.argv) > 5 else "float32"
    comm, backend = None, None
    before = rss()
    if rank < 0:
        m, _ = load_model(model, dtype=dtype)
    else:
        from mlx_tandem.tp import Collectives, dist, load_sharded

        group, backend, peers = dist.init("ring", rank, 2, master_port=port)
        comm = Collectives(group, timeout=float(os.environ.get("TP_TEST_TIMEOUT", "10")), peers=peers)
        before = rss()
        m, _, _ = load_sharded(model, comm, dtype=dtype, memory_check=False)
    loaded = rss()
    logits = m(mx.array(PROMPT, mx.int32)[None])[0, -1].astype(mx.float32).tolist()
    tokens = []
    gen = generate_step(m, mx.array(PROMPT, mx.int32), temperature=0.0)
    for _ in range(n):
        tokens.append(next(gen))
        print(json.dumps({"token": tokens[-1]}), flush=True)
    gen.close()
    print(json.dumps({"backend": backend, "tokens": tokens, "logits": logits, "rss_growth": loaded - before,
                      "collectives": comm.count if comm else 0}), flush=True)


if __name__ == "__main__":
    from mlx_tandem.tp import TPError, exit_code

    try:
        main()
    except TPError as e:
        sys.exit(exit_code(e))
