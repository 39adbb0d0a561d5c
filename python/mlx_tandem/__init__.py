"""mlx-tandem: FP8 kernels as MLX primitives and a two-rank pipeline for large language models."""

import mlx.core as _mx  # noqa: F401  (loads libmlx before our extension links against it)

from ._ext import (  # noqa: E402
    add_rms_norm,
    advise_hugepages,
    cpu_detected_isa,
    cpu_isa,
    dequantize_fp8,
    fp8_matmul,
    from_fp8,
    fused_attention,
    gather_fp8_matmul,
    num_threads,
    quantize_fp8,
    rms_norm,
    rope,
    silu_mul,
    to_fp8,
)

__version__ = "0.1.0"

# Bound after the submodule import on purpose: `generate` is both a module and its main function.
from .generate import generate, load, stream_generate  # noqa: E402
from .pipeline import Pipeline  # noqa: E402

__all__ = [
    "quantize_fp8",
    "dequantize_fp8",
    "fp8_matmul",
    "gather_fp8_matmul",
    "to_fp8",
    "from_fp8",
    "fused_attention",
    "silu_mul",
    "rope",
    "rms_norm",
    "add_rms_norm",
    "advise_hugepages",
    "load",
    "generate",
    "stream_generate",
    "Pipeline",
    "cpu_isa",
    "cpu_detected_isa",
    "num_threads",
]
