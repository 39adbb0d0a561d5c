"""`tandem launch --mode tp`: one rank of a tensor-parallel run. Every rank loads its shard, gets
rank 0's prompt and seed, and runs the same generation loop on identical logits; rank 0 prints the
text on stdout (status on stderr)."""

from __future__ import annotations

import os
import secrets
import statistics
import sys
import time

from . import dist
from .collective import Collectives
from .errors import ShardError, TPError, exit_code
from .load import load_sharded


def log(msg: str) -> None:
    print(f"[tandem tp] {msg}", file=sys.stderr, flush=True)


def collective_summary(comm: Collectives, tokens: int) -> str:
    if not comm.seconds or tokens <= 0:
        return "no collectives"
    ms = sorted(1e3 * s for s in comm.seconds)
    p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))]
    return (f"{comm.count / tokens:.1f} collectives/token, {statistics.median(ms):.3f} ms median, {p99:.3f} ms p99, "
            f"{comm.bytes_sent / tokens / 1024:.1f} KiB sent/token")


def run(args) -> int:
    from ..commands.generate import resolve_model
    from ..generate import prepare_prompt, stream_generate

    rank, world = args.node_rank, args.nnodes
    if args.interactive:
        log("--interactive is not supported with --mode tp yet (use --prompt)")
        return 1
    if rank == 0 and not args.prompt:
        log("rank 0 needs --prompt TEXT")
        return 1
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    try:
        group, backend, peers = dist.init(args.backend, rank, world, hostfile=args.hostfile, hosts=args.hosts,
                                          master_addr=args.master_addr, master_port=args.master_port,
                                          ibv_devices=args.ibv_devices, private_link=args.private_link)
        log(f"rank {rank} of {world}: MLX distributed backend '{backend}'")
        comm = Collectives(group, timeout=args.timeout, peers=peers)
        model, tokenizer, _ = load_sharded(resolve_model(args.model), comm, dtype=args.dtype,
                                           memory_check=not args.no_memory_check, log=log)
        ids = None
        if rank == 0:
            text = sys.stdin.read() if args.prompt == "-" else args.prompt
            ids = prepare_prompt(tokenizer, text, args.chat)
        seed = args.seed if args.seed is not None else secrets.randbits(31)
        # the first exchange waits for the slowest rank to finish loading: the connect timeout
        n, seed = comm.broadcast_ints([len(ids), seed % (1 << 31)] if rank == 0 else None, 2,
                                      timeout=args.connect_timeout)
        ids = comm.broadcast_ints(ids, n)
        comm.reset_stats()
        t0, tokens = time.perf_counter(), 0
        last = None
        for r in stream_generate(model, tokenizer, ids, args.max_tokens, temperature=args.temp, top_p=args.top_p,
                                 top_k=args.top_k, seed=seed):
            if rank == 0:
                sys.stdout.write(r.text)
                sys.stdout.flush()
            tokens, last = r.generation_tokens, r
        if rank == 0:
            sys.stdout.write("\n")
            sys.stdout.flush()
        if last is not None:
            log(f"rank {rank}: {tokens} tokens, prompt {last.prompt_tokens} tokens at {last.prompt_tps:.1f} tok/s, "
                f"decode {last.generation_tps:.2f} tok/s, {time.perf_counter() - t0:.1f} s; "
                f"{collective_summary(comm, tokens)}")
        return 0
    except TPError as e:
        return exit_code(e)
    except (ShardError, ValueError, OSError) as e:
        log(f"rank {rank}: {e}")
        return 1
