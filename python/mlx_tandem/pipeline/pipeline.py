"""Rank 0: the `Pipeline` object that runs the first stage and drives the generation loop.

Each sequence is a micro-batch with its own slot. The scheduler issues work whenever a sequence can
move (its next prompt chunk, or its next token once rank 1 sent it back) and the window of requests in
flight has room, and only then waits for rank 1. So with several sequences rank 0 computes sequence i+1
while rank 1 computes sequence i, and a long prompt is sent chunk by chunk: rank 1 works on chunk i while
rank 0 computes chunk i+1. Rank 1 answers strictly in order, so every RESULT must carry the step id of
the oldest request in flight; anything else is a SequenceError naming the step and message.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

import mlx.core as mx
import numpy as np

from .errors import PipelineError, SequenceError
from .messages import MAX_SLOTS, Forward, Result, Want
from .tensors import to_numpy
from .transport import Connection
from .wire import MsgType


@dataclass
class _Seq:
    index: int
    chunks: list  # prompt chunks (1-D mx int32 arrays) not yet sent
    cache: list
    max_tokens: int | None
    rng: np.random.Generator
    offset: int = 0
    waiting: bool = False  # a reply carrying this sequence's next token is outstanding
    next_token: int | None = None
    generated: int = 0
    done: bool = False


@dataclass
class PipelineStats:
    requests: int = 0
    stage_seconds: float = 0.0  # rank 0's own compute
    wait_seconds: float = 0.0  # rank 0 blocked on rank 1's replies
    tokens: int = 0
    extra: dict = field(default_factory=dict)


class Pipeline:
    """Rank 0's side. `model` is the first stage (token ids in, hidden states out); `conn` an
    authenticated, started Connection to the rank holding the remaining layers and the head."""

    def __init__(self, model, conn: Connection, *, prefill_chunk: int = 512, window: int | None = None,
                 listener=None):
        if prefill_chunk < 1:
            raise ValueError(f"pipeline: prefill_chunk must be >= 1, got {prefill_chunk}")
        self.model = model
        self.conn = conn
        self.prefill_chunk = prefill_chunk
        self.window = window
        self.listener = listener  # where reconnect() waits for a restarted rank 1 (closed by close())
        self.stats = PipelineStats()
        self._step = 0

    # ---- connection lifecycle ------------------------------------------------------------------
    def reconnect(self, listener=None, deadline: float | None = None) -> None:
        """After a fault: wait for the (restarted) peer on `listener` (default: the pipeline's own) and
        continue with fresh state (sequences start again; rank 1's caches went with the old link)."""
        listener = listener or self.listener
        if listener is None:
            raise ValueError("pipeline: reconnect needs a listener")
        self.conn.close()
        self.conn = listener.accept(deadline)

    def close(self) -> None:
        """Tell rank 1 the session is over (it exits its serve loop) and close the connection."""
        if not self.conn.closed:
            try:
                self.conn.send(MsgType.SHUTDOWN, self._step)
            except PipelineError:
                pass
            self.conn.close()
        if self.listener is not None:
            self.listener.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- generation ----------------------------------------------------------------------------
    def generate_step(self, prompt: mx.array, *, temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0,
                      seed: int | None = None, prefill_step: int | None = None, logprobs: bool = False,
                      cache=None) -> Iterator[int]:
        """Token ids for one sequence, forever (the caller stops): the same contract as
        `mlx_tandem.generate.generate_step(model, prompt, ...)` for a single-process model."""
        if cache is not None:
            raise ValueError("pipeline: generate_step keeps its caches on both ranks; cache must be None")
        for _, tok in self.stream_batch([prompt], None, temperature=temperature, top_p=top_p, top_k=top_k,
                                        seed=seed, prefill_step=prefill_step, logprobs=logprobs):
            yield tok

    def generate_batch(self, prompts: Sequence, max_tokens: int, *, eos_token_ids: Iterable[int] = (),
                       **kwargs) -> list[list[int]]:
        """Generate for several prompts at once (each its own micro-batch in flight)."""
        out = [[] for _ in prompts]
        eos = set(eos_token_ids)
        for i, tok in self.stream_batch(prompts, max_tokens, eos_token_ids=eos, **kwargs):
            out[i].append(tok if not isinstance(tok, tuple) else tok[0])
        return out

    def stream_batch(self, prompts: Sequence, max_tokens: int | None, *, temperature: float = 0.0,
                     top_p: float = 1.0, top_k: int = 0, seed: int | None = None, prefill_step: int | None = None,
                     logprobs: bool = False, eos_token_ids: Iterable[int] = (),
                     max_in_flight: int | None = None) -> Iterator[tuple[int, int]]:
        """Yields (prompt index, token id) — or (index, (token, logprob)) with logprobs — as tokens arrive.
        A sequence ends after max_tokens tokens (None: never) or with an EOS token (which is yielded)."""
        if not prompts or len(prompts) > MAX_SLOTS:
            raise ValueError(f"pipeline: need 1..{MAX_SLOTS} prompts, got {len(prompts)}")
        chunk = prefill_step or self.prefill_chunk
        eos = set(eos_token_ids)
        base_seed = seed if seed is not None else time.time_ns() % (1 << 62)
        seqs = []
        for i, p in enumerate(prompts):
            p = mx.array(p, dtype=mx.int32) if not isinstance(p, mx.array) else p.astype(mx.int32)
            if p.ndim != 1 or p.size == 0:
                raise ValueError(f"pipeline: prompt {i} must be a non-empty 1-D sequence of token ids, got {p.shape}")
            chunks = [p[j:j + chunk] for j in range(0, p.size, chunk)]
            seqs.append(_Seq(i, chunks, self.model.make_cache(), max_tokens, np.random.default_rng([base_seed, i])))
        window = max_in_flight or self.window or len(seqs) + 2
        want_last = Want.LOGPROBS if logprobs else Want.TOKENS
        sampling = dict(temperature=float(temperature), top_p=float(top_p), top_k=int(top_k))
        inflight: collections.deque = collections.deque()
        try:
            while not all(s.done for s in seqs) or inflight:
                issued = False
                for s in seqs:
                    if len(inflight) >= window:
                        break
                    if s.done or s.waiting:
                        continue
                    if s.chunks:
                        tokens = s.chunks.pop(0)
                        want = want_last if not s.chunks else Want.NONE
                    else:
                        tokens, want = mx.array([s.next_token], mx.int32), want_last
                    inflight.append((self._issue(s, tokens, want, sampling), s, want))
                    s.waiting = want != Want.NONE
                    issued = True
                if issued and len(inflight) < window:
                    continue
                if not inflight:
                    break
                step, s, want = inflight.popleft()
                res = self._receive(step, want)
                if want == Want.NONE:
                    continue
                tok = int(res.tokens[0])
                s.waiting, s.next_token = False, tok
                s.generated += 1
                self.stats.tokens += 1
                if tok in eos or (s.max_tokens is not None and s.generated >= s.max_tokens):
                    s.done = True
                yield (s.index, (tok, float(res.logprobs[0])) if logprobs else tok)
        finally:
            # a caller that stops early leaves replies in flight: drain them so the link stays in step
            while inflight and not self.conn.closed:
                step, _, want = inflight.popleft()
                self._receive(step, want)

    def last_logits(self, prompt) -> np.ndarray:
        """Float32 logits (vocab,) after `prompt`, computed through both ranks (for checks)."""
        s = _Seq(0, [mx.array(prompt, dtype=mx.int32)], self.model.make_cache(), 1, np.random.default_rng(0))
        step = self._issue(s, s.chunks.pop(0), Want.LOGITS, dict(temperature=0.0, top_p=1.0, top_k=0))
        return self._receive(step, Want.LOGITS).logits[0]

    # ---- one request ---------------------------------------------------------------------------
    def _issue(self, s: _Seq, tokens: mx.array, want: Want, sampling: dict) -> int:
        t0 = time.perf_counter()
        h = self.model(tokens[None], cache=s.cache)
        mx.eval(h)
        hidden = to_numpy(h)
        self.stats.stage_seconds += time.perf_counter() - t0
        step = self._step
        self._step += 1
        req = Forward(s.index, s.offset, want, hidden, seed=int(s.rng.integers(1 << 62)), **sampling)
        self.conn.send(MsgType.FORWARD, step, req.tensors())
        s.offset += tokens.size
        self.stats.requests += 1
        return step

    def _receive(self, step: int, want: Want) -> Result:
        t0 = time.perf_counter()
        frame = self.conn.recv()
        self.stats.wait_seconds += time.perf_counter() - t0
        try:
            if frame.msg_type != MsgType.RESULT or frame.step != step:
                raise SequenceError(f"pipeline: expected RESULT for step {step}, got {frame.describe()}")
            return Result.parse(frame, want, 1)
        except PipelineError:
            self.conn.close()  # the two ranks no longer agree on the state: this link is finished
            raise
