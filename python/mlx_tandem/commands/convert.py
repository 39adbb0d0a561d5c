"""`tandem convert --model IN --out OUT`: HF directory or GGUF file -> FP8 checkpoint."""

from __future__ import annotations

import sys
import time


def add_arguments(parser):
    parser.add_argument("--model", required=True, help="Hugging Face checkpoint directory or .gguf file")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--block-size", default="128,128",
                        help="FP8 scale block as ROWS,COLS (default 128,128, DeepSeek-V3's)")
    parser.add_argument("--keep-head-bf16", action="store_true", help="leave lm_head unquantized")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"],
                        help="dtype of the tensors that stay in floating point (embeddings, norms)")


def main(args) -> int:
    from ..convert import convert

    try:
        block = tuple(int(v) for v in args.block_size.split(","))
        if len(block) != 2:
            raise ValueError
    except ValueError:
        print(f"tandem convert: --block-size must be ROWS,COLS, got {args.block_size!r}", file=sys.stderr)
        return 2
    t = time.perf_counter()
    try:
        out = convert(args.model, args.out, block_size=block, quantize_head=not args.keep_head_bf16,
                      dtype=args.dtype)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {out} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    return 0
