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
    """Yield text pieces as tokens arrive; fill `stats` if given. Stops at EOS (not printed) or max_tokens."""
    from ..generate import prepare_prompt

    if max_tokens < 1:
        raise ValueError(f"generate: max_tokens must be >= 1, got {max_tokens}")
    stats = stats if stats is not None else TextStats()
    ids = prepare_prompt(tokenizer, prompt, chat)
    stats.prompt_tokens = len(ids)
    eos = set(tokenizer.eos_token_ids)
    detok = tokenizer.detokenizer()
    t0 = time.perf_counter()
    t1 = None
    for _, tok in pipe.stream_batch([ids], max_tokens, eos_token_ids=eos, **sampling):
        if t1 is None:
            t1 = time.perf_counter()
            stats.prompt_seconds = t1 - t0
        stats.generation_tokens += 1
        if tok in eos:
            stats.finish_reason = "stop"
            break
        piece = detok.add_token(tok)
        if piece:
            yield piece
    tail = detok.finalize()
    if tail:
        yield tail
    stats.generation_seconds = time.perf_counter() - (t1 or t0)
