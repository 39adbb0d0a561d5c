"""Caches of attention layers: preallocated buffers, grown in steps, handed to fused_attention as views."""

from __future__ import annotations

import mlx.core as mx

from .. import _ext


class _StepBuffers:
    """One or more (B, H, capacity, D_i) buffers that advance together along axis 2.

    `_update(*new)` writes the new positions in place and returns each buffer's valid prefix
    `[..., :offset, :]` as a strided view (no copy). Buffers grow by `step` positions at a time,
    so decode does not reallocate per token.
    """

    step = 256

    def __init__(self, step: int | None = None):
        self.buffers: list[mx.array] | None = None
        self.offset = 0
        if step is not None:
            self.step = step

    def _update(self, *new: mx.array) -> list[mx.array]:
        prev, n = self.offset, new[0].shape[2]
        if self.buffers is None or prev + n > self.buffers[0].shape[2]:
            self._grow(new, prev + n)
        elif any(a.shape[:2] != b.shape[:2] or a.shape[3] != b.shape[3] for a, b in zip(new, self.buffers)):
            raise ValueError(f"{type(self).__name__}: new entries {[a.shape for a in new]} do not match the "
                             f"cache {[b.shape for b in self.buffers]}")
        self.offset = prev + n
        for a, b in zip(new, self.buffers):
            b[..., prev:self.offset, :] = a
        return [b[..., :self.offset, :] for b in self.buffers]

    def _grow(self, new, needed):
        cap = -(-needed // self.step) * self.step
        grown = [mx.zeros((*a.shape[:2], cap, a.shape[3]), a.dtype) for a in new]
        if self.buffers is not None and self.offset:
            for g, b in zip(grown, self.buffers):
                g[..., :self.offset, :] = b[..., :self.offset, :]
        self.buffers = grown

    @property
    def state(self):
        return tuple(self.buffers or ())

    def trim(self, n: int) -> int:
        """Drop the last n positions (speculative/retry use); returns how many were dropped."""
        n = min(self.offset, n)
        self.offset -= n
        return n


class KVCache(_StepBuffers):
    """Keys/values of one attention layer, (B, Hkv, capacity, D) each."""

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        if keys.ndim != 4 or values.ndim != 4 or keys.shape[:3] != values.shape[:3]:
            raise ValueError(f"KVCache: expected keys/values (B, Hkv, L, D) with matching B, Hkv, L; "
                             f"got {keys.shape} and {values.shape}")
        k, v = self._update(keys, values)
        return k, v

    @property
    def keys(self):
        return self.buffers[0] if self.buffers else None

    @property
    def values(self):
        return self.buffers[1] if self.buffers else None


class LatentCache(_StepBuffers):
    """MLA's compressed cache: per token one row (B, 1, capacity, D) holding the normalised latent
    and the rotated shared rope key side by side; keys are whole rows, values their latent prefix."""

    def update_and_fetch(self, entries: mx.array) -> mx.array:
        if entries.ndim != 4 or entries.shape[1] != 1:
            raise ValueError(f"LatentCache: expected entries (B, 1, L, D), got {entries.shape}")
        return self._update(entries)[0]


class RowCaches(list):
    """One layer's caches for a ragged batch: row i of the batch is its own sequence with its own cache
    (and position), as continuous batching builds them. Attention layers run their position-dependent
    part (RoPE, the cache update, attention) row by row through `each_row`; everything else (the
    projections, the MLP: the weight reads) runs once for all rows."""


def attend_rows(caches: RowCaches, q: mx.array, k: mx.array, v: mx.array | None, scale: float,
                value_dim: int | None = None) -> mx.array:
    """A ragged batch's cache update and causal attention as one native op (CPU): q (B, Hq, L, Dk),
    k/v (B, Hkv, L, D) already rotated, row b at its own cache's position -> (B, Hq, L, Dv). KVCaches
    take k and v; LatentCaches take their entries as k with v=None and value_dim (the latent prefix).
    Each row's buffers are replaced by the op's outputs, so nothing else holds the old ones and they
    are written in place."""
    L = k.shape[2]
    for i, c in enumerate(caches):
        if c.buffers is None or c.offset + L > c.buffers[0].shape[2]:
            c._grow((k[i:i + 1],) if v is None else (k[i:i + 1], v[i:i + 1]), c.offset + L)
    out, ks, vs = _ext.attention_rows(q, k, v, [c.buffers[0] for c in caches],
                                      [] if v is None else [c.buffers[1] for c in caches],
                                      [c.offset for c in caches], scale=scale, value_dim=value_dim)
    for i, c in enumerate(caches):
        c.buffers = [ks[i]] if v is None else [ks[i], vs[i]]
        c.offset += L
    return out


def each_row(cache, fn, *xs: mx.array) -> mx.array:
    """fn(*xs, cache) -> (B, ...) for a plain cache (or None); for RowCaches, fn on each row's slices
    of xs with that row's cache, concatenated along the batch axis."""
    if not isinstance(cache, RowCaches):
        return fn(*xs, cache)
    if len(cache) != xs[0].shape[0]:
        raise ValueError(f"attention: {len(cache)} row caches for a batch of {xs[0].shape[0]} rows")
    if len(cache) == 1:
        return fn(*xs, cache[0])
    return mx.concatenate([fn(*(x[i:i + 1] for x in xs), c) for i, c in enumerate(cache)], axis=0)
