"""Helpers for the Metal kernel tests: compile metal/*.metal with the emulator (once per session),
launch exactly what the planning functions in _ext say eval_gpu would launch."""
from __future__ import annotations

import functools
from pathlib import Path

import ml_dtypes
import mlx.core as mx
import numpy as np
import pytest

import metal_emu
from mlx_tandem import _ext

METAL = Path(__file__).resolve().parent.parent / "metal"
MX_DTYPES = {"float16": mx.float16, "bfloat16": mx.bfloat16, "float32": mx.float32}
NP_DTYPES = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16, "float32": np.float32}
HEAD_DIMS = [(64, 64), (80, 80), (96, 96), (128, 128), (192, 128), (256, 256), (576, 512)]
MAX_THREADS, MAX_TG_MEMORY = 1024, 32768


def require_emulator():
    ok, why = metal_emu.available()
    if not ok:
        pytest.skip(why)


@functools.lru_cache(maxsize=None)
def library(family: str) -> metal_emu.Library:
    """The emulator build of metal/<family>.metal (cached on disk by content hash)."""
    return metal_emu.compile([METAL / f"{family}.metal"], include_dirs=[METAL])


def check_resources(launch: dict) -> None:
    """Apple's limits hold for a planned launch."""
    tx, ty, tz = launch["threadgroup"]
    assert 1 <= tx * ty * tz <= MAX_THREADS and (tx * ty * tz) % 32 == 0, launch
    assert 0 <= launch["threadgroup_memory"] <= MAX_TG_MEMORY, launch
    assert all(g >= 1 for g in launch["grid"]), launch
    assert launch["mode"] == "threadgroups" and not launch["function_constants"]


def dispatch(lib: metal_emu.Library, launch: dict, buffers: dict, **options) -> metal_emu.DispatchStats:
    """Runs one planned launch: its kernel, grid, threadgroup and packed argument bytes (options: the
    emulator's, e.g. order="reverse")."""
    check_resources(launch)
    bufs = dict(buffers)
    bufs[launch["args_index"]] = launch["args"]
    return lib.dispatch(launch["kernel"], grid=launch["grid"], threadgroup=launch["threadgroup"],
                        buffers=bufs, mode=launch["mode"],
                        function_constants=launch["function_constants"], **options)


def plan_fp8(m, n, k, block, dtype):
    return _ext.plan_fp8_matmul(m, n, k, block, MX_DTYPES[dtype])


def plan_attention(q_shape, k_shape, dv, dtype, causal, scale=None, q_strides=None, k_strides=None,
                   v_strides=None):
    b, hq, lq, dk = q_shape
    _, hkv, lk, _ = k_shape
    return _ext.plan_attention(b, hq, hkv, lq, lk, dk, dv, MX_DTYPES[dtype], scale=scale, causal=causal,
                               q_strides=q_strides, k_strides=k_strides, v_strides=v_strides)
