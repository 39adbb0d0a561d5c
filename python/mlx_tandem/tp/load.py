"""Loading this rank's shard of a checkpoint (each rank reads only its rows / column blocks)."""

from __future__ import annotations

import sys

from ..checkpoint import Checkpoint, load_model, read_config
from ..memory import check_fits, fmt_bytes
from ..tokenizer import TokenizerWrapper
from .layers import wrap
from .plan import ShardPlan


def load_sharded(path: str, comm, dtype=None, head_bf16=None, memory_check=True, log=None,
                 tokenizer: bool = True):
    """(model, tokenizer, plan) of this rank (comm.rank of comm.size). The model runs the whole
    graph on its shards; its logits are the full vocabulary on every rank. tokenizer=False: None
    in its place (benchmarks that feed token ids)."""
    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    plan = ShardPlan.build(read_config(path), comm.rank, comm.size)  # ShardError before any tensor is read
    for note in plan.notes:
        log(f"tensor parallel: {note}")
    if memory_check:
        share = _share_bytes(path, comm.size)
        check_fits(share, f"rank {comm.rank}'s 1/{comm.size} of the model", "use more ranks or --mode pp",
                   enabled=memory_check)
        log(f"tensor parallel: rank {comm.rank} holds about {fmt_bytes(share)} of weights")
    model, _ = load_model(path, dtype=dtype, head_bf16=head_bf16, shard=plan)
    wrap(model, plan, comm)
    return model, TokenizerWrapper.from_dir(path) if tokenizer else None, plan


def _share_bytes(path, world) -> int:
    """The checkpoint's tensor bytes (MTP layers excluded) over the world size: embeddings, norms
    and the router, which every rank holds whole, are a small part of any large model."""
    ckpt = Checkpoint(path)
    L = ckpt.config["num_hidden_layers"]
    total = 0
    for name in ckpt.where:
        if name.startswith("model.layers.") and int(name.split(".")[2]) >= L:
            continue
        lo, hi = ckpt.info(name)["offsets"]
        total += hi - lo
    return total // world
