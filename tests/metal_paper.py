"""Performance on paper: bytes the Metal kernels move at Llama-3-70B and DeepSeek-V3 decode shapes, counted
by the Metal-on-CPU emulator, and the bandwidth-bound times and tokens/s they imply on an M2 Ultra
(800 GB/s) and an M3 Ultra (819 GB/s). Estimates, not measurements: nothing here ran on Apple hardware.

    python tests/metal_paper.py            # prints the markdown tables (a few minutes on 2 cores)

Weight matrices run with the first NR rows only (every row group of a matrix moves the same bytes, so
counts scale exactly by N / NR); attention runs at full size. "DRAM" assumes the GPU caches the shared
operands (x, block scales, q) so each byte comes from memory once; "issued" is the emulator's raw count.
"""
from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import metal_kernels as mk  # noqa: E402

BW = {"M2 Ultra": 800e9, "M3 Ultra": 819e9}
FLOPS_M2_ULTRA = 27e12  # fp16 figure; Apple GPUs run fp32 FMA (our simdgroup MMA accumulates in fp32) at the same rate
NR = 256  # weight rows actually run (a multiple of the 128-row scale blocks)

LLAMA70B = dict(layers=80, linears={"q_proj": (8192, 8192), "k_proj": (1024, 8192), "v_proj": (1024, 8192),
                                    "o_proj": (8192, 8192), "gate_proj": (28672, 8192), "up_proj": (28672, 8192),
                                    "down_proj": (8192, 28672)},
                lm_head=(128256, 8192), attn=dict(hq=64, hkv=8, dk=128, dv=128))
# DeepSeek-V3: 3 dense + 58 MoE layers (8 routed + 1 shared expert per token), MLA in absorbed form
# (one 576-wide latent KV head shared by 128 query heads; values are its first 512 columns).
DSV3_ATTN = {"q_a_proj": (1536, 7168), "q_b_proj": (24576, 1536), "kv_a_proj": (576, 7168),
             "kv_b_proj": (32768, 512), "o_proj": (7168, 16384)}
DSV3_DENSE = {"gate_proj": (18432, 7168), "up_proj": (18432, 7168), "down_proj": (7168, 18432)}
DSV3_EXPERT = {"expert gate/up": (2048, 7168), "expert down": (7168, 2048)}


