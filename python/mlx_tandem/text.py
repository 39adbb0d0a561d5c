"""Tokens to text for one sequence: streaming detokenization, EOS, stop strings and max_tokens, shared by
stream_generate, the pipeline's text front end and the server (so all three end a text the same way)."""

from __future__ import annotations


class TextStream:
    """`add(token)` -> (new text, finish reason or None). Text that could be the start of a stop string
    is held back until it cannot; a stop string ends the text before it (it is not included); EOS is
    not turned into text. Finish reasons: "stop" (EOS or a stop string) and "length" (max_tokens)."""

    def __init__(self, tokenizer, max_tokens: int, stop: list[str] | None = None, ignore_eos: bool = False):
        if max_tokens < 1:
            raise ValueError(f"generate: max_tokens must be >= 1, got {max_tokens}")
        self.eos = set() if ignore_eos else set(tokenizer.eos_token_ids)
        self.stop = [s for s in (stop or []) if s]
        self.hold = max((len(s) for s in self.stop), default=1) - 1
        self.max_tokens = max_tokens
        self.detok = tokenizer.detokenizer()
        self.pending = ""
        self.tokens = 0
        self.finish_reason: str | None = None

    def _cut(self) -> int:
        return min((self.pending.find(s) for s in self.stop if s in self.pending), default=-1)

    def add(self, token: int) -> tuple[str, str | None]:
        if self.finish_reason is not None:
            raise ValueError("generate: the text already ended")
        self.tokens += 1
        if token in self.eos:
            return self.close("stop")
        self.pending += self.detok.add_token(token)
        cut = self._cut()
        if cut >= 0:
            text, self.pending, self.finish_reason = self.pending[:cut], "", "stop"
            return text, "stop"
        if self.tokens >= self.max_tokens:
            return self.close("length")
        emit = self.pending[:len(self.pending) - self.hold] if self.hold else self.pending
        self.pending = self.pending[len(emit):]
        return emit, None

    def close(self, reason: str) -> tuple[str, str]:
        """End the text (EOS, max_tokens, or an outside reason): the held-back rest, cut at a stop string."""
        self.pending += self.detok.finalize()
        cut = self._cut()
        if cut >= 0:
            self.pending, reason = self.pending[:cut], "stop"
        text, self.pending, self.finish_reason = self.pending, "", reason
        return text, reason
