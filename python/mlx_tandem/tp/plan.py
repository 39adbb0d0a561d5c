"""Which tensors each rank holds, and the model dims it is built with (Megatron-style tensor
parallelism over FP8 block-scaled weights).

Column-parallel (this rank's output rows, no communication): Llama q/k/v and gate/up; DeepSeek
q_b (or q), kv_b, dense and shared-expert gate/up, each routed expert's gate/up. Row-parallel (this
rank's input columns; the partial sums are added by one all_sum per sub-layer): o_proj, down_proj,
the routed experts' down. The head is split by vocabulary rows (one all_gather of the logits).
Replicated: embeddings, norms, DeepSeek's q_a / kv_a (small, and the latent cache they feed is
the same on every rank) and the router.

Routed experts are split by width (every rank holds a 1/world slice of every expert), not by
expert: at batch 1 a token's 8 experts then cost every rank the same bytes whatever the routing,
where expert parallelism leaves the rank holding more of the chosen experts the slowest (8 of 256
experts on 2 ranks: one rank holds >= 5 of them in 72% of tokens; on average the busier rank reads
5.08 experts, not 4).

Splits follow whole FP8 scale blocks: a part that is not a multiple of the block size is refused
before anything is read (the scales could not be split with it). Shards are taken before the
q/k/v and gate/up fusion of finish_loading, so fusing works on each rank's parts as usual.
"""

from __future__ import annotations

import dataclasses

from ..checkpoint import block_size_of
from .errors import ShardError

COLUMN = 0  # split the weight's rows (output features)
ROW = 1     # split the weight's columns (input features)

_LLAMA = {"q_proj": COLUMN, "k_proj": COLUMN, "v_proj": COLUMN, "o_proj": ROW,
          "gate_proj": COLUMN, "up_proj": COLUMN, "down_proj": ROW}
_DEEPSEEK = {"q_proj": COLUMN, "q_b_proj": COLUMN, "kv_b_proj": COLUMN, "o_proj": ROW,
             "gate_proj": COLUMN, "up_proj": COLUMN, "down_proj": ROW}
_ARCH = {"llama": _LLAMA, "mistral": _LLAMA, "qwen2": _LLAMA,
         "deepseek_v3": _DEEPSEEK, "kimi_k2": _DEEPSEEK, "deepseek_v2": _DEEPSEEK}


@dataclasses.dataclass
class ShardPlan:
    config: dict
    rank: int
    world: int
    block: tuple[int, int]
    shard_head: bool  # False: the vocabulary does not split into whole blocks; every rank holds the head
    notes: list[str]

    @classmethod
    def build(cls, config: dict, rank: int, world: int) -> "ShardPlan":
        """Check that `config` splits over `world` ranks; ShardError naming the numbers otherwise."""
        kind = config.get("model_type")
        if kind not in _ARCH:
            raise ShardError(f"tensor parallel: model_type {kind!r} is not supported "
                             f"(supported: {', '.join(sorted(_ARCH))})")
        if world < 1 or not 0 <= rank < world:
            raise ShardError(f"tensor parallel: rank {rank} of {world} ranks")
        block = block_size_of(config) or (128, 128)
        plan = cls(config, rank, world, block, True, [])
        for what, n, unit, axis in plan._parts():
            plan._check(what, n, unit, axis)
        V = config["vocab_size"]
        if V % world or (V // world) % block[0]:
            plan.shard_head = False
            plan.notes.append(f"the head is replicated: vocab_size {V} does not split into {world} parts "
                              f"of whole {block[0]}-row blocks")
        return plan

    def _parts(self):
        """(what, count, rows per unit, axes) for every dimension that is split."""
        c, w = self.config, self.world
        H = c["num_attention_heads"]
        if c["model_type"] in ("llama", "mistral", "qwen2"):
            D = c.get("head_dim") or c["hidden_size"] // H
            Hkv = c.get("num_key_value_heads") or H
            yield ("num_attention_heads", H, D, "q_proj rows / o_proj columns")
            yield ("num_key_value_heads", Hkv, D, "k_proj / v_proj rows")
            yield ("intermediate_size", c["intermediate_size"], 1, "gate/up rows / down_proj columns")
            return
        nope, rope, v = c.get("qk_nope_head_dim", 128), c.get("qk_rope_head_dim", 64), c.get("v_head_dim", 128)
        yield ("num_attention_heads", H, nope + rope, "q_b_proj rows")
        yield ("num_attention_heads", H, nope + v, "kv_b_proj rows")
        yield ("num_attention_heads", H, v, "o_proj columns")
        yield ("intermediate_size", c["intermediate_size"], 1, "dense gate/up rows / down_proj columns")
        if c.get("n_routed_experts"):
            yield ("moe_intermediate_size", c["moe_intermediate_size"], 1,
                   "every routed and shared expert's gate/up rows / down_proj columns")

    def _check(self, what, n, unit, axes):
        w = self.world
        if n % w:
            raise ShardError(f"tensor parallel: {what} = {n} does not divide evenly over {w} ranks")
        part = n // w * unit
        b = max(self.block)
        if part % b:
            raise ShardError(f"tensor parallel: {what} = {n} over {w} ranks gives {n // w} per rank = {part} "
                             f"{axes} per rank, not a multiple of the FP8 scale block {b}; shards must hold "
                             f"whole {self.block[0]}x{self.block[1]} blocks")

    # ---- the hooks checkpoint.load_model calls -------------------------------------------------
    def local_config(self, config: dict) -> dict:
        """config.json as this rank's model is built: heads and widths divided by the world size."""
        c, w = dict(config), self.world
        H = c["num_attention_heads"]
        if c["model_type"] in ("llama", "mistral", "qwen2"):
            c["head_dim"] = c.get("head_dim") or c["hidden_size"] // H
            c["num_key_value_heads"] = (c.get("num_key_value_heads") or H) // w
        elif c.get("n_routed_experts"):
            c["moe_intermediate_size"] //= w
        c["num_attention_heads"] = H // w
        c["intermediate_size"] //= w
        if self.shard_head:
            c["tie_word_embeddings"] = False  # the head's rows are read from the embedding (see source)
        return c

    def prepare(self, model) -> None:
        """Swap in a head of this rank's vocabulary rows before the weights are read."""
        if not self.shard_head or "lm_head" not in model:
            return
        import mlx.nn as nn

        from ..nn import FP8Linear

        head = model.lm_head
        H, V = model.args.hidden_size, model.args.vocab_size // self.world
        model.lm_head = (FP8Linear(H, V, False, head.block_size) if isinstance(head, FP8Linear)
                         else nn.Linear(H, V, bias=False))

    def split(self, gowner: str):
        """(axis, rank, world) of a checkpoint weight's owner name, or None (whole on every rank)."""
        leaf = gowner.rsplit(".", 1)[-1]
        if gowner == "lm_head":
            return (COLUMN, self.rank, self.world) if self.shard_head else None
        if ".self_attn." not in gowner and ".mlp." not in gowner:
            return None
        axis = _ARCH[self.config["model_type"]].get(leaf)
        return None if axis is None else (axis, self.rank, self.world)

    def source(self, gowner: str) -> str:
        """A tied head is this rank's rows of the embedding."""
        if gowner == "lm_head" and self.shard_head and self.config.get("tie_word_embeddings"):
            return "model.embed_tokens"
        return gowner
