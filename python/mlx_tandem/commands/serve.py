"""`tandem serve`: an OpenAI-compatible server (chat and completions, streaming, continuous batching).
One process by default; with --nnodes 2 this is rank 0 of the pipeline and rank 1 runs
`tandem launch --node-rank 1` with the same flags as today."""

from __future__ import annotations

import ipaddress
import os
import socket
import sys


def add_arguments(parser):
    parser.add_argument("--model", required=True, help="checkpoint directory, a .gguf file, or 'demo'")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve HTTP on")
    parser.add_argument("--port", type=int, default=8080, help="HTTP port (0: any free port, printed on stderr)")
    parser.add_argument("--api-key-file", default=None,
                        help="file holding the API key; every endpoint but /health then needs "
                             "'Authorization: Bearer <key>'")
    parser.add_argument("--insecure-no-api-key", action="store_true",
                        help="serve on a non-loopback address without an API key (anyone who reaches the port "
                             "can use the model)")
    parser.add_argument("--model-id", default=None, help="the id /v1/models reports (default: the directory name)")
    parser.add_argument("--max-concurrency", type=int, default=8, help="sequences decoded together")
    parser.add_argument("--max-queue", type=int, default=64,
                        help="requests waiting beyond --max-concurrency before 429 Too Many Requests")
    parser.add_argument("--prefill-chunk", type=int, default=256, help="prompt tokens per chunk between decode steps")
    parser.add_argument("--default-temperature", type=float, default=1.0,
                        help="temperature when a request gives none (OpenAI's default is 1)")
    parser.add_argument("--dtype", default=None, choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--no-memory-check", action="store_true")
    parser.add_argument("--cpu", type=int, default=None, help="pin the server to one CPU core")
    # the pipeline (rank 0 serves; rank 1 is `tandem launch --node-rank 1`)
    parser.add_argument("--nnodes", type=int, default=1, choices=[1, 2])
    parser.add_argument("--node-rank", type=int, default=0, choices=[0])
    parser.add_argument("--master-addr", default="127.0.0.1", help="where rank 0 listens for rank 1")
    parser.add_argument("--master-port", type=int, default=29500)
    parser.add_argument("--secret-file", default=None)
    parser.add_argument("--insecure-no-auth", action="store_true")
    parser.add_argument("--split", default="auto")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds of silence before rank 1 is declared dead")
    parser.add_argument("--connect-timeout", type=float, default=300.0, help="seconds to wait for rank 1 at start")


def log(msg: str) -> None:
    print(f"[tandem serve] {msg}", file=sys.stderr, flush=True)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


def _engine(args, path):
    from ..batch import LocalBackend
    from ..server import Engine

    opts = dict(max_concurrency=args.max_concurrency, max_queue=args.max_queue, prefill_chunk=args.prefill_chunk)
    if args.nnodes == 1:
        from ..generate import load

        model, tokenizer = load(path, dtype=args.dtype, memory_check=not args.no_memory_check)
        return Engine(LocalBackend(model), tokenizer, context_length=model.args.max_position_embeddings, **opts)
    from ..pipeline import auth, ranks
    from ..pipeline.backend import PipelineBackend

    pipe, tokenizer = ranks.start_rank0(
        path, host=args.master_addr, port=args.master_port, secret=auth.load_secret(args.secret_file),
        split=args.split, insecure_no_auth=args.insecure_no_auth, dtype=args.dtype, timeout=args.timeout,
        connect_timeout=args.connect_timeout, prefill_chunk=args.prefill_chunk,
        memory_check=not args.no_memory_check)
    backend = PipelineBackend(pipe)
    return Engine(backend, tokenizer, context_length=pipe.model.args.max_position_embeddings, peer=backend, **opts)


def main(args) -> int:
    import uvicorn

    from ..pipeline.errors import PipelineError
    from ..server import build_app
    from .generate import resolve_model

    api_key = None
    if args.api_key_file:
        with open(args.api_key_file) as f:
            api_key = f.read().strip()
        if not api_key:
            print(f"tandem serve: {args.api_key_file} is empty", file=sys.stderr)
            return 1
    elif not _is_loopback(args.host) and not args.insecure_no_api_key:
        print(f"tandem serve: refusing to serve on {args.host} without --api-key-file (pass "
              "--insecure-no-api-key to allow anyone who reaches the port)", file=sys.stderr)
        return 1
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    try:
        path = resolve_model(args.model)
        sock = socket.create_server((args.host, args.port))  # bound before loading: a busy port fails fast
        engine = _engine(args, path).start()
    except (ValueError, OSError, PipelineError) as e:
        print(f"tandem serve: {e}", file=sys.stderr)
        return 1
    model_id = args.model_id or os.path.basename(os.path.normpath(path))
    app = build_app(engine, model_id, api_key, args.default_temperature)
    host, port = sock.getsockname()[:2]
    log(f"serving {model_id} on http://{host}:{port}/v1 ({'API key required' if api_key else 'no API key'}; "
        f"max concurrency {args.max_concurrency}, queue {args.max_queue})")
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
    try:
        server.run(sockets=[sock])
    finally:
        engine.stop()
    return 0
