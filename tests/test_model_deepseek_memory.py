"""Loading a DeepSeek checkpoint stacks each projection's per-expert tensors into one (E, N, K) array,
streaming: the peak resident memory while loading stays within the final resident size plus one MoE
layer's experts (measured in a fresh process from /proc: VmHWM after resetting it, against VmRSS)."""

import json
import os
import subprocess
import sys

import pytest

import deepseek_ckpt

SCRIPT = r"""
import json, sys
import mlx.core as mx
from mlx_tandem.checkpoint import load_model

def status():
    d = {}
    for line in open("/proc/self/status"):
        k, v = line.split(":", 1)
        if k in ("VmRSS", "VmHWM"):
            d[k] = int(v.split()[0]) * 1024
    return d

mx.eval(mx.ones(4) + 1)
open("/proc/self/clear_refs", "w").write("5")  # peak := current resident size
base = status()["VmRSS"]
model, _ = load_model(sys.argv[1])
s = status()
print(json.dumps({"base": base, "final": s["VmRSS"], "peak": s["VmHWM"]}))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
def test_loading_peak_is_final_size_plus_one_layer(tmp_path):
    cfg = deepseek_ckpt.config(hidden_size=1024, moe_intermediate_size=512, n_routed_experts=32,
                               num_hidden_layers=4, intermediate_size=1024, vocab_size=1024)
    path = deepseek_ckpt.write(str(tmp_path / "ckpt"), cfg)
    stored = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path) if f.endswith(".safetensors"))
    out = subprocess.run([sys.executable, "-c", SCRIPT, path], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    m = json.loads(out.stdout.strip().splitlines()[-1])
    resident, excess = m["final"] - m["base"], m["peak"] - m["final"]
    layer_experts = 3 * cfg["n_routed_experts"] * cfg["moe_intermediate_size"] * cfg["hidden_size"]
    print(f"stored {stored / 2**20:.0f} MiB, resident {resident / 2**20:.0f} MiB, peak - final "
          f"{excess / 2**20:.0f} MiB, one MoE layer's experts {layer_experts / 2**20:.0f} MiB")
    assert resident > 0.9 * stored  # the weights really are in memory (nothing left mapped or lazy)
    assert excess <= layer_experts + (16 << 20)
