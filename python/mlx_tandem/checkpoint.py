"""Hugging Face checkpoint directories: config, (sharded) safetensors, lazy per-layer loading."""

from __future__ import annotations

import json
import os
import re

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from . import _ext
from .models import model_class
from .nn import FP8Linear, FP8SwitchLinear
from .safetensors_io import SafetensorsFile

_DTYPES = {"bfloat16": mx.bfloat16, "float16": mx.float16, "float32": mx.float32}


def read_config(path: str) -> dict:
    cfg = os.path.join(path, "config.json")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"checkpoint: {path} is not a directory")
    if not os.path.isfile(cfg):
        raise FileNotFoundError(f"checkpoint: {path} has no config.json")
    with open(cfg) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"checkpoint: {cfg} is not valid JSON: {e}") from None


def block_size_of(config: dict) -> tuple[int, int] | None:
    """The FP8 block size if the checkpoint is in DeepSeek-V3's FP8 format, else None."""
    q = config.get("quantization_config")
    if not q:
        return None
    if q.get("quant_method") != "fp8" or q.get("fmt", "e4m3") != "e4m3":
        raise ValueError(f"checkpoint: unsupported quantization_config {q} (only fp8 e4m3 block-scaled)")
    bs = q.get("weight_block_size") or [128, 128]
    if len(bs) != 2 or min(bs) <= 0:
        raise ValueError(f"checkpoint: bad weight_block_size {bs}")
    return int(bs[0]), int(bs[1])


class Checkpoint:
    """Tensor names -> files, from model.safetensors.index.json or the *.safetensors present.
    Nothing is read until `get`."""

    def __init__(self, path: str):
        self.path = path
        self.config = read_config(path)
        index = os.path.join(path, "model.safetensors.index.json")
        self._files: dict[str, SafetensorsFile] = {}
        self.where: dict[str, str] = {}
        if os.path.isfile(index):
            with open(index) as f:
                weight_map = json.load(f).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise ValueError(f"checkpoint: {index} has no weight_map")
            # shards are opened (and validated) on first use, so a stage reads only its own files
            self.where = dict(weight_map)
        else:
            names = sorted(n for n in os.listdir(path) if n.endswith(".safetensors"))
            if not names:
                raise FileNotFoundError(f"checkpoint: no *.safetensors files in {path}")
            for fname in names:
                for t in self._open(fname).tensors:
                    self.where[t] = fname

    def _open(self, fname):
        if fname not in self._files:
            if os.path.basename(fname) != fname:
                raise ValueError(f"checkpoint: index names a file outside the directory: {fname!r}")
            self._files[fname] = SafetensorsFile(os.path.join(self.path, fname))
        return self._files[fname]

    def _file_of(self, name):
        f = self._open(self.where[name])
        if name not in f.tensors:
            raise ValueError(f"checkpoint: index says {name!r} is in {f.path}, but it is not")
        return f

    def __contains__(self, name):
        return name in self.where

    def info(self, name) -> dict:
        return self._file_of(name).tensors[name]

    def get(self, name: str) -> mx.array:
        if name not in self.where:
            raise KeyError(f"checkpoint: tensor {name!r} not found in {self.path}")
        return self._file_of(name).get(name)

    def read_into(self, name: str, out: np.ndarray) -> None:
        """Read a tensor's bytes straight into `out` (a C-contiguous array of its shape and storage dtype)."""
        self._file_of(name).read_into(name, out)

    def read_slice_into(self, name: str, out: np.ndarray, axis: int, lo: int) -> None:
        """Read [lo, lo + out.shape[axis]) along `axis` of a tensor into `out` (a tensor-parallel shard)."""
        self._file_of(name).read_slice_into(name, out, axis, lo)

    def get_slice(self, name: str, axis: int, lo: int, n: int) -> mx.array:
        if name not in self.where:
            raise KeyError(f"checkpoint: tensor {name!r} not found in {self.path}")
        return self._file_of(name).get_slice(name, axis, lo, n)


def _global_name(name: str, start: int) -> str:
    return re.sub(r"^model\.layers\.(\d+)\.", lambda m: f"model.layers.{int(m[1]) + start}.", name)


