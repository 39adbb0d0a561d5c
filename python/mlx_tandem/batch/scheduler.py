"""The scheduler of continuous batching, shared by the server, `Pipeline.stream_batch` and the benchmarks.

Sequences join and leave between steps. Each step issues jobs while the backend's window has room and
then takes the result of the oldest one. A job is either one sequence's next prompt chunk (B = 1, L <= the
chunk size) or one decode step for several sequences at once (B rows of one token, each at its own
position): that batch reads every weight once for all its rows. Prompt chunks and decode steps
alternate, so a long prompt does not stall the running sequences. With a window of w jobs (the pipeline:
one per rank) the decoding sequences are split into w micro-batches, so every rank has work.
"""

from __future__ import annotations

import collections
import itertools
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from ..sampling import Sampled, SamplingParams, SeedStream

_ids = itertools.count()


@dataclass(eq=False)
class Sequence:
    """One request. `max_tokens` None means until EOS or cancel. `user` is the caller's (the server
    keeps its stream there)."""
    prompt: list[int]
    params: SamplingParams = field(default_factory=SamplingParams)
    max_tokens: int | None = None
    user: object = None
    ignore_eos: bool = False  # run to max_tokens (benchmarks; vLLM's request field of that name)
    id: int = field(default_factory=lambda: next(_ids))
    # set by the scheduler / backend
    prefilled: int = 0  # prompt tokens already through the model
    history: list[int] = field(default_factory=list)  # generated tokens
    busy: bool = False  # part of a job in flight
    finish_reason: str | None = None  # "stop" (EOS), "length", "cancelled", "error"
    state: object = None  # the backend's (caches, slot)

    def __post_init__(self):
        if not self.prompt:
            raise ValueError("generate: a prompt needs at least one token")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"generate: max_tokens must be >= 1, got {self.max_tokens}")
        self.seeds = SeedStream(self.params.seed)

    @property
    def decoding(self) -> bool:
        return self.prefilled == len(self.prompt)

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    @property
    def position(self) -> int:
        """Tokens in this sequence's caches (or about to be, for the job in flight)."""
        return self.prefilled + max(len(self.history) - 1, 0)


@dataclass(eq=False)
class Job:
    rows: list[Sequence]
    tokens: np.ndarray  # int32 (B, L)
    offsets: list[int]  # each row's position of its first token
    sample: bool  # False: a prompt chunk that only fills the caches
    key_seeds: list[int]


@dataclass
class Event:
    seq: Sequence
    token: int | None  # None when the sequence ended without a token (cancel, error)
    logprob: float | None
    top_logprobs: list[tuple[int, float]] | None
    finish_reason: str | None  # set on the sequence's last event
    error: str | None = None


class Backend(Protocol):
    window: int  # jobs in flight at once

    def open(self, seq: Sequence) -> None: ...  # allocate the sequence's caches
    def release(self, seq: Sequence) -> None: ...  # free them (and the peer's)
    def issue(self, job: Job) -> None: ...
    def collect(self) -> tuple[Job, Sampled | None]: ...  # the oldest job in flight
    def reset(self) -> None: ...  # forget every sequence and job (after a fault)


