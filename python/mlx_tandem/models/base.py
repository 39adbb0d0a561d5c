"""Model hyper-parameters parsed from a Hugging Face config.json (old and new rope keys)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx


@dataclass
class ModelArgs:
    model_type: str
    hidden_size: int
    num_hidden_layers: int
    intermediate_size: int
    num_attention_heads: int
    vocab_size: int
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # Llama: bias on q/k/v/o when true
    mlp_bias: bool = False
    qkv_bias: bool = False  # Qwen2: bias on q/k/v only
    sliding_window: int | None = None
    # Rope: theta plus a normalised scaling dict ({"rope_type": ..., factor, ...}) or None.
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            if self.hidden_size % self.num_attention_heads:
                raise ValueError(
                    f"config: hidden_size {self.hidden_size} is not a multiple of "
                    f"num_attention_heads {self.num_attention_heads} and head_dim is not given")
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"config: num_attention_heads {self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads {self.num_key_value_heads}")
        for name in ("hidden_size", "num_hidden_layers", "intermediate_size",
                     "num_attention_heads", "vocab_size", "head_dim"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"config: {name} must be positive, got {getattr(self, name)}")

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "ModelArgs":
        """Build from a config.json dict, accepting both `rope_theta`/`rope_scaling` (transformers 4)
        and `rope_parameters` (transformers 5)."""
        config = dict(config)
        missing = [k for k in ("hidden_size", "num_hidden_layers", "intermediate_size",
                               "num_attention_heads", "vocab_size") if config.get(k) is None]
        if missing:
            raise ValueError(f"config.json: missing required key(s) {missing}")
        theta, scaling = _rope_from_config(config)
        names = {f.name for f in dataclasses.fields(cls)} - {"extra", "rope_theta", "rope_scaling"}
        kwargs = {k: config[k] for k in names if k in config and config[k] is not None}
        if config.get("model_type") is None:
            raise ValueError("config.json: missing 'model_type'")
        extra = {k: v for k, v in config.items() if k not in names}
        return cls(**kwargs, rope_theta=theta, rope_scaling=scaling, extra=extra)


def _rope_from_config(config: dict[str, Any]) -> tuple[float, dict[str, Any] | None]:
    params = config.get("rope_parameters")
    if isinstance(params, dict) and params and not isinstance(next(iter(params.values())), dict):
        params = dict(params)
        theta = params.pop("rope_theta", config.get("rope_theta", 10000.0))
    else:
        if isinstance(params, dict) and params:
            raise ValueError("config.json: per-layer-type rope_parameters are not supported")
        theta = config.get("rope_theta", 10000.0)
        params = dict(config.get("rope_scaling") or {})
    # Older configs spell the kind "type"; transformers 5 calls it "rope_type".
    kind = params.pop("rope_type", None) or params.pop("type", None) or "default"
    params.pop("type", None)
    if kind == "default":
        return float(theta), None
    return float(theta), {"rope_type": kind, **params}


def run_layers(model, inputs, cache):
    """The body of a pipeline stage (`model.model` holds is_first/is_last, embed_tokens and layers):
    token ids (B, L) in on the first stage, hidden states (B, L, H) elsewhere; returns the hidden
    states after the stage's layers, each with its cache."""
    m = model.model
    if m.is_first:
        if inputs.ndim != 2 or not mx.issubdtype(inputs.dtype, mx.integer):
            raise ValueError(f"model: the first stage takes token ids (B, L), got {inputs.dtype} {inputs.shape}")
        h = m.embed_tokens(inputs)
    else:
        if inputs.ndim != 3 or inputs.shape[-1] != model.args.hidden_size:
            raise ValueError(f"model: stage {model.layer_range} takes hidden states "
                             f"(B, L, {model.args.hidden_size}), got {inputs.shape}")
        h = inputs.astype(model.dtype)
    if cache is None:
        cache = [None] * len(m.layers)
    elif len(cache) != len(m.layers):
        raise ValueError(f"model: got {len(cache)} caches for {len(m.layers)} layers")
    for layer, c in zip(m.layers, cache):
        h = layer(h, c)
    return h
