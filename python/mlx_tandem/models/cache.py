"""KV cache: one preallocated buffer per layer, grown in steps, handed to fused_attention as views."""

from __future__ import annotations

import mlx.core as mx


class KVCache:
    """Keys/values of one attention layer, (B, Hkv, capacity, D) each.

    `update_and_fetch` writes the new positions in place and returns the valid prefix
    `[..., :offset, :]` as a strided view of the buffer (no copy); fused_attention reads views.
    The buffer grows by `step` positions at a time, so decode does not reallocate per token.
    """

    step = 256

    def __init__(self, step: int | None = None):
        self.keys: mx.array | None = None
        self.values: mx.array | None = None
        self.offset = 0
        if step is not None:
            self.step = step

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        if keys.ndim != 4 or values.ndim != 4 or keys.shape[:3] != values.shape[:3]:
            raise ValueError(f"KVCache: expected keys/values (B, Hkv, L, D) with matching B, Hkv, L; "
                             f"got {keys.shape} and {values.shape}")
        prev, n = self.offset, keys.shape[2]
        if self.keys is None or prev + n > self.keys.shape[2]:
            self._grow(keys, values, prev + n)
        elif keys.shape[:2] != self.keys.shape[:2] or keys.shape[3] != self.keys.shape[3]:
            raise ValueError(f"KVCache: new keys {keys.shape} do not match the cache {self.keys.shape}")
        self.offset = prev + n
        self.keys[..., prev:self.offset, :] = keys
        self.values[..., prev:self.offset, :] = values
        return self.keys[..., :self.offset, :], self.values[..., :self.offset, :]

    def _grow(self, keys, values, needed):
        B, H, _, Dk = keys.shape
        Dv = values.shape[3]
        cap = -(-needed // self.step) * self.step
        new_k = mx.zeros((B, H, cap, Dk), keys.dtype)
        new_v = mx.zeros((B, H, cap, Dv), values.dtype)
        if self.keys is not None and self.offset:
            new_k[..., :self.offset, :] = self.keys[..., :self.offset, :]
            new_v[..., :self.offset, :] = self.values[..., :self.offset, :]
        self.keys, self.values = new_k, new_v

    @property
    def state(self):
        return self.keys, self.values

    def trim(self, n: int) -> int:
        """Drop the last n positions (speculative/retry use); returns how many were dropped."""
        n = min(self.offset, n)
        self.offset -= n
        return n
