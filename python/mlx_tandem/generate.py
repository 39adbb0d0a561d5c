"""Loading and text generation: `load`, `sample`, `generate_step`, `stream_generate`, `generate` (on the
shared core: sampling.SamplingParams / SeedStream / sample_graph and text.TextStream)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator

import mlx.core as mx

import numpy as np

from .checkpoint import load_model
from .memory import check_checkpoint
from .sampling import Sampled, SamplingParams, SeedStream, sample, sample_graph, to_sampled  # noqa: F401 (sample: API)
from .text import TextStream
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


def _params(params: SamplingParams | None, temperature, top_p, top_k, seed) -> SamplingParams:
    return params if params is not None else SamplingParams(temperature, top_p, top_k, seed=seed)


def token_steps(model, prompt: mx.array, params: SamplingParams, *, cache=None,
                prefill_step: int = 512) -> Iterator[Sampled]:
    """One `Sampled` (B = 1) per generated token, forever (the caller stops). The prompt (1-D ids) is
    prefilled in chunks; unless penalties need the previous token first, each next step is queued
    before the previous token is handed out, so Python overlaps with compute."""
    if prompt.ndim != 1 or prompt.size == 0:
        raise ValueError(f"generate: prompt must be a non-empty 1-D array of token ids, got {prompt.shape}")
    cache = cache if cache is not None else model.make_cache()
    seeds = SeedStream(params.seed)
    history: list[int] = []

    def step(tokens):
        logits = model(tokens[None], cache=cache, last_only=True)[:, -1, :]
        counts = [np.array(history, np.int32)] if params.penalized else None
        return sample_graph(logits, [params], [seeds.next()], counts)

    while prompt.size > prefill_step:
        model(prompt[None, :prefill_step], cache=cache)
        mx.eval([c.state for c in cache])
        prompt = prompt[prefill_step:]
    parts = step(prompt)
    mx.async_eval(parts)
    while True:
        if params.penalized:  # the next step's penalties need this token
            out = to_sampled(parts)
            history.append(int(out.tokens[0]))
            parts = step(mx.array(out.tokens))
        else:
            nxt = step(parts[0])
            mx.async_eval(nxt)
            out, parts = to_sampled(parts), nxt
        mx.async_eval(parts)
        yield out


def generate_step(model, prompt: mx.array, *, temperature=0.0, top_p=1.0, top_k=0, seed=None,
                  params: SamplingParams | None = None, cache=None, prefill_step: int = 512) -> Iterator[int]:
    """Yields token ids (see token_steps); `params` overrides the separate sampling arguments."""
    params = _params(params, temperature, top_p, top_k, seed)
    if hasattr(model, "generate_step"):  # a pipeline.Pipeline: rank 1 samples, tokens come back
        yield from model.generate_step(prompt, params=params, cache=cache, prefill_step=prefill_step)
        return
    for out in token_steps(model, prompt, params, cache=cache, prefill_step=prefill_step):
        yield int(out.tokens[0])


@dataclass
class GenerationResponse:
    text: str  # the new text of this step
    token: int | None
    prompt_tokens: int
    generation_tokens: int
    prompt_tps: float
    generation_tps: float
    finish_reason: str | None = None  # "stop" (EOS / stop string) or "length" on the last response
    logprob: float | None = None  # of `token`, when params.logprobs
    top_logprobs: list[tuple[int, float]] | None = None  # (token, logprob), when params.top_logprobs


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
                    params: SamplingParams | None = None, stop: list[str] | None = None, chat: bool = False,
                    prefill_step: int | None = None) -> Iterator[GenerationResponse]:
    """Stream text as it is generated. `prompt` is a string, token ids, or (with chat=True) a
    string or a list of chat messages; `params` (a SamplingParams) overrides temperature/top_p/top_k/seed.
    Stops at EOS, a stop string (not included) or max_tokens. prefill_step: prompt tokens per chunk
    (default 512 in this process; a pipeline's own prefill_chunk)."""
    params = _params(params, temperature, top_p, top_k, seed)
    text = TextStream(tokenizer, max_tokens, stop)
    ids = prepare_prompt(tokenizer, prompt, chat)
    t0 = time.perf_counter()
    t1, prompt_tps = t0, 0.0
    if hasattr(model, "token_steps"):  # a pipeline.Pipeline
        steps = model.token_steps(mx.array(ids, mx.int32), params, prefill_step=prefill_step)
    else:
        steps = token_steps(model, mx.array(ids, mx.int32), params, prefill_step=prefill_step or 512)
    try:
        for out in steps:
            if text.tokens == 0:
                t1 = time.perf_counter()
                prompt_tps = len(ids) / (t1 - t0)
            token = int(out.tokens[0])
            piece, finish = text.add(token)
            n = text.tokens
            top = [(int(i), float(v)) for i, v in zip(out.top_ids[0], out.top_logprobs[0])] \
                if params.top_logprobs else None
            yield GenerationResponse(piece, token, len(ids), n, prompt_tps,
                                     (n - 1) / max(time.perf_counter() - t1, 1e-9), finish,
                                     float(out.logprobs[0]) if params.wants_logprobs else None, top)
            if finish is not None:
                return
    finally:
        steps.close()


def generate(model, tokenizer: TokenizerWrapper, prompt, max_tokens: int = 256, **kwargs) -> str:
    """The whole generated text (see stream_generate for the arguments)."""
    return "".join(r.text for r in stream_generate(model, tokenizer, prompt, max_tokens, **kwargs))
