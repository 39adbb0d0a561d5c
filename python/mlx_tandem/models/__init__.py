"""Architectures by Hugging Face `model_type`."""

from __future__ import annotations

from . import llama, qwen2
from .base import ModelArgs
from .cache import KVCache

ARCHITECTURES = {"llama": llama.Model, "mistral": llama.Model, "qwen2": qwen2.Model}


def model_class(model_type: str):
    try:
        return ARCHITECTURES[model_type]
    except KeyError:
        raise ValueError(f"unknown architecture model_type={model_type!r}; supported: "
                         f"{', '.join(sorted(ARCHITECTURES))}") from None


__all__ = ["ARCHITECTURES", "KVCache", "ModelArgs", "model_class"]
