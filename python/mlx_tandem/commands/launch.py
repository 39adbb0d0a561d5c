"""`tandem launch`: run one rank of the two-machine pipeline (the same command on both, only --node-rank
differs). Rank 0 listens, holds the embeddings and the first layers, and prints only the generated text
on stdout (status goes to stderr); rank 1 connects, holds the remaining layers and the head, and samples.
`--mode tp` runs tensor parallelism on MLX's distributed backend instead (tp/runner.py)."""

from __future__ import annotations

import os
import resource
import sys


def add_arguments(parser):
    parser.add_argument("--mode", choices=("pp", "tp"), default="pp",
                        help="pp (default): two-rank pipeline over our authenticated TCP protocol; tp: tensor "
                             "parallelism (every rank holds 1/N of each layer) on MLX's distributed backend, "
                             "which does not authenticate: loopback or a --private-link only")
    parser.add_argument("--nnodes", type=int, default=2, help="number of ranks (pp: 2)")
    parser.add_argument("--node-rank", type=int, required=True)
    tp = parser.add_argument_group("--mode tp")
    tp.add_argument("--backend", choices=("ring", "jaccl", "any"), default="ring",
                    help="MLX backend: ring (TCP), jaccl (RDMA over Thunderbolt 5, macOS), any (jaccl if "
                         "available and --ibv-devices is given, else ring)")
    tp.add_argument("--hostfile", default=None,
                    help='ring: MLX\'s hostfile (JSON, one list of "ip:port" per rank); default: --hosts')
    tp.add_argument("--hosts", default=None,
                    help="ring: each rank's IP, comma-separated, listening on --master-port + rank "
                         "(default: --master-addr for every rank, one machine)")
    tp.add_argument("--ibv-devices", default=None,
                    help="jaccl: MLX's device file (JSON matrix of the RDMA device from rank i to rank j, "
                         "null on the diagonal), or that JSON inline; the coordinator is --master-addr:--master-port")
    tp.add_argument("--private-link", default=None, metavar="CIDR",
                    help="allow the unauthenticated MLX backend on addresses in this network (a private "
                         "point-to-point link such as a Thunderbolt bridge); without it only loopback")
    parser.add_argument("--master-addr", default="127.0.0.1", help="rank 0's address (rank 0 listens on it)")
    parser.add_argument("--master-port", type=int, default=29500)
    parser.add_argument("--model", required=True, help="checkpoint directory, a .gguf file, or 'demo'")
    parser.add_argument("--secret-file", default=None,
                        help="file holding the shared secret (else the TANDEM_SECRET environment variable)")
    parser.add_argument("--insecure-no-auth", action="store_true",
                        help="allow a non-loopback address without a shared secret (trusted private links only)")
    parser.add_argument("--split", default="auto",
                        help="where rank 1 starts: a layer index; 'streamed' balances the bytes each rank reads "
                             "per decoded token (a mixture-of-experts layer counts k of its E experts); 'stored' "
                             "balances the bytes each rank holds in memory; 'auto' (default) picks streamed unless "
                             "that split's larger share would need over 90%% of this machine's available memory, "
                             "then stored. Each rank decides with its own machine's memory (both are assumed "
                             "alike); rank 0's stderr says which one auto picked and why")
    parser.add_argument("--no-memory-check", action="store_true",
                        help="load even if this rank's share does not seem to fit in the available memory "
                             "(also TANDEM_NO_MEMORY_CHECK=1)")
    parser.add_argument("--prompt", default=None, help="prompt text ('-' reads standard input) (rank 0)")
    parser.add_argument("--interactive", action="store_true", help="read prompts line by line from stdin (rank 0)")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--temp", type=float, default=0.0, help="sampling temperature (0 = greedy)")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--chat", action="store_true", help="wrap prompts in the model's chat template")
    parser.add_argument("--dtype", default=None, choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--prefill-chunk", type=int, default=128, help="prompt tokens per pipelined chunk")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds of silence before the peer is declared dead (tp: the deadline of every "
                             "collective)")
    parser.add_argument("--connect-timeout", type=float, default=300.0, help="seconds to wait for the other rank")
    parser.add_argument("--cpu", type=int, default=None, help="pin this rank to one CPU core")


