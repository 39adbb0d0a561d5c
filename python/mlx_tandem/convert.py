"""Write an FP8 checkpoint in DeepSeek-V3's format (`weight` F8_E4M3 + `weight_scale_inv` F32),
streaming tensor by tensor so peak memory stays near the largest tensor."""

from __future__ import annotations

import json
import os
import re
import sys

import mlx.core as mx
import numpy as np

from . import _ext
from .checkpoint import Checkpoint, block_size_of
from .safetensors_io import StreamingWriter, to_bytes

# Linear weights that become FP8: Llama/Qwen/Mistral projections and DeepSeek's MLA projections,
# dense, shared and per-expert MLPs (not the router `mlp.gate`, norms or MTP's eh_proj: DeepSeek keeps those).
_LINEAR = re.compile(r"^model\.layers\.\d+\.(self_attn\.([qkvo]_proj|q_a_proj|q_b_proj|kv_a_proj_with_mqa|kv_b_proj)"
                     r"|mlp\.((experts\.\d+|shared_experts)\.)?(gate|up|down)_proj)\.weight$")
# DeepSeek's router correction bias stays float32 (in bf16 it flips expert selections).
_KEEP_F32 = re.compile(r"\.e_score_correction_bias$")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "generation_config.json", "chat_template.jinja", "chat_template.json")
_OUT_DTYPES = {"bfloat16": (mx.bfloat16, "BF16"), "float16": (mx.float16, "F16"),
               "float32": (mx.float32, "F32")}


class HFSource:
    """A float Hugging Face checkpoint directory, read through the same interface as GGUFSource."""

    def __init__(self, path: str):
        self.ckpt = Checkpoint(path)
        if block_size_of(self.ckpt.config) is not None:
            raise ValueError(f"convert: {path} is already an FP8 checkpoint; load it directly")
        self.config = dict(self.ckpt.config)
        self.files = {}
        for name in TOKENIZER_FILES:
            p = os.path.join(path, name)
            if os.path.isfile(p):
                with open(p) as f:
                    self.files[name] = f.read()

    def specs(self):
        return [(n, self.ckpt.info(n)["shape"]) for n in self.ckpt.where]

    def get(self, name) -> mx.array:
        return self.ckpt.get(name)


def open_source(path: str):
    if path.endswith(".gguf") or (os.path.isfile(path) and open(path, "rb").read(4) == b"GGUF"):
        from .gguf_import import GGUFSource
        return GGUFSource(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"convert: {path} does not exist")
    return HFSource(path)


def _plan(source, block, quantize_head, dtype_name):
    """[(out name, safetensors dtype, shape, source name, kind)] with kind 'codes'/'scales'/'float'."""
    bn, bk = block
    plan = []
    for name, shape in source.specs():
        if name.endswith("rotary_emb.inv_freq"):
            continue  # recomputed from the config
        if _LINEAR.match(name) or (quantize_head and name == "lm_head.weight"):
            if len(shape) != 2:
                raise ValueError(f"convert: linear weight {name} has shape {shape}, expected 2-D")
            plan.append((name, "F8_E4M3", tuple(shape), name, "codes"))
            plan.append((name + "_scale_inv", "F32", (-(-shape[0] // bn), -(-shape[1] // bk)), name, "scales"))
        elif _KEEP_F32.search(name):
            plan.append((name, "F32", tuple(shape), name, "float"))
        else:
            plan.append((name, dtype_name, tuple(shape), name, "float"))
    return plan


def convert(src: str, out: str, block_size=(128, 128), quantize_head: bool = True,
            dtype: str = "bfloat16", shard_bytes: int = 4 << 30, progress: bool = True) -> str:
    """Convert `src` (HF directory with float safetensors, or a .gguf file) into `out`."""
    from tqdm import tqdm

    source = open_source(src)
    block = (int(block_size[0]), int(block_size[1]))
    if min(block) <= 0:
        raise ValueError(f"convert: block_size must be positive, got {block_size}")
    mx_dtype, dtype_name = _OUT_DTYPES[dtype]
    plan = _plan(source, block, quantize_head, dtype_name)
    if os.path.isdir(out) and any(n == "config.json" or n.endswith((".safetensors", ".json"))
                                  for n in os.listdir(out)):
        raise ValueError(f"convert: output directory {out} already holds a checkpoint; choose an empty one")
    os.makedirs(out, exist_ok=True)

    # shards by byte size, in source order (layers stay together)
    shards, size = [[]], 0
    for item in plan:
        nbytes = int(np.prod(item[2], dtype=np.int64)) * (1 if item[1] == "F8_E4M3" else 4 if item[1] == "F32" else 2)
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(item)
        size += nbytes
    n = len(shards)
    fname = (lambda i: "model.safetensors") if n == 1 else (lambda i: f"model-{i + 1:05d}-of-{n:05d}.safetensors")

    bar = tqdm(total=len(source.specs()), desc="convert", unit="tensor", file=sys.stderr,
               disable=not progress)
    weight_map, pending = {}, {}
    for i, shard in enumerate(shards):
        writer = StreamingWriter(os.path.join(out, fname(i)), [(o, d, s) for o, d, s, _, _ in shard],
                                 metadata={"format": "pt"})
        for oname, dtype_code, shape, sname, kind in shard:
            weight_map[oname] = fname(i)
            if kind == "scales":
                data = pending.pop(sname)
            else:
                w = source.get(sname)
                w = mx.array(w) if isinstance(w, np.ndarray) else w
                if tuple(w.shape) != shape:
                    raise ValueError(f"convert: {sname} has shape {w.shape}, expected {shape}")
                if kind == "codes":
                    codes, scales = _ext.quantize_fp8(w, block_size=block)
                    mx.eval(codes, scales)
                    data = to_bytes(codes)
                    pending[sname] = to_bytes(scales)  # the scales follow right after the codes
                else:
                    data = to_bytes(w.astype(mx.float32 if dtype_code == "F32" else mx_dtype))
                del w
                mx.clear_cache()  # hand freed buffers back, so peak memory tracks one tensor
                bar.update(1)
            writer.write(oname, data)
            del data
        writer.close()
    bar.close()

    if n > 1:
        total = sum(os.path.getsize(os.path.join(out, fname(i))) for i in range(n))
        with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    config = dict(source.config)
    config["torch_dtype"] = dtype
    config["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                     "weight_block_size": list(block)}
    for name, text in source.files.items():
        with open(os.path.join(out, name), "w") as f:
            f.write(text)
    with open(os.path.join(out, "config.json"), "w") as f:  # last: its presence marks a finished output
        json.dump(config, f, indent=2)
    return out

