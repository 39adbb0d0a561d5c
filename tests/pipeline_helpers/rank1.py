"""Rank 1 as a real process for the pipeline tests: dial rank 0, authenticate, serve the toy last stage.

    python rank1.py PORT [--secret S] [--split N] [--timeout T] [--serve-forever] [--dtype bf16]
Exit code 0 after SHUTDOWN; with --serve-forever it redials after every fault (like `tandem launch`).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import mlx.core as mx  # noqa: E402

from mlx_tandem.pipeline import auth  # noqa: E402
from mlx_tandem.pipeline.errors import PipelineError  # noqa: E402
from mlx_tandem.pipeline.stage import StageServer  # noqa: E402
from pipeline_helpers.toy import CONFIG, ToyModel  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--secret", default=None)
    p.add_argument("--split", type=int, default=3)
    p.add_argument("--timeout", type=float, default=3.0)
    p.add_argument("--serve-forever", action="store_true")
    p.add_argument("--dtype", default="float32")
    a = p.parse_args()
    creds = auth.Credentials(a.secret.encode() if a.secret else None, toy_description(a.split))
    model = ToyModel(CONFIG, (a.split, CONFIG["layers"]), getattr(mx, a.dtype))
    while True:
        try:
            conn = auth.dial(a.host, a.port, creds, deadline=30, timeout=a.timeout, handshake_timeout=a.timeout)
            StageServer(model, conn).serve()
            conn.close()
            if not a.serve_forever:
                return 0
        except PipelineError as e:
            print(f"rank1: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            if not a.serve_forever:
                return 3


def toy_description(split):
    return auth.fingerprint(model="toy-" + "-".join(f"{k}{v}" for k, v in sorted(CONFIG.items())), split=split)


if __name__ == "__main__":
    sys.exit(main())
