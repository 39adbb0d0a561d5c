"""Running scheduler jobs on a model in this process."""

from __future__ import annotations

import collections

import mlx.core as mx
import numpy as np

from ..models.cache import RowCaches
from ..sampling import sample_graph, to_sampled
from .scheduler import Job, Sequence


def forward_rows(model, inputs: mx.array, caches: list[list], **kwargs) -> mx.array:
    """model(inputs, **kwargs) for a batch whose row i is its own sequence with caches[i] (one cache per
    layer, at its own position): one forward through RowCaches (B = 1 runs on its caches directly)."""
    if len(caches) == 1:
        return model(inputs, cache=caches[0], **kwargs)
    return model(inputs, cache=[RowCaches(c[i] for c in caches) for i in range(len(caches[0]))], **kwargs)


class LocalBackend:
    """Each sequence has its own caches; a decode job runs its rows as one forward through RowCaches.
    A job's graph is evaluated asynchronously at issue, so the scheduler's Python work overlaps it."""

    window = 1

    def __init__(self, model):
        self.model = model
        self._pending: collections.deque = collections.deque()

    def open(self, seq: Sequence) -> None:
        seq.state = self.model.make_cache()

    def release(self, seq: Sequence) -> None:
        seq.state = None

    def reset(self) -> None:
        self._pending.clear()

    def run(self, job: Job) -> mx.array:
        """The model on the job's tokens: a first stage's hidden states (B, L, H), all of which a pipeline
        sends on; a last stage's logits of the last position only (B, 1, V)."""
        for s, off in zip(job.rows, job.offsets):
            if s.state[0].offset != off:
                raise RuntimeError(f"batch: sequence {s.id} is at position {s.state[0].offset}, the job "
                                   f"expects {off}")
        return forward_rows(self.model, mx.array(job.tokens), [s.state for s in job.rows], last_only=True)

    def forward(self, job: Job) -> mx.array:
        """The model on the job's tokens; last-position logits (B, V)."""
        return self.run(job)[:, -1, :]

    def issue(self, job: Job) -> None:
        logits = self.forward(job)
        if not job.sample:
            parts = [c.state for c in job.rows[0].state]
        else:
            counts = [np.array(s.history, np.int32) for s in job.rows] \
                if any(s.params.penalized for s in job.rows) else None
            parts = sample_graph(logits, [s.params for s in job.rows], job.key_seeds, counts)
        mx.async_eval(parts)
        self._pending.append((job, parts))

    def collect(self):
        job, parts = self._pending.popleft()
        if not job.sample:
            mx.eval(parts)
            return job, None
        return job, to_sampled(parts)
