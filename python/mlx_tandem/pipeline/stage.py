"""The last stage (rank 1): run its layers on each FORWARD, sample, and send token ids back.

The stage object follows the model interface: `stage(hidden (B, L, H), cache=...)` returns logits
(B, L, V) and `stage.make_cache()` returns the KV caches of its layers (objects with `.offset`).
Requests are served strictly in arrival order; each FORWARD gets exactly one RESULT with its step id.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from .errors import PipelineError, ProtocolError
from .messages import MAX_SLOTS, Forward, Result, Want
from .tensors import to_mx
from .transport import Connection, log
from .wire import MsgType, text_tensor


def _cache_offset(cache) -> int:
    return cache[0].offset if cache else 0


class StageServer:
    """Serves one connection. Caches are kept per slot; offset 0 starts a new sequence in that slot."""

    def __init__(self, model, conn: Connection):
        self.model = model
        self.conn = conn
        self.caches: dict[int, list] = {}
        self.served = 0

    def handle(self, req: Forward, step: int) -> Result:
        if req.offset == 0:
            self.caches[req.slot] = self.model.make_cache()
        cache = self.caches.get(req.slot)
        if cache is None or _cache_offset(cache) != req.offset:
            have = "no sequence" if cache is None else f"a sequence at position {_cache_offset(cache)}"
            raise ProtocolError(f"pipeline: step {step} continues slot {req.slot} at position {req.offset}, "
                                f"but this stage holds {have} there")
        out = self.model(to_mx(req.hidden), cache=cache)
        B = req.hidden.shape[0]
        empty = np.zeros((0,), np.float32)
        if req.want == Want.NONE:
            mx.eval([c.state for c in cache])
            return Result(np.zeros((0,), np.int32), empty, np.zeros((0, 0), np.float32))
        from ..generate import sample  # the one sampler of the project, shared with single-process runs

        logits = out[:, -1, :].astype(mx.float32)
        tokens = sample(logits, req.temperature, req.top_p, req.top_k, key=mx.random.key(req.seed))
        parts = [tokens]
        if req.want >= Want.LOGPROBS:
            lp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
            parts.append(mx.take_along_axis(lp, tokens[:, None], axis=-1)[:, 0])
        mx.eval(parts)
        return Result(np.array(tokens, dtype=np.int32),
                      np.array(parts[1]) if len(parts) > 1 else empty,
                      np.array(logits) if req.want == Want.LOGITS else np.zeros((0, 0), np.float32))

    def serve(self) -> None:
        """Until SHUTDOWN (returns) or a fault (raises a PipelineError after telling the peer)."""
        while True:
            frame = self.conn.recv()
            if frame.msg_type == MsgType.SHUTDOWN:
                return
            try:
                req = Forward.parse(frame)
                if req.slot not in self.caches and len(self.caches) >= MAX_SLOTS:
                    raise ProtocolError(f"pipeline: more than {MAX_SLOTS} sequences in flight")
                result = self.handle(req, frame.step)
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
