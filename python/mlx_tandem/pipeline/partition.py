"""Where to cut the layers between the ranks, and the fingerprint both ranks must agree on."""

from __future__ import annotations

import hashlib
import json
import re

from . import auth

_LAYER = re.compile(r"^model\.layers\.(\d+)\.")


def tensor_bytes(ckpt) -> dict[str, int]:
    """On-disk bytes of every tensor of a `checkpoint.Checkpoint`, from the headers (nothing is read)."""
    out = {}
    for name in ckpt.where:
        lo, hi = ckpt.info(name)["offsets"]
        out[name] = hi - lo
    return out


def step_bytes(ckpt) -> dict[str, int]:
    """Bytes each tensor streams per decode step at run time: matrices run as FP8 (one byte per
    element whatever their checkpoint dtype), the embedding is only gathered (one row per token),
    vectors and scales as stored. The head of a tied model is the embedding, quantized."""
    out = {}
    for name in ckpt.where:
        info = ckpt.info(name)
        lo, hi = info["offsets"]
        numel = 1
        for d in info["shape"]:
            numel *= d
        out[name] = numel if len(info["shape"]) == 2 and not name.endswith("weight_scale_inv") else hi - lo
    return out


def _per_rank(sizes: dict[str, int], split: int, embed_on_rank0: bool, embed_on_rank1: bool) -> tuple[int, int]:
    """Sums `sizes` per rank: layers by index, the final norm and lm_head on rank 1, the embedding
    where the flags say."""
    r0 = r1 = 0
    for name, n in sizes.items():
        m = _LAYER.match(name)
        if m:
            if int(m[1]) < split:
                r0 += n
            else:
                r1 += n
        elif name.startswith("model.embed_tokens."):
            r0 += n if embed_on_rank0 else 0
            r1 += n if embed_on_rank1 else 0
        else:  # model.norm, lm_head
            r1 += n
    return r0, r1


def rank_bytes(sizes: dict[str, int], num_layers: int, split: int, tied: bool) -> tuple[int, int]:
    """Bytes each rank reads: rank 0 the embedding and layers [0, split); rank 1 layers [split, L),
    the final norm and the head (with tied embeddings the head is derived from the embedding)."""
    if not 0 < split < num_layers:
        raise ValueError(f"partition: split {split} must be in 1..{num_layers - 1}")
    return _per_rank(sizes, split, True, tied)


def choose_split(sizes: dict[str, int], num_layers: int, tied: bool, split="auto",
                 step: dict[str, int] | None = None) -> int:
    """`split` as given (a layer index), or with "auto" the cut that best balances the bytes each rank
    streams per decode step (`step`, from step_bytes: the throughput of a pipeline is set by its slower
    stage), or the weight bytes when `step` is not given."""
    if num_layers < 2:
        raise ValueError(f"partition: a model with {num_layers} layer(s) cannot be split across two ranks")
    if split != "auto":
        try:
            s = int(split)
        except (TypeError, ValueError):
            raise ValueError(f"partition: --split must be 'auto' or a layer index, got {split!r}") from None
        rank_bytes(sizes, num_layers, s, tied)  # validates the range
        return s

    def imbalance(s):
        # per decode step rank 0 only gathers embedding rows; rank 1 streams it as the tied head
        r0, r1 = _per_rank(step, s, False, tied) if step else rank_bytes(sizes, num_layers, s, tied)
        return abs(r0 - r1), s

    return min(range(1, num_layers), key=imbalance)


def model_fingerprint(config: dict, sizes: dict[str, int]) -> str:
    """A short hash of the config and the tensor inventory: equal on both ranks iff they hold the same model."""
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for name in sorted(sizes):
        h.update(f"{name}:{sizes[name]};".encode())
    return h.hexdigest()[:16]


def describe(config: dict, sizes: dict[str, int], split: int) -> str:
    """The handshake description: model fingerprint, layer count and split point."""
    return auth.fingerprint(model=model_fingerprint(config, sizes), layers=config["num_hidden_layers"], split=split)
