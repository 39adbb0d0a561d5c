"""Rank 0: the `Pipeline` object that runs the first stage and drives generation through both ranks.

Generation is batch.Scheduler over a PipelineBackend (pipeline/backend.py): sequences join and leave
between steps, prompt chunks and ragged decode steps (B rows, each its own sequence at its own position)
go to rank 1 as FORWARDs, with a window of jobs in flight (2 by default: one micro-batch per rank), so
rank 0 computes one micro-batch (or prompt chunk i+1) while rank 1 computes the other (or chunk i).
Rank 1 answers strictly in order; the server keeps one long-lived Scheduler over `pipe.backend`.
"""

from __future__ import annotations

import dataclasses
import weakref
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

import mlx.core as mx
import numpy as np

from ..batch.scheduler import Event, Job, Scheduler
from ..batch.scheduler import Sequence as Seq
from ..sampling import Sampled, SamplingParams
from .backend import PipelineBackend
from .errors import PipelineError
from .messages import MAX_SLOTS, Want
from .transport import Connection
from .wire import MsgType


@dataclass
class PipelineStats:
    requests: int = 0  # FORWARDs sent
    stage_seconds: float = 0.0  # rank 0's own compute
    wait_seconds: float = 0.0  # rank 0 blocked on rank 1's replies
    tokens: int = 0
    extra: dict = field(default_factory=dict)