class Scheduler:
    def __init__(self, backend: Backend, *, eos_token_ids=(), prefill_chunk: int = 512, max_batch: int = 64):
        if prefill_chunk < 1 or max_batch < 1:
            raise ValueError(f"scheduler: prefill_chunk and max_batch must be >= 1, got {prefill_chunk}, {max_batch}")
        self.backend = backend
        self.eos = set(eos_token_ids)
        self.prefill_chunk = prefill_chunk
        self.max_batch = max_batch
        self.active: list[Sequence] = []
        self.inflight: collections.deque[Job] = collections.deque()
        self._last_was_prefill = False
        self.decode_rows = collections.Counter()  # batch size -> decode jobs of that size (metrics, benches)

    # ---- the open set ----------------------------------------------------------------------------
    def add(self, seq: Sequence) -> None:
        self.backend.open(seq)
        self.active.append(seq)

    def cancel(self, seq: Sequence, reason: str = "cancelled") -> None:
        """End a sequence now; its caches are freed at once (a job in flight is discarded on arrival)."""
        if seq.done or seq not in self.active:
            return
        seq.finish_reason = reason
        self._drop(seq)

    def _drop(self, seq: Sequence) -> None:
        self.active.remove(seq)
        self.backend.release(seq)

    def fail_all(self, error: str) -> list[Event]:
        """After a backend fault: every active sequence ends with the error; jobs in flight are forgotten."""
        events = []
        for seq in list(self.active):
            seq.finish_reason = "error"
            events.append(Event(seq, None, None, None, "error", error))
        self.active.clear()
        self.inflight.clear()
        self.backend.reset()
        return events

    @property
    def idle(self) -> bool:
        return not self.active and not self.inflight

    # ---- stepping --------------------------------------------------------------------------------
    def step(self) -> list[Event]:
        """Issue what fits in the window, then finish the oldest job; its events (possibly none)."""
        while len(self.inflight) < self.backend.window:
            job = self._next_job()
            if job is None:
                break
            for s in job.rows:  # a prompt chunk that samples nothing lets the next chunk follow it at once
                s.busy = job.sample
            self.backend.issue(job)
            self.inflight.append(job)
        if not self.inflight:
            return []
        job, out = self.backend.collect()
        if job is not self.inflight[0]:
            raise RuntimeError("scheduler: the backend returned jobs out of order")
        self.inflight.popleft()
        events = []
        for i, s in enumerate(job.rows):
            if job.sample:  # only sampling jobs mark their rows busy (the issue loop above)
                s.busy = False
            if s.done:  # cancelled while its job was in flight
                continue
            if out is None:
                continue
            tok = int(out.tokens[i])
            s.history.append(tok)
            finish = None
            if tok in self.eos and not s.ignore_eos:
                finish = "stop"
            elif s.max_tokens is not None and len(s.history) >= s.max_tokens:
                finish = "length"
            p = s.params
            top = [(int(a), float(b)) for a, b in zip(out.top_ids[i, :p.top_logprobs], out.top_logprobs[i, :p.top_logprobs])] \
                if p.top_logprobs else None
            events.append(Event(s, tok, float(out.logprobs[i]) if p.wants_logprobs else None, top, finish))
            if finish:
                s.finish_reason = finish
                self._drop(s)
        return events

    def _next_job(self) -> Job | None:
        free = [s for s in self.active if not s.busy and not s.done]
        prefill = [s for s in free if not s.decoding]
        decode = [s for s in free if s.decoding]
        if prefill and (self._last_was_prefill is False or not decode):
            self._last_was_prefill = True
            return self._chunk(prefill[0])
        self._last_was_prefill = False
        if not decode:
            return None
        # with several jobs in flight, split the decoding sequences into that many micro-batches
        running = sum(1 for s in self.active if s.decoding)
        rows = decode[:min(self.max_batch, -(-running // self.backend.window))]
        self.decode_rows[len(rows)] += 1
        tokens = np.array([[s.history[-1]] for s in rows], np.int32)
        return Job(rows, tokens, [s.position for s in rows], True, [s.seeds.next() for s in rows])

    def _chunk(self, s: Sequence) -> Job:
        start = s.prefilled
        end = min(start + self.prefill_chunk, len(s.prompt))
        s.prefilled = end
        last = end == len(s.prompt)
        return Job([s], np.array([s.prompt[start:end]], np.int32), [start], last,
                   [s.seeds.next()] if last else [])

    def run(self, seqs: list[Sequence]):
        """Add `seqs` and step until all are done; yields their events (Pipeline.stream_batch, benches)."""
        for s in seqs:
            self.add(s)
        try:
            while not self.idle:
                yield from self.step()
        finally:
            for s in list(self.active):
                self.cancel(s)
            while self.inflight:  # keep the backend in step with its peer
                self.inflight.popleft()
                self.backend.collect()
