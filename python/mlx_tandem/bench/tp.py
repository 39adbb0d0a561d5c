"""`tandem bench tp`: single-stream decode of one process against tensor parallelism over 2 ranks
on loopback (MLX's ring backend), one core each (pinned, TANDEM_NUM_THREADS=1), on the ~1B random
Llama (Llama-3.2-1B's shape) and a DeepSeek-V3 model at the real attention/expert dims (1 dense +
1 MoE layer, --ds-experts of 256 experts: a token reads the same 8). Rows: decode tokens/s (median,
spread), the ratio to the single process, collectives per token with their median and p99 time
(the exchange plus the wait for the slower rank), bytes each rank sends per token, and the latency
of a bare all_sum of one hidden-size vector (no compute: the link's own cost per collective).
Random FP8 checkpoints are written once into --cache-dir and loaded as users load them (each rank
reads only its shard)."""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import time

import numpy as np

LLAMA_1B = dict(model_type="llama", hidden_size=2048, num_hidden_layers=16, intermediate_size=8192,
                num_attention_heads=32, num_key_value_heads=8, head_dim=64, vocab_size=128256, rms_norm_eps=1e-5,
                tie_word_embeddings=False, rope_theta=500000.0, max_position_embeddings=8192)
# a model small enough for the test of this benchmark (dims split over 2 ranks in whole blocks)
TINY = dict(LLAMA_1B, hidden_size=256, num_hidden_layers=2, intermediate_size=512, num_attention_heads=4,
            num_key_value_heads=2, head_dim=128, vocab_size=512)