def log(msg: str) -> None:
    print(f"[tandem rank] {msg}", file=sys.stderr, flush=True)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main(args) -> int:
    from ..pipeline import auth, ranks
    from ..pipeline.errors import FingerprintMismatch, PipelineError
    from .generate import resolve_model

    if args.mode == "tp":
        from ..tp.runner import run

        return run(args)
    if args.node_rank not in (0, 1):
        print(f"tandem launch: --node-rank must be 0 or 1, got {args.node_rank}", file=sys.stderr)
        return 1
    if args.nnodes != 2:
        print(f"tandem launch: only --nnodes 2 is supported, got {args.nnodes}", file=sys.stderr)
        return 1
    if args.node_rank == 0 and not (args.prompt or args.interactive):
        print("tandem launch: rank 0 needs --prompt TEXT or --interactive", file=sys.stderr)
        return 1
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    common = dict(host=args.master_addr, port=args.master_port, split=args.split, timeout=args.timeout,
                  insecure_no_auth=args.insecure_no_auth, dtype=args.dtype, connect_timeout=args.connect_timeout,
                  memory_check=not args.no_memory_check)
    try:
        common["secret"] = auth.load_secret(args.secret_file)
        path = resolve_model(args.model)
        if args.node_rank == 1:
            ranks.serve_rank1(path, **common)
            return 0
        pipe, tokenizer = ranks.start_rank0(path, prefill_chunk=args.prefill_chunk, **common)
        return run_rank0(args, pipe, tokenizer)
    except FingerprintMismatch as e:
        print(f"tandem launch: {e}", file=sys.stderr)
        if args.split == "auto":
            print("tandem launch: with --split auto each rank decides from its own machine's available memory; "
                  "if the splits differ, pass the same --split stored, streamed or layer index to both",
                  file=sys.stderr)
        return 1
    except PipelineError as e:  # before OSError: PeerTimeout and PeerDisconnected are OSErrors too
        print(f"tandem launch: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as e:
        print(f"tandem launch: {e}", file=sys.stderr)
        return 1
    finally:
        log(f"rank {args.node_rank}: peak RSS {peak_rss_mb():.0f} MB")


def _prompts(args):
    if args.interactive:
        for line in sys.stdin:
            if line.strip():
                yield line.rstrip("\n")
    else:
        yield sys.stdin.read() if args.prompt == "-" else args.prompt


def run_rank0(args, pipe, tokenizer) -> int:
    from ..pipeline.errors import FingerprintMismatch, PipelineError
    from ..pipeline.textgen import TextStats, stream_text

    sampling = dict(temperature=args.temp, top_p=args.top_p, top_k=args.top_k, seed=args.seed)
    prompts = _prompts(args)
    prompt = next(prompts, None)
    try:
        while prompt is not None:
            stats = TextStats()
            try:
                for piece in stream_text(pipe, tokenizer, prompt, args.max_tokens, chat=args.chat, stats=stats, **sampling):
                    sys.stdout.write(piece)
                    sys.stdout.flush()
            except FingerprintMismatch:
                raise
            except PipelineError as e:
                sys.stdout.write("\n")
                if not args.interactive:
                    raise
                log(f"rank 0: the pipeline failed ({type(e).__name__}: {e}); waiting for rank 1 to come back")
                pipe.reconnect(deadline=args.connect_timeout)
                log("rank 0: rank 1 is back; generating that answer again")
                continue
            sys.stdout.write("\n")
            sys.stdout.flush()
            log(f"rank 0: {stats.summary()}; link {pipe.conn.bytes_sent / 2**10:.0f} KiB sent, "
                f"{pipe.conn.bytes_received / 2**10:.0f} KiB received")
            prompt = next(prompts, None)
    finally:
        pipe.close()
    return 0