class Pipeline:
    """Rank 0's side. `model` is the first stage (token ids in, hidden states out); `conn` an
    authenticated, started Connection to the rank holding the remaining layers and the head.
    `window`: jobs in flight (default 2); `prefill_chunk`: prompt tokens per FORWARD."""

    def __init__(self, model, conn: Connection, *, prefill_chunk: int = 512, window: int | None = None,
                 listener=None):
        if prefill_chunk < 1:
            raise ValueError(f"pipeline: prefill_chunk must be >= 1, got {prefill_chunk}")
        self.model = model
        self.conn = conn
        self.prefill_chunk = prefill_chunk
        self.window = window or 2
        self.listener = listener  # where reconnect() waits for a restarted rank 1 (closed by close())
        self.stats = PipelineStats()
        self.step = 0  # step id of the next FORWARD (unique over reconnects, for the logs)
        self.backends: weakref.WeakSet = weakref.WeakSet()
        self.backend = PipelineBackend(self)  # the one this object's generation methods drive

    def next_step(self) -> int:
        self.step += 1
        return self.step - 1

    # ---- connection lifecycle ------------------------------------------------------------------
    def reconnect(self, listener=None, deadline: float | None = None) -> None:
        """After a fault: wait for the (restarted) peer on `listener` (default: the pipeline's own) and
        continue with fresh state (sequences start again; rank 1's caches went with the old link)."""
        listener = listener or self.listener
        if listener is None:
            raise ValueError("pipeline: reconnect needs a listener")
        self.conn.close()
        self.conn = listener.accept(deadline)
        for b in self.backends:  # rank 1 holds nothing now: no slot or job of the old link survives
            b.reset()

    def close(self) -> None:
        """Tell rank 1 the session is over (it exits its serve loop) and close the connection."""
        if not self.conn.closed:
            try:
                self.conn.send(MsgType.SHUTDOWN, self.step)
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
                      seed: int | None = None, params: SamplingParams | None = None, prefill_step: int | None = None,
                      logprobs: bool = False, cache=None) -> Iterator[int]:
        """Token ids for one sequence, forever (the caller stops): the same contract as
        `mlx_tandem.generate.generate_step(model, prompt, ...)` for a single-process model, and with a seed
        the same tokens. With logprobs=True it yields (token, logprob) pairs."""
        if cache is not None:
            raise ValueError("pipeline: generate_step keeps its caches on both ranks; cache must be None")
        for _, tok in self.stream_batch([prompt], None, temperature=temperature, top_p=top_p, top_k=top_k,
                                        seed=seed, params=params, prefill_step=prefill_step, logprobs=logprobs):
            yield tok

    def token_steps(self, prompt: mx.array, params: SamplingParams, *, prefill_step: int | None = None
                    ) -> Iterator[Sampled]:
        """One Sampled (B = 1) per generated token, forever (generate.stream_generate's hook)."""
        seq = Seq(self._prompt_ids(prompt, 0), params)
        for ev in self._drive([seq], prefill_step, None, ()):
            n = params.top_logprobs
            top = ev.top_logprobs or []
            yield Sampled(np.array([ev.token], np.int32), np.array([ev.logprob or 0.0], np.float32),
                          np.array([[i for i, _ in top]], np.int32).reshape(1, n),
                          np.array([[v for _, v in top]], np.float32).reshape(1, n))

    def generate_batch(self, prompts: Sequence, max_tokens: int, *, eos_token_ids: Iterable[int] = (),
                       **kwargs) -> list[list[int]]:
        """Generate for several prompts at once (see stream_batch); the token lists in prompt order."""
        out = [[] for _ in prompts]
        for i, tok in self.stream_batch(prompts, max_tokens, eos_token_ids=eos_token_ids, **kwargs):
            out[i].append(tok if not isinstance(tok, tuple) else tok[0])
        return out

    def stream_batch(self, prompts: Sequence, max_tokens: int | None, *, temperature: float = 0.0,
                     top_p: float = 1.0, top_k: int = 0, seed: int | None = None,
                     params: SamplingParams | Sequence[SamplingParams] | None = None, prefill_step: int | None = None,
                     logprobs: bool = False, eos_token_ids: Iterable[int] = (),
                     max_in_flight: int | None = None) -> Iterator[tuple[int, int]]:
        """Yields (prompt index, token id) — or (index, (token, logprob)) with logprobs — as tokens arrive.
        A sequence ends after max_tokens tokens (None: never) or with an EOS token (which is yielded).
        `params` (one for all prompts, or one per prompt) overrides temperature/top_p/top_k/seed; every
        sequence draws from its own seed's SeedStream, so it gets the tokens it would get alone."""
        if not prompts or len(prompts) > MAX_SLOTS:
            raise ValueError(f"pipeline: need 1..{MAX_SLOTS} prompts, got {len(prompts)}")
        if params is None:
            params = SamplingParams(float(temperature), float(top_p), int(top_k), seed=seed)
        per = list(params) if isinstance(params, (list, tuple)) else [params] * len(prompts)
        if len(per) != len(prompts):
            raise ValueError(f"pipeline: {len(per)} sampling params for {len(prompts)} prompts")
        if logprobs:
            per = [p if p.logprobs else dataclasses.replace(p, logprobs=True) for p in per]
        seqs = [Seq(self._prompt_ids(p, i), per[i], max_tokens) for i, p in enumerate(prompts)]
        index = {s: i for i, s in enumerate(seqs)}
        for ev in self._drive(seqs, prefill_step, max_in_flight, eos_token_ids):
            if ev.token is not None:
                yield index[ev.seq], (ev.token, ev.logprob) if logprobs else ev.token

    def last_logits(self, prompt) -> np.ndarray:
        """Float32 logits (vocab,) after `prompt` (sent as one piece), computed through both ranks (for checks)."""
        if self.backend.pending:
            raise RuntimeError("pipeline: last_logits while other jobs are in flight")
        seq = Seq(self._prompt_ids(prompt, 0))
        self.backend.open(seq)
        try:
            self.backend.issue(Job([seq], np.array([seq.prompt], np.int32), [0], True, [0]), want=Want.LOGITS)
            return self.backend.receive()[1].logits[0]
        finally:
            self.backend.release(seq)

    # ---- the scheduler loop --------------------------------------------------------------------
    @staticmethod
    def _prompt_ids(p, i: int) -> list[int]:
        a = np.asarray(p)
        if a.ndim != 1 or a.size == 0 or not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"pipeline: prompt {i} must be a non-empty 1-D sequence of token ids, got {a.dtype} {a.shape}")
        return a.astype(np.int64).tolist()

    def _drive(self, seqs: list[Seq], prefill_step, max_in_flight, eos) -> Iterator[Event]:
        """Scheduler.run over this pipeline's backend, except that after a fault nothing more is sent or
        awaited (the link is closed; reconnect() resets the backend)."""
        sched = Scheduler(self.backend, eos_token_ids=eos, prefill_chunk=prefill_step or self.prefill_chunk)
        window = self.backend.window
        self.backend.window = max_in_flight or window
        try:
            for s in seqs:
                sched.add(s)
            while not sched.idle:
                yield from sched.step()
        finally:
            self.backend.window = window
            if self.conn.closed:
                sched.fail_all("pipeline: the link failed")
            else:  # a caller that stops early: free the sequences and drain replies so the link stays in step
                for s in list(sched.active):
                    sched.cancel(s)
                while sched.inflight:
                    sched.inflight.popleft()
                    self.backend.collect()
