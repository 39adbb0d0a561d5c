"""The last stage (rank 1): run its layers on each FORWARD, sample, and send token ids back.

The stage object follows the model interface: `stage(hidden (B, L, H), cache=...)` returns logits
(B, L, V) and `stage.make_cache()` returns the KV caches of its layers (objects with `.offset`).
Requests are served strictly in arrival order; each FORWARD gets exactly one RESULT with its step id,
a RELEASE none. A FORWARD's rows are separate sequences (one slot each, each at its own position):
B > 1 runs as one forward over RowCaches, so every weight is read once for all rows.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from ..batch.local import forward_rows
from ..sampling import sample_graph, to_sampled
from .errors import PipelineError, ProtocolError
from .messages import Forward, Release, Result, Want
from .tensors import to_mx
from .transport import Connection, log
from .wire import MsgType, text_tensor


def _cache_offset(cache) -> int:
    return cache[0].offset if cache else 0


class StageServer:
    """Serves one connection. Caches and sampled tokens are kept per slot; a row at offset 0 starts a
    new sequence in its slot, RELEASE drops slots."""

    def __init__(self, model, conn: Connection | None):
        self.model = model
        self.conn = conn
        self.caches: dict[int, list] = {}
        self.generated: dict[int, list[int]] = {}  # per slot, for the presence/frequency penalties
        self.served = 0

    def handle(self, req: Forward, step: int) -> Result:
        for slot, off in zip(req.slots, req.offsets):
            if off == 0:
                self.caches[slot] = self.model.make_cache()
                self.generated[slot] = []
            cache = self.caches.get(slot)
            if cache is None or _cache_offset(cache) != off:
                have = "no sequence" if cache is None else f"a sequence at position {_cache_offset(cache)}"
                raise ProtocolError(f"pipeline: step {step} continues slot {slot} at position {off}, "
                                    f"but this stage holds {have} there")
        caches = [self.caches[s] for s in req.slots]
        out = forward_rows(self.model, to_mx(req.hidden), caches, last_only=True)  # as LocalBackend: same numerics
        if req.want == Want.NONE:
            mx.eval([c.state for cache in caches for c in cache])
            return Result.empty()
        logits = out[:, -1, :].astype(mx.float32)
        penalized = any(p.penalized for p in req.params)
        counts = [np.array(self.generated[s], np.int32) for s in req.slots] if penalized else None
        parts = sample_graph(logits, req.params, req.key_seeds, counts)
        mx.eval(parts, logits)
        got = to_sampled(parts)
        for s, tok in zip(req.slots, got.tokens.tolist()):
            self.generated[s].append(tok)
        if req.want < Want.LOGPROBS:
            return Result(got.tokens, np.zeros((0,), np.float32), np.zeros((0, 0), np.int32),
                          np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32))
        return Result(got.tokens, got.logprobs, got.top_ids, got.top_logprobs,
                      np.array(logits) if req.want == Want.LOGITS else np.zeros((0, 0), np.float32))

    def release(self, req: Release, step: int) -> None:
        empty = [s for s in req.slots if s not in self.caches]
        if empty:  # rank 0 only releases slots it sent a FORWARD for: the two ranks disagree
            raise ProtocolError(f"pipeline: step {step} releases slot {empty[0]}, which holds no sequence")
        for s in req.slots:
            del self.caches[s], self.generated[s]

    def serve(self) -> None:
        """Until SHUTDOWN (returns) or a fault (raises a PipelineError after telling the peer)."""
        while True:
            frame = self.conn.recv()
            if frame.msg_type == MsgType.SHUTDOWN:
                return
            try:
                if frame.msg_type == MsgType.RELEASE:
                    self.release(Release.parse(frame), frame.step)
                    continue
                result = self.handle(Forward.parse(frame), frame.step)
            except Exception as e:  # bad request or a bug: tell rank 0 (never leave it waiting), drop the link
                log(f"stage: failing step {frame.step}: {type(e).__name__}: {e}")
                try:
                    self.conn.send(MsgType.ERROR, frame.step, [text_tensor(f"{type(e).__name__}: {e}")])
                except PipelineError:
                    pass
                finally:
                    self.conn.close()
                raise
            self.conn.send(MsgType.RESULT, frame.step, result.tensors())
            self.served += 1