FP8 = {"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [128, 128]}


def add_arguments(parser):
    parser.add_argument("--models", default="llama1b,deepseek", help="comma list: llama1b, deepseek (tiny: tests)")
    parser.add_argument("--ds-experts", type=int, default=64,
                        help="routed experts of the DeepSeek model (256 in V3; fewer fit two copies in 24 GB)")
    parser.add_argument("--context", type=int, default=64, help="prompt tokens before decode is timed")
    parser.add_argument("--tokens", type=int, default=16, help="decode tokens per timed run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pings", type=int, default=2000, help="bare all_sums timed for the link latency")
    parser.add_argument("--cache-dir", default=os.path.join(os.environ.get("TANDEM_CACHE", os.path.expanduser(
        "~/.cache/mlx_tandem")), "bench-tp"))
    parser.add_argument("--worker", default=None, help=argparse_hidden())
    parser.add_argument("--port", type=int, default=0, help=argparse_hidden())
    parser.add_argument("--path", default=None, help=argparse_hidden())


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


def deepseek_config(experts: int) -> dict:
    return dict(model_type="deepseek_v3", vocab_size=129280, hidden_size=7168, intermediate_size=18432,
                moe_intermediate_size=2048, num_hidden_layers=2, first_k_dense_replace=1, num_attention_heads=128,
                q_lora_rank=1536, kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128,
                n_routed_experts=experts, n_shared_experts=1, num_experts_per_tok=8, n_group=8, topk_group=4,
                routed_scaling_factor=2.5, norm_topk_prob=True, topk_method="noaux_tc", scoring_func="sigmoid",
                rms_norm_eps=1e-6, max_position_embeddings=163840, rope_theta=10000.0, tie_word_embeddings=False,
                rope_scaling=dict(type="yarn", factor=40, original_max_position_embeddings=4096, beta_fast=32,
                                  beta_slow=1, mscale=1.0, mscale_all_dim=1.0))


# ---- random checkpoints -------------------------------------------------------------------------
def _specs(cfg):
    """(name, kind, shape): kind fp8 (codes + scales), norm, float (bf16 normal), bias (f32)."""
    H, V = cfg["hidden_size"], cfg["vocab_size"]
    out = [("model.embed_tokens.weight", "float", (V, H)), ("model.norm.weight", "norm", (H,)),
           ("lm_head", "fp8", (V, H))]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out += [(p + "input_layernorm.weight", "norm", (H,)), (p + "post_attention_layernorm.weight", "norm", (H,))]
        if cfg["model_type"] == "llama":
            D, q, kv, I = cfg["head_dim"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["intermediate_size"]
            lin = {"self_attn.q_proj": (q * D, H), "self_attn.k_proj": (kv * D, H), "self_attn.v_proj": (kv * D, H),
                   "self_attn.o_proj": (H, q * D), "mlp.gate_proj": (I, H), "mlp.up_proj": (I, H),
                   "mlp.down_proj": (H, I)}
        else:
            nH, nope, rope, v = cfg["num_attention_heads"], cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
            qr, kvr = cfg["q_lora_rank"], cfg["kv_lora_rank"]
            lin = {"self_attn.q_a_proj": (qr, H), "self_attn.q_b_proj": (nH * (nope + rope), qr),
                   "self_attn.kv_a_proj_with_mqa": (kvr + rope, H), "self_attn.kv_b_proj": (nH * (nope + v), kvr),
                   "self_attn.o_proj": (H, nH * v)}
            out += [(p + "self_attn.q_a_layernorm.weight", "norm", (qr,)),
                    (p + "self_attn.kv_a_layernorm.weight", "norm", (kvr,))]
            if i >= cfg["first_k_dense_replace"]:
                E, I = cfg["n_routed_experts"], cfg["moe_intermediate_size"]
                for e in range(E):
                    lin |= {f"mlp.experts.{e}.gate_proj": (I, H), f"mlp.experts.{e}.up_proj": (I, H),
                            f"mlp.experts.{e}.down_proj": (H, I)}
                lin |= {"mlp.shared_experts.gate_proj": (I, H), "mlp.shared_experts.up_proj": (I, H),
                        "mlp.shared_experts.down_proj": (H, I)}
                out += [(p + "mlp.gate.weight", "float", (E, H)), (p + "mlp.gate.e_score_correction_bias", "bias", (E,))]
            else:
                I = cfg["intermediate_size"]
                lin |= {"mlp.gate_proj": (I, H), "mlp.up_proj": (I, H), "mlp.down_proj": (H, I)}
        out += [(p + k, "fp8", s) for k, s in lin.items()]
    return out


def write_checkpoint(path: str, cfg: dict, log) -> str:
    from ..safetensors_io import StreamingWriter

    cfg = dict(cfg, quantization_config=FP8, torch_dtype="bfloat16")
    done = os.path.join(path, "config.json")
    if os.path.isfile(done):
        with open(done) as f:
            if json.load(f) == cfg:
                return path
    os.makedirs(path, exist_ok=True)
    log(f"writing a random FP8 checkpoint to {path}")
    specs = []
    for name, kind, shape in _specs(cfg):
        if kind == "fp8":
            specs += [(name + ".weight", "F8_E4M3", shape),
                      (name + ".weight_scale_inv", "F32", (-(-shape[0] // 128), -(-shape[1] // 128)))]
        else:
            specs.append((name, "F32" if kind == "bias" else "BF16", shape))
    rng = np.random.default_rng(0)
    w = StreamingWriter(os.path.join(path, "model.safetensors"), specs)
    for name, dtype, shape in specs:
        n = int(np.prod(shape))
        if dtype == "F8_E4M3":  # |value| < 1 with random signs (no NaN codes), times the 0.03 scales
            data = (rng.bit_generator.random_raw(-(-n // 8)).view(np.uint8)[:n] & 0xB7).tobytes()
        elif name.endswith("weight_scale_inv"):
            data = np.full(n, 0.03, np.float32).tobytes()
        elif dtype == "F32":
            data = (rng.standard_normal(n, dtype=np.float32) * 0.01).tobytes()
        elif "norm" in name:
            data = np.full(n, 0x3F80, np.uint16).tobytes()  # bf16 ones
        else:
            data = b"".join((rng.standard_normal(min(1 << 24, n - i), dtype=np.float32) * 0.02).view(np.uint32)
                            .__rshift__(16).astype(np.uint16).tobytes() for i in range(0, n, 1 << 24))
        w.write(name, data)
    w.close()
    with open(done, "w") as f:
        json.dump(cfg, f)
    return path


# ---- workers (fresh processes, pinned) ----------------------------------------------------------
def _worker(a) -> int:
    import mlx.core as mx

    from ..checkpoint import load_model
    from ..generate import generate_step

    rank = int(a.worker)
    comm = None
    if rank < 0:
        model, _ = load_model(a.path)
    else:
        from ..tp import Collectives, dist, load_sharded

        group, _, peers = dist.init("ring", rank, 2, master_port=a.port)
        comm = Collectives(group, timeout=120, peers=peers)
        model, _, _ = load_sharded(a.path, comm, memory_check=False, tokenizer=False)
    prompt = mx.array(np.random.default_rng(0).integers(0, model.args.vocab_size, a.context), mx.int32)
    gen = generate_step(model, prompt, temperature=0.0, prefill_step=max(a.context, 512))
    next(gen)
    rates, stats = [], None
    for _ in range(a.repeats):
        if comm:
            comm.reset_stats()
        t = time.perf_counter()
        for _ in range(a.tokens):
            next(gen)
        rates.append(a.tokens / (time.perf_counter() - t))
        if comm and stats is None or comm and rates[-1] == max(rates):
            stats = dict(per_token=comm.count / a.tokens, ms=[1e3 * s for s in comm.seconds],
                         sent=comm.bytes_sent / a.tokens)
    gen.close()
    out = dict(rates=rates, stats=stats)
    if comm:  # the link alone: all_sums of one hidden-size bf16 vector, nothing else
        x = mx.ones((1, 1, model.args.hidden_size), mx.bfloat16)
        comm.reset_stats()
        for _ in range(a.pings):
            comm.all_sum(x)
        out["ping_ms"] = [1e3 * s for s in comm.seconds]
    print(json.dumps(out), flush=True)
    return 0


def _free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", p + 1))
            return p
        except OSError:
            continue
    raise RuntimeError("bench tp: no free port pair on 127.0.0.1")


def _spawn(a, path, rank, cpu, port=0):
    cmd = [sys.executable, "-m", "mlx_tandem.bench", "tp", "--worker", str(rank), "--path", path, "--port", str(port),
           "--context", str(a.context), "--tokens", str(a.tokens), "--repeats", str(a.repeats),
           "--pings", str(a.pings)]
    env = {**os.environ, "TANDEM_NUM_THREADS": "1"}
    return subprocess.Popen(["taskset", "-c", str(cpu), *cmd], stdout=subprocess.PIPE, env=env, text=True)


def _collect(proc):
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"bench tp: a worker failed with exit code {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1])


def _pct(ms, q):
    s = sorted(ms) or [float("nan")]
    return s[min(len(s) - 1, int(q * len(s)))]


def main(a) -> int:
    if a.worker is not None:
        return _worker(a)
    log = lambda *x: print(*x, file=sys.stderr, flush=True)
    rows = []
    for name in [m for m in a.models.split(",") if m]:
        configs = {"llama1b": LLAMA_1B, "deepseek": deepseek_config(a.ds_experts), "tiny": TINY}
        if name not in configs:
            raise ValueError(f"bench tp: unknown model {name!r} (llama1b, deepseek, tiny)")
        cfg = configs[name]
        path = write_checkpoint(os.path.join(a.cache_dir, f"{name}-{a.ds_experts}" if name == "deepseek" else name),
                                cfg, log)
        log(f"{name}: single process (1 core)")
        single = _collect(_spawn(a, path, -1, 0))
        log(f"{name}: tensor parallel, 2 ranks (1 core each)")
        port = _free_port_pair()
        ranks = [_collect(p) for p in [_spawn(a, path, r, r, port) for r in (0, 1)]]
        rows.append((name, single, ranks))
    print(f"decode after {a.context} prompt tokens, {a.repeats} runs of {a.tokens} tokens; medians (spread = min-max); "
          f"collective times per rank 0 / rank 1")
    print("| model | configuration | decode tok/s (spread) | vs single | collectives/token | median ms | p99 ms | "
          "KiB sent/token/rank | bare all_sum median / p99 ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, single, ranks in rows:
        s = statistics.median(single["rates"])
        print(f"| {name} | single process | {s:.2f} ({min(single['rates']):.2f}-{max(single['rates']):.2f}) | 1.00 "
              f"| - | - | - | - | - |")
        t = statistics.median(ranks[0]["rates"])
        st = [r["stats"] for r in ranks]
        pings = [r["ping_ms"] for r in ranks]
        print(f"| {name} | TP 2 ranks (ring, loopback) | {t:.2f} ({min(ranks[0]['rates']):.2f}-"
              f"{max(ranks[0]['rates']):.2f}) | **{t / s:.2f}** | {st[0]['per_token']:.1f} | "
              + " / ".join(f"{_pct(x['ms'], 0.5):.3f}" for x in st) + " | "
              + " / ".join(f"{_pct(x['ms'], 0.99):.3f}" for x in st) + f" | {st[0]['sent'] / 1024:.1f} | "
              + " / ".join(f"{_pct(p, 0.5):.3f} / {_pct(p, 0.99):.3f}" for p in pings) + " |")
    return 0
