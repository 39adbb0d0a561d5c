"""`tandem demo [--ranks 2]`: the packaged demo model (SmolLM2-135M-Instruct), in one process or as two
`tandem launch` ranks on this machine (loopback, a fresh random secret, one CPU core per rank)."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys


def add_arguments(parser):
    parser.add_argument("--ranks", type=int, default=1, choices=[1, 2], help="1: one process; 2: two local ranks")
    parser.add_argument("--prompt", default="What is the capital of France?")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--temp", type=float, default=0.0)
    parser.add_argument("--no-chat", action="store_true", help="send the prompt as raw text, not as a chat turn")
    parser.add_argument("--split", default="auto")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(args) -> int:
    from ..demo_model import demo_model_path

    try:
        path = demo_model_path()
    except (FileNotFoundError, ValueError) as e:
        print(f"tandem demo: {e}", file=sys.stderr)
        return 1
    common = ["--model", path, "--max-tokens", str(args.max_tokens), "--temp", str(args.temp)]
    chat = [] if args.no_chat else ["--chat"]
    if args.ranks == 1:
        cmd = [sys.executable, "-m", "mlx_tandem", "generate", *common, *chat, "--prompt", args.prompt]
        return subprocess.call(cmd)
    port = str(_free_port())
    env = {**os.environ, "TANDEM_SECRET": secrets.token_hex(16)}
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) >= 2:  # one core (and one kernel thread) per rank, as on two machines
        env["TANDEM_NUM_THREADS"] = "1"
    base = [sys.executable, "-m", "mlx_tandem", "launch", "--master-addr", "127.0.0.1", "--master-port", port,
            "--model", path, "--split", str(args.split)]
    pin = (lambda r: ["--cpu", str(cores[r])]) if len(cores) >= 2 else (lambda r: [])
    rank1 = subprocess.Popen([*base, "--node-rank", "1", *pin(1)], env=env, stdout=subprocess.DEVNULL)
    try:
        rc0 = subprocess.call([*base, "--node-rank", "0", *pin(0), *common[2:], *chat, "--prompt", args.prompt], env=env)
        rc1 = rank1.wait(timeout=60)
    finally:
        if rank1.poll() is None:
            rank1.kill()
            rank1.wait()
    return rc0 or rc1
