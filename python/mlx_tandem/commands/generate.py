"""`tandem generate --model DIR --prompt TEXT`: generated text on stdout, progress and stats on stderr."""

from __future__ import annotations

import os
import sys
import time


def add_arguments(parser):
    parser.add_argument("--model", required=True,
                        help="checkpoint directory, a .gguf file (converted once and cached), or 'demo'")
    parser.add_argument("--prompt", required=True, help="prompt text ('-' reads standard input)")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--temp", type=float, default=0.0, help="sampling temperature (0 = greedy)")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    parser.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    parser.add_argument("--dtype", default=None, choices=["bfloat16", "float16", "float32"],
                        help="activation dtype (default: the checkpoint's)")
    parser.add_argument("--head", default="auto", choices=["auto", "fp8", "float"],
                        help="LM head: as stored in the checkpoint (auto), quantized to FP8, or float")
    parser.add_argument("--no-memory-check", action="store_true",
                        help="load even if the model does not seem to fit in the available memory "
                             "(also TANDEM_NO_MEMORY_CHECK=1)")


def resolve_model(model: str) -> str:
    from ..demo_model import converted_gguf, demo_model_path

    if model == "demo":
        return demo_model_path()
    if model.endswith(".gguf") and os.path.isfile(model):
        return converted_gguf(model)
    return model


def main(args) -> int:
    from ..generate import load, stream_generate

    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    try:
        t = time.perf_counter()
        path = resolve_model(args.model)
        head = {"auto": None, "fp8": False, "float": True}[args.head]
        model, tokenizer = load(path, dtype=args.dtype, head_bf16=head, memory_check=not args.no_memory_check)
        print(f"loaded {path} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        last = None
        for r in stream_generate(model, tokenizer, prompt, args.max_tokens, temperature=args.temp,
                                 top_p=args.top_p, top_k=args.top_k, seed=args.seed, stop=args.stop,
                                 chat=args.chat):
            sys.stdout.write(r.text)
            sys.stdout.flush()
            last = r
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    sys.stdout.write("\n")
    print(f"prompt: {last.prompt_tokens} tokens, {last.prompt_tps:.1f} tokens/s; generation: "
          f"{last.generation_tokens} tokens, {last.generation_tps:.1f} tokens/s; "
          f"finish: {last.finish_reason}", file=sys.stderr)
    return 0
