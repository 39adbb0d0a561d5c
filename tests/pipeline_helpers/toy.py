"""A tiny stand-in stage with the model interface (layer_range, make_cache, token ids or hidden states in,
hidden states or logits out), so the pipeline tests need neither checkpoints nor the FP8 kernels.
Each layer mixes in a running mean of everything cached before, so a cache that is skipped, reset or
fed out of order changes the tokens."""

import mlx.core as mx

from mlx_tandem.models.cache import RowCaches

CONFIG = dict(vocab=97, hidden=32, layers=6, seed=7)


class ToyCache:
    def __init__(self, hidden):
        self.offset = 0
        self.total = mx.zeros((1, 1, hidden), mx.float32)

    @property
    def state(self):
        return self.total


class ToyModel:
    def __init__(self, config=CONFIG, layer_range=None, dtype=mx.float32):
        n = config["layers"]
        self.start, self.end = layer_range or (0, n)
        if not 0 <= self.start < self.end <= n:
            raise ValueError(f"toy: bad layer_range {layer_range}")
        self.hidden = config["hidden"]
        self.dtype = dtype
        key = mx.random.key(config["seed"])
        keys = mx.random.split(key, n + 2)
        self.embed = mx.random.normal((config["vocab"], self.hidden), key=keys[n]).astype(dtype)
        self.head = mx.random.normal((self.hidden, config["vocab"]), key=keys[n + 1]).astype(dtype)
        self.weights = [(mx.random.normal((self.hidden, self.hidden), key=keys[i]) / self.hidden ** 0.5).astype(dtype)
                        for i in range(self.start, self.end)]
        self.is_first, self.is_last = self.start == 0, self.end == n

    def make_cache(self):
        return [ToyCache(self.hidden) for _ in self.weights]

    def __call__(self, inputs, cache=None, last_only=False):
        if self.is_first:
            if inputs.ndim != 2:
                raise ValueError(f"toy: first stage takes token ids (B, L), got {inputs.shape}")
            h = self.embed[inputs]
        else:
            if inputs.ndim != 3 or inputs.shape[-1] != self.hidden:
                raise ValueError(f"toy: stage takes (B, L, {self.hidden}), got {inputs.shape}")
            h = inputs.astype(self.dtype)
        if cache and isinstance(cache[0], RowCaches):  # a ragged batch: each row with its own caches
            rows = [self(inputs[i:i + 1], [c[i] for c in cache], last_only) for i in range(len(cache[0]))]
            return mx.concatenate(rows)
        cache = cache or [ToyCache(self.hidden) for _ in self.weights]
        for w, c in zip(self.weights, cache):
            L = h.shape[1]
            pos = mx.arange(c.offset + 1, c.offset + L + 1, dtype=mx.float32)[None, :, None]
            ctx = (c.total + mx.cumsum(h.astype(mx.float32), axis=1)) / pos
            h = h + mx.tanh((h + ctx.astype(self.dtype)) @ w)
            c.total = c.total + h.astype(mx.float32).sum(axis=1, keepdims=True)
            c.offset += L
        if not self.is_last:
            return h
        return (h[:, -1:] if last_only else h) @ self.head


def greedy_reference(prompt, n_tokens, config=CONFIG, dtype=mx.float32, chunk=512):
    """Single-process greedy tokens with the whole toy model (prefill chunked like the pipeline)."""
    model = ToyModel(config, None, dtype)
    cache = model.make_cache()
    prompt = mx.array(prompt, mx.int32)
    for j in range(0, prompt.size, chunk):
        logits = model(prompt[None, j:j + chunk], cache)
    out = []
    for _ in range(n_tokens):
        tok = int(mx.argmax(logits[0, -1].astype(mx.float32)).item())
        out.append(tok)
        logits = model(mx.array([[tok]], mx.int32), cache)
    return out
