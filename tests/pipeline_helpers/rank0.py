"""Rank 0 as a process (for the namespace tests): listen, accept rank 1, generate, print JSON.

    python rank0.py HOST PORT --secret S [--prompts N] [--tokens T] [--chunk C] [--timeout T] [--rounds R]
Prints {"tokens": [...], "seconds": [...per round]} or {"error": "TypeName", "after": seconds}."""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mlx_tandem.pipeline import auth  # noqa: E402
from mlx_tandem.pipeline.errors import PipelineError  # noqa: E402
from mlx_tandem.pipeline.pipeline import Pipeline  # noqa: E402
from pipeline_helpers.rank1 import toy_description  # noqa: E402
from pipeline_helpers.toy import CONFIG, ToyModel  # noqa: E402

PROMPTS = [[5, 17, 3, 88, 41, 2, 9, 60, 33, 12, 7] * 6, [1, 2, 3], [90, 4, 4, 4, 71], [8, 8]]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--secret", required=True)
    p.add_argument("--prompts", type=int, default=1)
    p.add_argument("--tokens", type=int, default=8)
    p.add_argument("--chunk", type=int, default=8)
    p.add_argument("--timeout", type=float, default=3.0)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--split", type=int, default=3)
    a = p.parse_args()
    creds = auth.Credentials(a.secret.encode(), toy_description(a.split))
    listener = auth.Listener(a.host, a.port, creds, timeout=a.timeout, handshake_timeout=a.timeout)
    print("listening", file=sys.stderr, flush=True)
    pipe = Pipeline(ToyModel(CONFIG, (0, a.split)), listener.accept(30), prefill_chunk=a.chunk)
    print("generating", file=sys.stderr, flush=True)
    out = {"tokens": None, "seconds": []}
    t0 = time.monotonic()
    try:
        for _ in range(a.rounds):
            t0 = time.monotonic()
            out["tokens"] = pipe.generate_batch(PROMPTS[:a.prompts], a.tokens)
            out["seconds"].append(time.monotonic() - t0)
        pipe.close()
    except PipelineError as e:
        out = {"error": type(e).__name__, "message": str(e), "after": time.monotonic() - t0}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
