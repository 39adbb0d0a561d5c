"""Running a checkpoint as two ranks from Python (what `tandem launch` does on each machine):

    # machine A (rank 0)                                   # machine B (rank 1)
    pipe, tok = start_rank0("model", host="10.0.0.1",      serve_rank1("model", host="10.0.0.1",
                            secret=b"...")                             secret=b"...")
    for tok_id in pipe.generate_step(mx.array(ids)): ...

Both ranks compute the same split (and fingerprint) from the checkpoint's headers, load only their own
layers' tensors, and refuse a peer that holds a different model or split.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from . import auth, partition
from .errors import FingerprintMismatch, PipelineError
from .pipeline import Pipeline
from .stage import StageServer
from .transport import log


@dataclass(frozen=True)
class Plan:
    path: str
    num_layers: int
    split: int
    description: str  # the handshake fingerprint
    rank_bytes: tuple[int, int]  # on disk
    total_bytes: int
    choice: partition.Choice  # the criterion and each rank's stored / streamed bytes and memory need

    def layers(self, rank: int) -> tuple[int, int]:
        return (0, self.split) if rank == 0 else (self.split, self.num_layers)


def plan(path: str, split="auto", available: int | None = None) -> Plan:
    """The split both ranks compute from the checkpoint's headers. With "auto" it depends on the
    available memory, which each rank measures on its own machine (memory.available_bytes() unless
    `available` is given): the handshake happens after loading, so the figure is not exchanged and
    auto assumes the two machines alike. If they decide differently the handshake refuses the pair
    (split=a vs split=b) and `--split stored|streamed` on both settles it."""
    from .. import memory
    from ..checkpoint import Checkpoint, read_config

    config = read_config(path)
    ckpt = Checkpoint(path)
    sizes = partition.tensor_bytes(ckpt)
    L = config["num_hidden_layers"]
    tied = bool(config.get("tie_word_embeddings", False))
    if available is None and split == "auto":
        available = memory.available_bytes()
    choice = partition.decide(partition.resident_bytes(ckpt), partition.step_bytes(ckpt), L, tied, split, available)
    s = choice.split
    return Plan(path, L, s, partition.describe(config, sizes, s), partition.rank_bytes(sizes, L, s, tied),
                sum(sizes.values()), choice)


def _prepare(path, rank, *, host, secret, split, insecure_no_auth, dtype, memory_check=True):
    from .. import memory

    auth.check_secret_policy(host, secret, insecure_no_auth)
    p = plan(path, split)
    from ..checkpoint import load_model

    lo, hi = p.layers(rank)
    log(f"rank {rank}: {p.choice.summary()}")
    log(f"rank {rank}: layers [{lo}, {hi}) of {p.num_layers}, {p.rank_bytes[rank] / 2**20:.1f} MB of the "
        f"model's {p.total_bytes / 2**20:.1f} MB; {p.description}")
    hint = ("use --split stored (balances what each rank holds) or a machine with more memory"
            if p.choice.criterion != "stored" else
            "the split already balances what each rank holds: use machines with more memory, or a layer "
            "index that puts more on the other rank if it has more")
    memory.check_fits(p.choice.stored[rank], f"rank {rank} (layers [{lo}, {hi}), split {p.split})", hint,
                      enabled=memory_check, log=log)
    t0 = time.perf_counter()
    model, _ = load_model(path, layer_range=(lo, hi), dtype=dtype)  # reads only this rank's tensors
    log(f"rank {rank}: loaded in {time.perf_counter() - t0:.1f} s")
    return p, model, auth.Credentials(secret, p.description)


def start_rank0(path: str, *, host: str = "127.0.0.1", port: int = 29500, secret: bytes | None = None,
                split="auto", insecure_no_auth: bool = False, timeout: float = 30.0,
                connect_timeout: float | None = 300.0, prefill_chunk: int = 128, dtype=None,
                memory_check: bool = True):
    """Load the first stage, listen on host:port, wait for rank 1; returns (Pipeline, tokenizer).
    `split`: a layer index, "stored", "streamed" or "auto" (see partition.decide); memory_check=False
    skips the check that this rank's share fits in memory (memory.check_fits).
    `pipe.reconnect()` waits on the same listener for a restarted rank 1; `pipe.close()` ends both."""
    from ..tokenizer import TokenizerWrapper

    _, model, creds = _prepare(path, 0, host=host, secret=secret, split=split,
                               insecure_no_auth=insecure_no_auth, dtype=dtype, memory_check=memory_check)
    tokenizer = TokenizerWrapper.from_dir(path)
    listener = auth.Listener(host, port, creds, timeout=timeout)
    log(f"rank 0: listening on {host}:{listener.address[1]}, waiting for rank 1")
    try:
        conn = listener.accept(connect_timeout)
    except BaseException:
        listener.close()
        raise
    log("rank 0: rank 1 connected and authenticated")
    return Pipeline(model, conn, prefill_chunk=prefill_chunk, listener=listener), tokenizer


def serve_rank1(path: str, *, host: str = "127.0.0.1", port: int = 29500, secret: bytes | None = None,
                split="auto", insecure_no_auth: bool = False, timeout: float = 30.0,
                connect_timeout: float = 300.0, dtype=None, memory_check: bool = True) -> int:
    """Load the last stage, connect to rank 0 and serve until it ends the session (returns the number of
    requests served). After a fault it redials, so a restarted rank 0 finds it again; gives up with
    PeerTimeout when rank 0 stays unreachable for connect_timeout, or FingerprintMismatch at once."""
    _, model, creds = _prepare(path, 1, host=host, secret=secret, split=split,
                               insecure_no_auth=insecure_no_auth, dtype=dtype, memory_check=memory_check)
    while True:
        conn = auth.dial(host, port, creds, deadline=connect_timeout, timeout=timeout)
        log(f"rank 1: connected to {host}:{port} and authenticated")
        server = StageServer(model, conn)
        try:
            server.serve()
        except FingerprintMismatch:
            raise
        except PipelineError as e:
            log(f"rank 1: the pipeline failed ({type(e).__name__}: {e}); reconnecting")
            continue
        finally:
            conn.close()
        log(f"rank 1: rank 0 ended the session after {server.served} requests")
        return server.served