def load_model(path: str, layer_range: tuple[int, int] | None = None, dtype=None,
               head_bf16: bool | None = None, shard=None):
    """Build the model for `layer_range` and read only its tensors. Float linear weights are
    quantized to FP8 at load; FP8 ones (weight + weight_scale_inv) are used as they are. Stacked
    expert projections are assembled one at a time from the checkpoint's per-expert tensors.
    head_bf16: None keeps the head as the checkpoint has it (float only in an FP8 checkpoint
    converted with --keep-head-bf16); True/False force a float/FP8 head.
    shard: a tensor-parallel plan (tp.plan.ShardPlan): the model is built with this rank's dims
    (`shard.local_config`, `shard.prepare`) and each split tensor is read as this rank's rows or
    columns only (`shard.split(checkpoint owner name)` -> (axis, rank) or None; `shard.source`
    renames an owner, e.g. a tied head read from the embedding)."""
    ckpt = Checkpoint(path)
    config = ckpt.config
    if config.get("model_type") is None:
        raise ValueError("config.json: missing 'model_type'")
    cls = model_class(config["model_type"])
    fp8_block = block_size_of(config)
    block = fp8_block or (128, 128)
    tied = bool(config.get("tie_word_embeddings", False))
    if head_bf16 is None:
        head_bf16 = fp8_block is not None and not tied and "lm_head.weight_scale_inv" not in ckpt
    if dtype is None:
        dtype = _DTYPES.get(config.get("torch_dtype") or config.get("dtype"), mx.bfloat16)
    elif isinstance(dtype, str):
        dtype = _DTYPES[dtype]
    model = cls(shard.local_config(config) if shard else config, layer_range, block_size=block, head_bf16=head_bf16)
    if shard:
        shard.prepare(model)
    split = (lambda gowner: shard.split(gowner)) if shard else (lambda gowner: None)
    source = shard.source if shard else (lambda gowner: gowner)
    start = model.layer_range[0]
    tied_head = model.args.tie_word_embeddings and model.model.is_last
    # names only: holding the modules would keep unfused weights alive after finish_loading fuses them
    linears = {name for name, m in model.named_modules() if isinstance(m, FP8Linear)}
    stacked = {name for name, m in model.named_modules() if isinstance(m, FP8SwitchLinear)}
    float32 = set(getattr(model, "float32_params", ()))
    loaded = []
    for name, param in tree_flatten(model.parameters()):
        if tied_head and name.startswith("lm_head."):
            continue  # derived from the embedding in tie_head()
        owner, leaf = name.rsplit(".", 1)
        gname = _global_name(name, start)
        gowner = _global_name(owner, start)
        sp = split(gowner)
        if (owner in linears or owner in stacked) and leaf in ("weight", "weight_scale_inv"):
            if leaf == "weight":
                if owner in stacked:
                    loaded += _load_experts(ckpt, model.expert_sources(gowner, param.shape[0]), owner,
                                            param.shape, block, sp)
                else:
                    loaded += _load_linear(ckpt, source(gowner), owner, param.shape, block, sp)
            continue
        if gname == "lm_head.weight" and "lm_head.weight_scale_inv" in ckpt:  # FP8 head kept as float
            shape = _full_shape(param.shape, sp)
            _linear_names(ckpt, gowner, shape, block)
            codes, scales = _read(ckpt, gname, shape, sp), _read(ckpt, gname + "_scale_inv", shape, sp, block)
            loaded.append((name, _ext.dequantize_fp8(codes, scales, block_size=block, dtype=dtype)))
            continue
        if sp is not None and not (leaf == "weight" or sp[0] == 0):
            sp = None  # the bias of a row-parallel linear is whole on every rank (added once, after the sum)
        loaded.append((name, _load_tensor(ckpt, f"{source(gowner)}.{leaf}", param.shape,
                                          mx.float32 if leaf in float32 else dtype, sp)))
    model.update(tree_unflatten(loaded))
    del loaded  # the model holds them now; fusing at finish_loading frees the unfused parts layer by layer
    model.finish_loading()
    # everything materialized now: MLX's streams are per thread, and a lazy weight built here could not
    # be evaluated on another thread (the server's engine thread) later
    mx.eval(model.parameters())
    return model, config


def _full_shape(shape, sp):
    """The checkpoint shape of a tensor whose local `shape` is one of `world` parts along sp's axis."""
    if sp is None:
        return tuple(shape)
    axis, _, world = sp
    full = list(shape)
    full[axis] *= world
    return tuple(full)


def _read(ckpt, name, shape, sp, block=None):
    """Tensor `name` (full shape `shape`), or this rank's part of it along sp = (axis, rank, world);
    with `block`, `name` is the scale grid of a weight of that shape (whole blocks per part)."""
    if sp is None:
        return ckpt.get(name)
    axis, rank, world = sp
    n = shape[axis] // world
    if block is not None:
        n = n // block[axis] if n % block[axis] == 0 else -1
        if n < 0:
            raise ValueError(f"checkpoint: {name!r}: a part of {shape[axis] // world} along axis {axis} "
                             f"is not whole {block[axis]}-blocks")
    return ckpt.get_slice(name, axis, rank * n, n)


