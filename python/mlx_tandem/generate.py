"""Loading and text generation: `load`, `sample`, `generate_step`, `stream_generate`, `generate`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator

import mlx.core as mx

from .checkpoint import load_model
from .memory import check_checkpoint
from .tokenizer import TokenizerWrapper


def load(path: str, layer_range: tuple[int, int] | None = None, dtype=None,
         head_bf16: bool | None = None, memory_check: bool = True):
    """(model, tokenizer) from a checkpoint directory (ours, DeepSeek-V3 FP8 or a float HF one,
    quantized at load). With `layer_range` only those layers' tensors are read. First checks that
    they fit in the available memory (memory.NotEnoughMemory, a ValueError, if not; memory_check=False
    or TANDEM_NO_MEMORY_CHECK=1 skips that)."""
    check_checkpoint(path, layer_range, enabled=memory_check)
    model, _ = load_model(path, layer_range=layer_range, dtype=dtype, head_bf16=head_bf16)
    return model, TokenizerWrapper.from_dir(path)


def sample(logits: mx.array, temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0,
           key: mx.array | None = None) -> mx.array:
    """Token ids (B,) from logits (B, vocab): argmax at temperature 0, else softmax(logits / T)
    restricted to the top_k tokens and the smallest set with probability mass >= top_p."""
    if logits.ndim != 2:
        raise ValueError(f"sample: logits must be (B, vocab), got {logits.shape}")
    if temperature < 0 or not 0 < top_p <= 1 or top_k < 0:
        raise ValueError(f"sample: need temperature >= 0, 0 < top_p <= 1, top_k >= 0; got "
                         f"{temperature}, {top_p}, {top_k}")
    if temperature == 0:
        return mx.argmax(logits, axis=-1)
    logits = logits.astype(mx.float32) / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = mx.sort(logits, axis=-1)[:, -top_k][:, None]
        logits = mx.where(logits < kth, -float("inf"), logits)
    if top_p < 1:
        order = mx.argsort(-logits, axis=-1)
        sorted_logits = mx.take_along_axis(logits, order, axis=-1)
        probs = mx.softmax(sorted_logits, axis=-1)
        # keep a token if the mass before it is below top_p (so the top token always stays)
        drop = (mx.cumsum(probs, axis=-1) - probs) >= top_p
        sorted_logits = mx.where(drop, -float("inf"), sorted_logits)
        logits = mx.put_along_axis(mx.full(logits.shape, -float("inf")), order, sorted_logits, axis=-1)
    return mx.random.categorical(logits, axis=-1, key=key)


def generate_step(model, prompt: mx.array, *, temperature=0.0, top_p=1.0, top_k=0, seed=None,
                  cache=None, prefill_step: int = 512) -> Iterator[int]:
    """Yields token ids. The prompt (1-D ids) is prefilled in chunks; each next step is queued
    before the previous token is handed out, so Python overlaps with compute."""
    if prompt.ndim != 1 or prompt.size == 0:
        raise ValueError(f"generate: prompt must be a non-empty 1-D array of token ids, got {prompt.shape}")
    if hasattr(model, "generate_step"):  # a pipeline.Pipeline: rank 1 samples, tokens come back
        yield from model.generate_step(prompt, temperature=temperature, top_p=top_p, top_k=top_k, seed=seed,
                                       cache=cache, prefill_step=prefill_step)
        return
    cache = cache if cache is not None else model.make_cache()
    key = mx.random.key(seed if seed is not None else time.time_ns() % (1 << 63))

    def step(tokens, key):
        logits = model(tokens[None], cache=cache)[:, -1, :]
        if temperature == 0:  # greedy: no key to split (one op less per token)
            return sample(logits, temperature, top_p, top_k, key)[0], key
        k1, k2 = mx.random.split(key)
        return sample(logits, temperature, top_p, top_k, k1)[0], k2

    while prompt.size > prefill_step:
        model(prompt[None, :prefill_step], cache=cache)
        mx.eval([c.state for c in cache])
        prompt = prompt[prefill_step:]
    tok, key = step(prompt, key)
    mx.async_eval(tok, key)
    while True:
        nxt, key = step(tok[None], key)
        mx.async_eval(nxt, key)
        yield tok.item()
        tok = nxt


@dataclass
class GenerationResponse:
    text: str  # the new text of this step
    token: int | None
    prompt_tokens: int
    generation_tokens: int
    prompt_tps: float
    generation_tps: float
    finish_reason: str | None = None  # "stop" (EOS / stop string) or "length" on the last response


def prepare_prompt(tokenizer: TokenizerWrapper, prompt, chat: bool = False) -> list[int]:
    if isinstance(prompt, str):
        if chat:
            return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=True)
        return tokenizer.encode(prompt)
    if chat:
        return tokenizer.apply_chat_template(prompt, tokenize=True) if isinstance(prompt[0], dict) \
            else list(prompt)
    return [int(t) for t in prompt]


def stream_generate(model, tokenizer: TokenizerWrapper, prompt, max_tokens: int = 256, *,
                    temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0, seed: int | None = None,
                    stop: list[str] | None = None, chat: bool = False,
                    prefill_step: int = 512) -> Iterator[GenerationResponse]:
    """Stream text as it is generated. `prompt` is a string, token ids, or (with chat=True) a
    string or a list of chat messages. Stops at EOS, a stop string (not included) or max_tokens."""
    if max_tokens < 1:
        raise ValueError(f"generate: max_tokens must be >= 1, got {max_tokens}")
    ids = prepare_prompt(tokenizer, prompt, chat)
    stop = [s for s in (stop or []) if s]
    hold = max((len(s) for s in stop), default=1) - 1  # chars kept back while a stop string may form
    detok = tokenizer.detokenizer()
    pending = ""
    t0 = time.perf_counter()
    prompt_tps = 0.0
    n = 0
    gen = generate_step(model, mx.array(ids, mx.int32), temperature=temperature, top_p=top_p,
                        top_k=top_k, seed=seed, prefill_step=prefill_step)
    finish = "length"
    for n, token in enumerate(gen, start=1):
        if n == 1:
            t1 = time.perf_counter()
            prompt_tps = len(ids) / (t1 - t0)
        stats = lambda: (len(ids), n, prompt_tps, (n - 1) / max(time.perf_counter() - t1, 1e-9))
        if token in tokenizer.eos_token_ids:
            finish = "stop"
            break
        pending += detok.add_token(token)
        cut = min((pending.find(s) for s in stop if s in pending), default=-1)
        if cut >= 0:
            yield GenerationResponse(pending[:cut], token, *stats(), finish_reason="stop")
            return
        if n >= max_tokens:
            break
        emit = pending[:len(pending) - hold] if hold else pending
        if emit:
            pending = pending[len(emit):]
        yield GenerationResponse(emit, token, *stats())
    gen.close()
    pending += detok.finalize()
    cut = min((pending.find(s) for s in stop if s in pending), default=-1)
    if cut >= 0:
        pending, finish = pending[:cut], "stop"
    yield GenerationResponse(pending, None, len(ids), n, prompt_tps,
                             max(n - 1, 0) / max(time.perf_counter() - t1, 1e-9), finish_reason=finish)


def generate(model, tokenizer: TokenizerWrapper, prompt, max_tokens: int = 256, **kwargs) -> str:
    """The whole generated text (see stream_generate for the arguments)."""
    return "".join(r.text for r in stream_generate(model, tokenizer, prompt, max_tokens, **kwargs))
