"""Qwen2/2.5: the Llama layers with bias on q/k/v (not o) and, in the small sizes, tied embeddings."""

from __future__ import annotations

import dataclasses

from . import llama
from .base import ModelArgs


class Model(llama.Model):
    def __init__(self, args: ModelArgs | dict, *a, **kw):
        if isinstance(args, dict):
            args = ModelArgs.from_config(args)
        args = dataclasses.replace(args, qkv_bias=True, attention_bias=False, mlp_bias=False)
        if not args.extra.get("use_sliding_window", False):
            args.sliding_window = None
        super().__init__(args, *a, **kw)