def _load_tensor(ckpt, gname, shape, dtype, sp=None):
    if gname not in ckpt:
        raise ValueError(f"checkpoint: {ckpt.path} lacks tensor {gname!r}")
    info = ckpt.info(gname)
    shape = _full_shape(shape, sp)
    if info["shape"] != shape:
        raise ValueError(f"checkpoint: tensor {gname!r} has shape {info['shape']}, expected {shape}")
    if info["dtype"] not in ("BF16", "F16", "F32"):
        raise ValueError(f"checkpoint: tensor {gname!r} has dtype {info['dtype']}, expected a float")
    return _read(ckpt, gname, shape, sp).astype(dtype)


def _load_experts(ckpt, prefixes, owner, shape, block, sp=None):
    """(local name, array) pairs of one stacked (E, N, K) projection from E per-expert tensors:
    FP8 codes and scales are read straight into a preallocated buffer (float experts quantized one
    at a time), so loading holds at most this projection twice, briefly. With sp = (axis, rank, world)
    each expert contributes only this rank's rows (axis 0) or columns (axis 1)."""
    E, N, K = shape
    full = _full_shape((N, K), sp)
    codes = np.empty((E, N, K), np.uint8)
    scales = np.empty((E, -(-N // block[0]), -(-K // block[1])), np.float32)
    for e, prefix in enumerate(prefixes):
        wname, sname = _linear_names(ckpt, prefix, full, block)
        if sname is not None and sp is not None:
            axis, rank, _ = sp
            ckpt.read_slice_into(wname, codes[e], axis, rank * codes.shape[1 + axis])
            ckpt.read_slice_into(sname, scales[e], axis, rank * scales.shape[1 + axis])
        elif sname is not None:
            ckpt.read_into(wname, codes[e])
            ckpt.read_into(sname, scales[e])
        else:
            c, sc = _ext.quantize_fp8(_read(ckpt, wname, full, sp), block_size=block)
            codes[e], scales[e] = np.array(c), np.array(sc)
    out = [(f"{owner}.weight", mx.array(codes)), (f"{owner}.weight_scale_inv", mx.array(scales))]
    mx.eval([a for _, a in out])
    return out


def _linear_names(ckpt, gowner, shape, block):
    """(weight name, scale name or None for a float weight), after checking shapes and dtypes."""
    wname, sname = f"{gowner}.weight", f"{gowner}.weight_scale_inv"
    if wname not in ckpt:
        raise ValueError(f"checkpoint: {ckpt.path} lacks tensor {wname!r}")
    info = ckpt.info(wname)
    if info["shape"] != tuple(shape):
        raise ValueError(f"checkpoint: tensor {wname!r} has shape {info['shape']}, expected {tuple(shape)}")
    if sname not in ckpt:
        if info["dtype"] not in ("BF16", "F16", "F32"):
            raise ValueError(f"checkpoint: {wname!r} has dtype {info['dtype']} and no weight_scale_inv")
        return wname, None
    if info["dtype"] not in ("F8_E4M3", "U8"):
        raise ValueError(f"checkpoint: {wname!r} has a weight_scale_inv but dtype {info['dtype']}, "
                         f"expected F8_E4M3")
    sshape = (-(-shape[0] // block[0]), -(-shape[1] // block[1]))
    sinfo = ckpt.info(sname)
    if sinfo["shape"] != sshape or sinfo["dtype"] != "F32":
        raise ValueError(f"checkpoint: {sname!r} is {sinfo['dtype']} {sinfo['shape']}, expected F32 "
                         f"{sshape} for block size {block}")
    return wname, sname


def _load_linear(ckpt, gowner, owner, shape, block, sp=None):
    """(local name, array) pairs for one FP8Linear's codes and scales (this rank's part with sp)."""
    full = _full_shape(shape, sp)
    wname, sname = _linear_names(ckpt, gowner, full, block)
    if sname is not None:
        codes, scales = _read(ckpt, wname, full, sp), _read(ckpt, sname, full, sp, block)
    else:
        codes, scales = _ext.quantize_fp8(_read(ckpt, wname, full, sp), block_size=block)
        mx.eval(codes, scales)  # now, so only one float weight is alive at a time
    return [(f"{owner}.weight", codes), (f"{owner}.weight_scale_inv", scales)]
