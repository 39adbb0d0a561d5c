"""Benchmarks (`tandem bench NAME` or `python -m mlx_tandem.bench NAME`). Each lives in
mlx_tandem.bench.<name> with add_arguments(parser) and main(args) -> int."""

import argparse
import importlib

BENCHES = {
    "kernels": "FP8 GEMV/GEMM vs memory bandwidth, numpy sgemm and MLX",
    "attention": "fused attention decode/prefill vs MLX sdpa, bandwidth and sgemm",
    "model": "~1B Llama (or --arch deepseek_v3 layers) decode tokens/s vs MLX and the bandwidth bound",
    "pipeline": "two-rank pipeline throughput, link overhead and overlap",
    "tp": "tensor parallelism over 2 ranks (MLX ring backend) vs one process: decode, collectives, link",
    "serve": "the HTTP server under 1..32 concurrent streaming clients: aggregate tok/s, TTFT, ITL vs sequential",
}


def add_arguments(parser):
    sub = parser.add_subparsers(dest="bench", metavar="NAME", required=True)
    for name, help_text in BENCHES.items():
        try:
            mod = importlib.import_module(f"mlx_tandem.bench.{name}")
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith("mlx_tandem"):
                continue
            raise
        p = sub.add_parser(name, help=help_text, description=help_text)
        mod.add_arguments(p)
        p.set_defaults(_bench_main=mod.main)


def main(args):
    return args._bench_main(args)


def cli(argv=None):
    parser = argparse.ArgumentParser(prog="python -m mlx_tandem.bench")
    add_arguments(parser)
    args = parser.parse_args(argv)
    return main(args)