def gemv_bytes(n, k, m=1, dtype="bfloat16", block=(128, 128)):
    """(issued, dram) bytes of one GEMV launch, from the emulator run on the first NR rows."""
    nr = min(n, NR)
    codes = np.zeros((nr, k), np.uint8)
    scales = np.ones((-(-nr // block[0]), -(-k // block[1])), np.float32)
    x = np.zeros((m, k), mk.NP_DTYPES[dtype])
    y = np.zeros((m, nr), mk.NP_DTYPES[dtype])
    plan = mk.plan_fp8(m, nr, k, block, dtype)
    st = mk.dispatch(mk.library("fp8_gemv"), plan, {0: x, 1: codes, 2: scales, 3: y})
    assert st.bytes_read[1] == codes.nbytes
    f = n / nr
    issued = f * (st.bytes_read[0] + st.bytes_read[1] + st.bytes_read[2] + st.bytes_written[3])
    full_scales = -(-n // block[0]) * -(-k // block[1]) * 4
    dram = f * (st.bytes_read[1] + st.bytes_written[3]) + full_scales + x.nbytes
    return issued, dram


def gather_gemv_bytes(n, k, e=256, topk=8, dtype="bfloat16", block=(128, 128)):
    """(issued, dram) bytes of the routed experts' launches for one token (T=1, k=topk of e experts): the
    route, then gather_gemv over the first NR rows of each selected expert. Experts 0..topk-1 are selected
    and only they are stored (the plan still routes over all e; any other expert's read would be out of
    bounds)."""
    nr = min(n, NR)
    codes = np.zeros((topk, nr, k), np.uint8)
    scales = np.ones((topk, -(-nr // block[0]), -(-k // block[1])), np.float32)
    x = np.zeros((1, k), mk.NP_DTYPES[dtype])
    out = np.zeros((1, topk, nr), mk.NP_DTYPES[dtype])
    indices = np.arange(topk, dtype=np.int32)[::-1].reshape(1, topk).copy()
    plan = mk._ext.plan_gather_fp8_matmul(1, topk, e, nr, k, block, mk.MX_DTYPES[dtype])
    route = np.zeros(plan["route_elems"], np.int32)
    sr = mk.dispatch(mk.library("gather_route"), plan["launches"][0], {0: indices, 1: out, 2: route})
    st = mk.dispatch(mk.library("gather_gemv"), plan["launches"][1], {0: x, 1: codes, 2: scales, 3: out, 4: route})
    assert st.bytes_read[1] == codes.nbytes  # each selected expert's codes once
    f = n / nr
    small = sum(sr.bytes_read.values()) + sum(sr.bytes_written.values()) + st.bytes_read[4]  # indices, route
    issued = f * (st.bytes_read[0] + st.bytes_read[1] + st.bytes_read[2] + st.bytes_written[3]) + small
    full_scales = topk * -(-n // block[0]) * -(-k // block[1]) * 4
    dram = f * (st.bytes_read[1] + st.bytes_written[3]) + full_scales + x.nbytes + sum(sr.bytes_written.values())
    return issued, dram


def gemm_prefill(n, k, m, dtype="bfloat16", block=(128, 128)):
    """(issued codes bytes per weight byte, DRAM bytes, FLOPs) of the GEMM at m rows, from one 64-row weight
    tile run in the emulator (every weight tile sees the same traffic)."""
    nr = 64
    codes = np.zeros((nr, k), np.uint8)
    scales = np.ones((1, -(-k // block[1])), np.float32)
    x = np.zeros((m, k), mk.NP_DTYPES[dtype])
    y = np.zeros((m, nr), mk.NP_DTYPES[dtype])
    plan = mk.plan_fp8(m, nr, k, block, dtype)
    st = mk.dispatch(mk.library("fp8_gemm"), plan, {0: x, 1: codes, 2: scales, 3: y})
    reread = st.bytes_read[1] / codes.nbytes  # once per row tile of x; served from cache when tiles run together
    dram = n * k + -(-n // block[0]) * -(-k // block[1]) * 4 + x.nbytes + m * n * x.itemsize
    return reread, dram, 2.0 * m * n * k


def attention_bytes(hq, hkv, dk, dv, lk, dtype="bfloat16", shared_latent=False):
    """(issued, dram, variant) of one decode step's attention launches for one layer (B=1, Lq=1)."""
    npt = mk.NP_DTYPES[dtype]
    q = np.zeros((1, hq, 1, dk), npt)
    k = np.zeros((1, hkv, lk, dk), npt)
    v = np.zeros((1, hkv, lk, dv), npt)
    out = np.zeros((1, hq, 1, dv), npt)
    plan = mk.plan_attention(q.shape, k.shape, dv, dtype, True)
    lib = mk.library("attention_decode")
    first = plan["launches"][0]
    if plan["variant"] == "decode_split":
        po = np.zeros(plan["partial_out_elems"], np.float32)
        pm = np.zeros(plan["partial_ml_elems"], np.float32)
        st = mk.dispatch(lib, first, {0: q, 1: k, 2: v, 3: po, 5: pm})
        st2 = mk.dispatch(lib, plan["launches"][1], {0: po, 1: pm, 2: out})
        extra = sum(st.bytes_written.values()) + sum(st2.bytes_read.values()) + sum(st2.bytes_written.values())
    else:
        st = mk.dispatch(lib, first, {0: q, 1: k, 2: v, 3: out})
        extra = st.bytes_written[3]
    issued = st.bytes_read[0] + st.bytes_read[1] + st.bytes_read[2] + extra
    kv = k.nbytes if shared_latent else k.nbytes + v.nbytes  # MLA: V is a prefix of the same latent rows
    dram = q.nbytes + kv + extra
    return issued, dram, f"{plan['variant']} x{st.bytes_read[1] // k.nbytes} KV reads"


def fmt_ms(b, bw):
    return f"{b / bw * 1e3:.3f}"


def main():
    rows, totals = [], {}

    def add(model, name, issued, dram, count, note=""):
        rows.append((model, name, issued, dram, count, note))
        totals[model] = totals.get(model, 0.0) + dram * count

    L = LLAMA70B
    for name, (n, k) in L["linears"].items():
        add("Llama-3-70B", f"fp8_gemv {name} {n}x{k}", *gemv_bytes(n, k), L["layers"])
    add("Llama-3-70B", f"fp8_gemv lm_head {L['lm_head'][0]}x{L['lm_head'][1]}", *gemv_bytes(*L["lm_head"]), 1)
    a = L["attn"]
    for lk in (4096, 32768):
        i, d, note = attention_bytes(a["hq"], a["hkv"], a["dk"], a["dv"], lk)
        add(f"Llama-3-70B @{lk // 1024}k", f"attention_decode 64/8 heads 128/128 Lk={lk}", i, d, L["layers"], note)
    for name, (n, k) in DSV3_ATTN.items():
        add("DeepSeek-V3", f"fp8_gemv {name} {n}x{k}", *gemv_bytes(n, k), 61)
    for name, (n, k) in DSV3_DENSE.items():
        add("DeepSeek-V3", f"fp8_gemv dense {name} {n}x{k}", *gemv_bytes(n, k), 3)
    gi, gd = gemv_bytes(*DSV3_EXPERT["expert gate/up"])
    add("DeepSeek-V3", "fp8_gemv shared expert gate/up 2048x7168 (x2)", gi, gd, 58 * 2)
    add("DeepSeek-V3", "fp8_gemv shared expert down 7168x2048", *gemv_bytes(*DSV3_EXPERT["expert down"]), 58)
    add("DeepSeek-V3", "route + gather_gemv 8 of 256 experts gate/up 2048x7168 (x2)",
        *gather_gemv_bytes(*DSV3_EXPERT["expert gate/up"]), 58 * 2, "codes of the 8 read once")
    add("DeepSeek-V3", "route + gather_gemv 8 of 256 experts down 7168x2048",
        *gather_gemv_bytes(*DSV3_EXPERT["expert down"]), 58, "codes of the 8 read once")
    add("DeepSeek-V3", "fp8_gemv lm_head 129280x7168", *gemv_bytes(129280, 7168), 1)
    i, d, note = attention_bytes(128, 1, 576, 512, 4096, shared_latent=True)
    add("DeepSeek-V3 @4k", "attention_decode MLA 128/1 heads 576/512 Lk=4096", i, d, 61, note)

    print("| model | kernel launch (M=1, bf16 activations) | issued MB | DRAM MB | M2 Ultra ms | M3 Ultra ms |"
          " per token | note |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for model, name, issued, dram, count, note in rows:
        print(f"| {model} | {name} | {issued / 1e6:.1f} | {dram / 1e6:.1f} | {fmt_ms(dram, BW['M2 Ultra'])} | "
              f"{fmt_ms(dram, BW['M3 Ultra'])} | x{count} | {note} |")
    print()
    w70 = totals["Llama-3-70B"]
    print("| decode, one stream | GB per token | M2 Ultra tok/s at 100% / 56% of peak | M3 Ultra tok/s at 100% / 56% |")
    print("|---|---:|---:|---:|")
    for label, b in [("Llama-3-70B FP8, 4k context", w70 + totals["Llama-3-70B @4k"]),
                     ("Llama-3-70B FP8, 32k context", w70 + totals["Llama-3-70B @32k"]),
                     ("DeepSeek-V3 FP8 (37B active), 4k context", totals["DeepSeek-V3"] + totals["DeepSeek-V3 @4k"])]:
        cols = [f"{bw / b:.1f} / {0.56 * bw / b:.1f}" for bw in BW.values()]
        print(f"| {label} | {b / 1e9:.1f} | {cols[0]} | {cols[1]} |")


def prefill_table(m=512):
    print()
    print(f"| Llama-3-70B prefill, {m} tokens, one layer | codes re-read (issued) | GFLOP | DRAM MB |"
          " M2 Ultra ms, FLOP-bound | M2 Ultra ms, bandwidth-bound |")
    print("|---|---:|---:|---:|---:|---:|")
    tot_f = tot_b = 0.0
    for name, (n, k) in LLAMA70B["linears"].items():
        reread, dram, flops = gemm_prefill(n, k, m)
        tot_f, tot_b = tot_f + flops, tot_b + dram
        print(f"| fp8_gemm {name} {n}x{k} | x{reread:.0f} | {flops / 1e9:.0f} | {dram / 1e6:.1f} | "
              f"{flops / FLOPS_M2_ULTRA * 1e3:.2f} | {dram / BW['M2 Ultra'] * 1e3:.2f} |")
    t = max(tot_f / FLOPS_M2_ULTRA, tot_b / BW["M2 Ultra"]) * LLAMA70B["layers"]
    print(f"| all linears x 80 layers | | {tot_f * 80 / 1e12:.1f} TFLOP | {tot_b * 80 / 1e9:.1f} GB | "
          f"{tot_f * 80 / FLOPS_M2_ULTRA * 1e3:.0f} | {tot_b * 80 / BW['M2 Ultra'] * 1e3:.0f} |")
    print(f"\nPrefill bound: {t:.2f} s for {m} tokens ({m / t:.0f} tokens/s) at 100% of the M2 Ultra's FLOPs.")


if __name__ == "__main__":
    main()
    prefill_table()
