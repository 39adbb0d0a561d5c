"""Text in, text out through a Pipeline (rank 0): prompt preparation, EOS, streaming detokenization."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator


@dataclass
class TextStats:
    prompt_tokens: int = 0
    generation_tokens: int = 0
    prompt_seconds: float = 0.0  # until the first token came back (prefill through both ranks)
    generation_seconds: float = 0.0
    finish_reason: str = "length"

    def summary(self) -> str:
        gen_tps = max(self.generation_tokens - 1, 0) / max(self.generation_seconds, 1e-9)
        return (f"prompt: {self.prompt_tokens} tokens, {self.prompt_tokens / max(self.prompt_seconds, 1e-9):.1f} "
                f"tokens/s; generation: {self.generation_tokens} tokens, {gen_tps:.1f} tokens/s; "
                f"finish: {self.finish_reason}")


def stream_text(pipe, tokenizer, prompt, max_tokens: int = 256, *, chat: bool = False, stats: TextStats | None = None,
                **sampling) -> Iterator[str]:
    """Yield text pieces as tokens arrive (stream_generate over the pipe: the same text handling as one
    process); fill `stats` if given. Stops at EOS (not printed), a stop string or max_tokens."""
    from ..generate import stream_generate

    stats = stats if stats is not None else TextStats()
    t0 = time.perf_counter()
    t1 = None
    for r in stream_generate(pipe, tokenizer, prompt, max_tokens, chat=chat, **sampling):
        if t1 is None:
            t1 = time.perf_counter()
            stats.prompt_seconds = t1 - t0
        stats.prompt_tokens, stats.generation_tokens = r.prompt_tokens, r.generation_tokens
        if r.finish_reason:
            stats.finish_reason = r.finish_reason
        if r.text:
            yield r.text
    stats.generation_seconds = time.perf_counter() - (t1 or t0)
