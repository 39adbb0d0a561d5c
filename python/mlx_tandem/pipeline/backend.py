"""Rank 0's side of the scheduler: the batch.scheduler Backend protocol over the pipeline's connection.

Each open sequence holds a slot (its caches on rank 1) and its rank-0 caches. A job runs the first stage
on its rows here (batch.LocalBackend.run: one forward, RowCaches for B > 1) and goes to rank 1 as one
FORWARD; rank 1 answers strictly in order, so collect() takes the RESULT of the oldest job and any other
frame is a SequenceError. With the default window of 2 jobs in flight the scheduler splits the decoding
sequences into two micro-batches: rank 0 computes one while rank 1 computes the other.
"""

from __future__ import annotations

import collections
import heapq
import time

import mlx.core as mx
import numpy as np

from ..batch.local import LocalBackend
from ..batch.scheduler import Job, Sequence
from ..sampling import Sampled
from .errors import PipelineError, SequenceError
from .messages import MAX_SLOTS, Forward, Release, Result, Want
from .tensors import to_numpy
from .transport import Connection
from .wire import MsgType


class PipelineBackend:
    """Over `pipe` (a Pipeline: its first stage, connection and stats); `window` jobs in flight (default
    the pipeline's, 2). Also what the server's engine needs of its peer: alive / reconnect / describe."""

    def __init__(self, pipe, *, window: int | None = None):
        window = window or pipe.window
        if window < 1:
            raise ValueError(f"pipeline: window must be >= 1, got {window}")
        self.pipe = pipe
        self.local = LocalBackend(pipe.model)  # the first stage and its caches, as in one process
        self.window = window
        self.stats = pipe.stats
        self.reset()
        pipe.backends.add(self)  # pipe.reconnect() resets every backend over it

    @property
    def conn(self) -> Connection:
        return self.pipe.conn  # reconnect() replaces it

    def reset(self) -> None:
        """Start clean (after a reconnect): no slots held, nothing in flight. Sequences opened before are
        forgotten; releasing one later is a no-op."""
        self.slots: dict[Sequence, int] = {}
        self.free = list(range(MAX_SLOTS))  # a heap: the lowest free slot first
        self.sent: set[int] = set()  # slots rank 1 holds caches for (a FORWARD went out since open)
        self.pending: collections.deque = collections.deque()  # (job, step, want, n)

    # ---- the server's Peer -----------------------------------------------------------------------
    def alive(self) -> bool:
        return not self.conn.closed  # the transport closes the link on any fault it sees

    def reconnect(self, deadline: float | None = None) -> None:
        self.pipe.reconnect(deadline=deadline)

    def close(self) -> None:
        """Drop the link after a local fault (rank 1 sees it and redials; reconnect() then starts clean)."""
        self.conn.close()

    def describe(self) -> str:
        return f"rank 1 ({self.conn.peer})"

    # ---- the Backend protocol --------------------------------------------------------------------
    def open(self, seq: Sequence) -> None:
        if not self.free:
            raise RuntimeError(f"pipeline: all {MAX_SLOTS} slots are in use")
        self.local.open(seq)
        self.slots[seq] = heapq.heappop(self.free)

    def release(self, seq: Sequence) -> None:
        """Free the sequence's caches on both ranks now. The slot is reused only after its RELEASE went out,
        so rank 1 (which handles frames in order) has dropped it before any new FORWARD for it."""
        self.local.release(seq)
        slot = self.slots.pop(seq, None)
        if slot is None:  # opened before a reset
            return
        if slot in self.sent:
            self.sent.discard(slot)
            if not self.conn.closed:  # else rank 1's caches went with the link
                self.conn.send(MsgType.RELEASE, self.pipe.step, Release([slot]).tensors())
        heapq.heappush(self.free, slot)

    def issue(self, job: Job, want: Want | None = None) -> None:
        if want is None:
            want = Want.NONE if not job.sample else \
                Want.LOGPROBS if any(s.params.wants_logprobs for s in job.rows) else Want.TOKENS
        n = max(s.params.top_logprobs for s in job.rows) if want >= Want.LOGPROBS else 0
        t0 = time.perf_counter()
        h = self.local.run(job)
        mx.eval(h)
        hidden = to_numpy(h)
        slots = [self.slots[s] for s in job.rows]
        seeds = job.key_seeds or [0] * len(job.rows)  # a prompt chunk samples nothing
        req = Forward(want, hidden, slots, list(job.offsets), [s.params for s in job.rows], seeds, n)
        step = self.pipe.next_step()
        self.conn.send(MsgType.FORWARD, step, req.tensors())
        self.sent.update(slots)
        self.pending.append((job, step, want, n))
        self.stats.stage_seconds += time.perf_counter() - t0
        self.stats.requests += 1

    def collect(self) -> tuple[Job, Sampled | None]:
        job, res = self.receive()
        if not job.sample:
            return job, None
        B = len(job.rows)
        self.stats.tokens += B
        if res.logprobs.shape[0] != B:  # want TOKENS: nothing but ids came back
            return job, Sampled(res.tokens, np.zeros((B,), np.float32), np.zeros((B, 0), np.int32),
                                np.zeros((B, 0), np.float32))
        return job, Sampled(res.tokens, res.logprobs, res.top_ids, res.top_logprobs)

    # ---- the wire ------------------------------------------------------------------------------
    def receive(self) -> tuple[Job, Result]:
        """The oldest job in flight and rank 1's RESULT for it."""
        if not self.pending:
            raise RuntimeError("pipeline: collect() with no job in flight")
        job, step, want, n = self.pending.popleft()
        t0 = time.perf_counter()
        frame = self.conn.recv()
        self.stats.wait_seconds += time.perf_counter() - t0
        try:
            if frame.msg_type != MsgType.RESULT or frame.step != step:
                raise SequenceError(f"pipeline: expected RESULT for step {step}, got {frame.describe()}")
            return job, Result.parse(frame, want, len(job.rows), n)
        except PipelineError:
            self.conn.close()  # the two ranks no longer agree on the state: this link is finished
            raise
