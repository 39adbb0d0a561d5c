"""Architectures by Hugging Face `model_type`."""

from __future__ import annotations

from . import deepseek_v3, llama, qwen2
from .base import ModelArgs
from .cache import KVCache, LatentCache

ARCHITECTURES = {"llama": llama.Model, "mistral": llama.Model, "qwen2": qwen2.Model,
                 "deepseek_v3": deepseek_v3.Model, "kimi_k2": deepseek_v3.Model, "deepseek_v2": deepseek_v3.Model}


def model_class(model_type: str | None):
    try:
        return ARCHITECTURES[model_type]
    except KeyError:
        raise ValueError(f"unknown architecture model_type={model_type!r}; supported: "
                         f"{', '.join(sorted(ARCHITECTURES))}") from None


__all__ = ["ARCHITECTURES", "KVCache", "LatentCache", "ModelArgs", "model_class"]
