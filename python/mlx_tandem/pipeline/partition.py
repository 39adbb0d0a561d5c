"""Where to cut the layers between the ranks, and the fingerprint both ranks must agree on.

Three byte counts per tensor, all from the safetensors headers (nothing is read):
  tensor_bytes   as stored on disk (the fingerprint's inventory, the "MB of the model" figure)
  resident_bytes as held in memory once loaded (float matrices of a float checkpoint become FP8)
  step_bytes     as streamed per decoded token (a mixture-of-experts layer reads only k of its E experts)
Layers with index >= num_hidden_layers (DeepSeek's MTP module) are left out of all three: no rank loads
them, so they are neither counted nor fingerprinted, and their shards' headers are never opened.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from .. import memory
from . import auth

_LAYER = re.compile(r"^model\.layers\.(\d+)\.")
# routed experts, one tensor per expert (DeepSeek/Qwen-MoE mlp.experts.E.*, Mixtral block_sparse_moe.experts.E.*)
# or stacked (mlp.experts.gate_up_proj); shared experts ("shared_experts", "shared_expert") do not match
_ROUTED = re.compile(r"^model\.layers\.\d+\.(?:mlp|block_sparse_moe)\.experts\.")
_ROUTER = re.compile(r"^model\.layers\.\d+\.(?:mlp|block_sparse_moe)\.gate\.")
CRITERIA = ("stored", "streamed")


def model_tensors(ckpt) -> list[str]:
    """The tensor names a loader uses: all but those of layers >= num_hidden_layers (the MTP module)."""
    L = ckpt.config["num_hidden_layers"]
    return [n for n in ckpt.where if not ((m := _LAYER.match(n)) and int(m[1]) >= L)]


def tensor_bytes(ckpt) -> dict[str, int]:
    """On-disk bytes of every tensor of a `checkpoint.Checkpoint` the model uses."""
    out = {}
    for name in model_tensors(ckpt):
        lo, hi = ckpt.info(name)["offsets"]
        out[name] = hi - lo
    return out


def experts_per_token(config: dict) -> tuple[int, int] | None:
    """(k, E) of a mixture-of-experts config (DeepSeek n_routed_experts, Mixtral num_local_experts,
    Qwen-MoE num_experts; num_experts_per_tok), else None."""
    E = config.get("n_routed_experts") or config.get("num_local_experts") or config.get("num_experts")
    k = config.get("num_experts_per_tok")
    if not E and not k:
        return None
    if not (isinstance(E, int) and isinstance(k, int) and 0 < k <= E):
        raise ValueError(f"partition: bad mixture-of-experts config: {E} routed experts, {k} per token")
    return k, E


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def step_bytes(ckpt) -> dict[str, int]:
    """Bytes each tensor streams per decode step at run time: matrices run as FP8 (one byte per
    element whatever their checkpoint dtype), the embedding is only gathered (one row per token),
    vectors, scales and MoE routers as stored. The head of a tied model is the embedding, quantized;
    a float head of an FP8 checkpoint runs as stored (load_model's default).
    A routed expert's tensors count k/E of that (each token reads k of the layer's E experts: the
    average over tokens, exact for the layer as a whole)."""
    moe = experts_per_token(ckpt.config)
    # the loader's default keeps a float head of an FP8 checkpoint as it is (DeepSeek's bf16 lm_head)
    float_head = (bool(ckpt.config.get("quantization_config")) and "lm_head.weight_scale_inv" not in ckpt
                  and not ckpt.config.get("tie_word_embeddings", False))
    out = {}
    for name in model_tensors(ckpt):
        info = ckpt.info(name)
        lo, hi = info["offsets"]
        matrix = (len(info["shape"]) == 2 and not name.endswith("weight_scale_inv") and not _ROUTER.match(name)
                  and not (float_head and name == "lm_head.weight"))
        n = _numel(info["shape"]) if matrix else hi - lo
        if _ROUTED.match(name):
            if moe is None:
                raise ValueError(f"partition: {name!r} is a routed expert, but the config has no "
                                 f"n_routed_experts / num_experts_per_tok")
            n = n * moe[0] // moe[1]
        out[name] = n
    return out


def resident_bytes(ckpt) -> dict[str, int]:
    """Bytes each tensor holds in memory once loaded: a float checkpoint's matrices (all but the
    embedding and MoE routers) are quantized at load to one byte per element plus a float32 scale
    per 128x128 block; everything else, and every tensor of an FP8 checkpoint, as stored."""
    fp8 = bool(ckpt.config.get("quantization_config"))
    out = {}
    for name in model_tensors(ckpt):
        info = ckpt.info(name)
        lo, hi = info["offsets"]
        shape = info["shape"]
        if (not fp8 and len(shape) == 2 and info["dtype"] in ("BF16", "F16", "F32")
                and not name.startswith("model.embed_tokens.") and not _ROUTER.match(name)):
            out[name] = _numel(shape) + 4 * (-(-shape[0] // 128)) * (-(-shape[1] // 128))
        else:
            out[name] = hi - lo
    return out


def share_bytes(sizes: dict[str, int], lo: int, hi: int, *, embed: bool, head: bool) -> int:
    """Sum of `sizes` over layers [lo, hi), plus the embedding when `embed`, plus the final norm and
    the head when `head`."""
    total = 0
    for name, n in sizes.items():
        m = _LAYER.match(name)
        if m:
            total += n if lo <= int(m[1]) < hi else 0
        elif name.startswith("model.embed_tokens."):
            total += n if embed else 0
        else:  # model.norm, lm_head
            total += n if head else 0
    return total


def _per_rank(sizes: dict[str, int], split: int, embed_on_rank0: bool, embed_on_rank1: bool) -> tuple[int, int]:
    """Sums `sizes` per rank: layers by index, the final norm and lm_head on rank 1, the embedding
    where the flags say."""
    return (share_bytes(sizes, 0, split, embed=embed_on_rank0, head=False),
            share_bytes(sizes, split, 1 << 62, embed=embed_on_rank1, head=True))


def rank_bytes(sizes: dict[str, int], num_layers: int, split: int, tied: bool) -> tuple[int, int]:
    """Bytes each rank reads: rank 0 the embedding and layers [0, split); rank 1 layers [split, L),
    the final norm and the head (with tied embeddings the head is derived from the embedding)."""
    if not 0 < split < num_layers:
        raise ValueError(f"partition: split {split} must be in 1..{num_layers - 1}")
    return _per_rank(sizes, split, True, tied)


@dataclass(frozen=True)
class Choice:
    """A split and why: `criterion` is "stored", "streamed" or "layer" (given by hand); `stored` the
    resident bytes and `streamed` the bytes per decoded token of each rank; `need` each rank's memory
    need (stored + margin, see memory.need_bytes); `reason` one line for the log."""
    split: int
    criterion: str
    reason: str
    stored: tuple[int, int]
    streamed: tuple[int, int]
    need: tuple[int, int]

    def summary(self) -> str:
        f = memory.fmt_bytes
        return (f"split {self.split} ({self.criterion}: {self.reason}); per rank stored {f(self.stored[0])} | "
                f"{f(self.stored[1])}, streamed per token {f(self.streamed[0])} | {f(self.streamed[1])}")


# auto balances stored bytes once the streamed-balanced split's larger need passes this fraction of the
# available memory: slack below the hard memory check, so that two alike machines measuring their free
# memory a few seconds apart reach the same decision
AUTO_FIT_FRACTION = 0.9


def _best(sizes, num_layers, embed_on_rank0, tied) -> int:
    def imbalance(s):
        r0, r1 = _per_rank(sizes, s, embed_on_rank0, tied)
        return abs(r0 - r1), s
    return min(range(1, num_layers), key=imbalance)


def decide(held: dict[str, int], step: dict[str, int], num_layers: int, tied: bool, split="auto",
           available: int | None = None) -> Choice:
    """The split for `split` = a layer index, "stored" (balance `held`, the resident bytes: what must
    fit), "streamed" (balance `step`, the bytes per decoded token: a pipeline runs at its slower
    stage's rate) or "auto": streamed, unless its larger rank's memory need exceeds AUTO_FIT_FRACTION
    of `available` (this machine's free bytes, taken as both machines' figure; None: unknown, streamed)."""
    if num_layers < 2:
        raise ValueError(f"partition: a model with {num_layers} layer(s) cannot be split across two ranks")
    if split in CRITERIA or split == "auto":
        streamed_split = _best(step, num_layers, False, tied)
        s, criterion = streamed_split, "streamed"
        if split == "stored":
            s, criterion, reason = _best(held, num_layers, True, tied), "stored", "forced by --split stored"
        elif split == "streamed":
            reason = "forced by --split streamed"
        elif available is None:
            reason = "auto; this machine's available memory is unknown"
        else:
            worst = max(memory.need_bytes(b) for b in rank_bytes(held, num_layers, streamed_split, tied))
            if worst > AUTO_FIT_FRACTION * available:
                s, criterion = _best(held, num_layers, True, tied), "stored"
                reason = (f"auto; the streamed-balanced split {streamed_split} would need {memory.fmt_bytes(worst)} on one rank, "
                          f"over {AUTO_FIT_FRACTION:.0%} of the {memory.fmt_bytes(available)} available here")
            else:
                reason = (f"auto; its larger rank needs {memory.fmt_bytes(worst)}, within {AUTO_FIT_FRACTION:.0%} of the "
                          f"{memory.fmt_bytes(available)} available here")
    else:
        try:
            s = int(split)
        except (TypeError, ValueError):
            raise ValueError(f"partition: --split must be 'auto', 'stored', 'streamed' or a layer index, "
                             f"got {split!r}") from None
        criterion, reason = "layer", "given by hand"
    stored = rank_bytes(held, num_layers, s, tied)  # validates the range
    return Choice(s, criterion, reason, stored, _per_rank(step, s, False, tied),
                  tuple(memory.need_bytes(b) for b in stored))


def choose_split(sizes: dict[str, int], num_layers: int, tied: bool, split="auto",
                 step: dict[str, int] | None = None, available: int | None = None) -> int:
    """The split index of `decide` (`sizes` as the stored bytes; without `step` they also stand in
    for the streamed bytes, with the embedding counted on rank 0)."""
    if step is None:
        step = sizes
        if split in ("auto", "streamed"):
            split = "stored"  # the old weight-bytes balance, embedding included
    return decide(sizes, step, num_layers, tied, split, available).split


def model_fingerprint(config: dict, sizes: dict[str, int]) -> str:
    """A short hash of the config and the tensor inventory: equal on both ranks iff they hold the same model."""
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for name in sorted(sizes):
        h.update(f"{name}:{sizes[name]};".encode())
    return h.hexdigest()[:16]


def describe(config: dict, sizes: dict[str, int], split: int) -> str:
    """The handshake description: model fingerprint, layer count and split point."""
    return auth.fingerprint(model=model_fingerprint(config, sizes), layers=config["num_hidden_layers"], split=split)
