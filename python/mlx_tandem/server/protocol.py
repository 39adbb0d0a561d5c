"""OpenAI request bodies -> what the engine runs, with OpenAI-shaped errors for anything we cannot honour.

Every field is checked for type and range; fields we do not implement are refused by name (a silent
ignore would return something other than what the client asked for).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..sampling import MAX_TOP_LOGPROBS, SamplingParams


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, type: str = "invalid_request_error",
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.type, self.code = status, message, param, type, code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad(param: str, message: str) -> APIError:
    return APIError(400, message, param)


COMMON = {"model", "max_tokens", "temperature", "top_p", "top_k", "min_p", "seed", "stop", "stream",
          "stream_options", "n", "presence_penalty", "frequency_penalty", "user", "ignore_eos"}
CHAT = COMMON | {"messages", "max_completion_tokens", "logprobs", "top_logprobs"}
COMPLETION = COMMON | {"prompt", "logprobs"}


@dataclass
class Request:
    kind: str  # "chat" or "completion"
    prompt: list[int]
    params: SamplingParams
    max_tokens: int
    stop: list[str]
    stream: bool
    include_usage: bool
    ignore_eos: bool = False


def _number(body, name, lo, hi, default, integer=False):
    v = body.get(name, default)
    if v is None:
        return default
    ok_type = isinstance(v, int) if integer else isinstance(v, (int, float))
    if isinstance(v, bool) or not ok_type or (not integer and not math.isfinite(v)) or not lo <= v <= hi:
        kind = "an integer" if integer else "a number"
        raise bad(name, f"'{name}' must be {kind} in [{lo}, {hi}], got {v!r}")
    return v


def _bool(body, name, default=False):
    v = body.get(name, default)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise bad(name, f"'{name}' must be a boolean, got {v!r}")
    return v


def _stop(body) -> list[str]:
    v = body.get("stop")
    if v is None:
        return []
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or len(v) > 4 or not all(isinstance(s, str) for s in v):
        raise bad("stop", "'stop' must be a string or a list of at most 4 strings")
    return [s for s in v if s]


def _text_content(content, i) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise bad(f"messages[{i}].content", "only text content parts are supported")
            parts.append(part["text"])
        return "".join(parts)
    if content is None:
        return ""
    raise bad(f"messages[{i}].content", "'content' must be a string or a list of text parts")


def _messages(body) -> list[dict]:
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise bad("messages", "'messages' must be a non-empty list")
    out = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ("system", "developer", "user", "assistant"):
            raise bad(f"messages[{i}].role", "each message needs a role: system, developer, user or assistant")
        if m.get("tool_calls") or m.get("function_call"):
            raise bad(f"messages[{i}]", "tool calls are not supported")
        role = "system" if m["role"] == "developer" else m["role"]
        out.append({"role": role, "content": _text_content(m.get("content"), i)})
    return out


def _prompt(body, tokenizer) -> list[int]:
    p = body.get("prompt")
    if isinstance(p, list) and len(p) == 1 and isinstance(p[0], str):
        p = p[0]
    if isinstance(p, str):
        if not p:
            raise bad("prompt", "'prompt' is empty")
        return tokenizer.encode(p)
    if isinstance(p, list) and p and all(isinstance(t, int) and not isinstance(t, bool) for t in p):
        if not all(0 <= t < tokenizer.vocab_size for t in p):
            raise bad("prompt", f"token ids must be in [0, {tokenizer.vocab_size})")
        return list(p)
    raise bad("prompt", "'prompt' must be a non-empty string or a list of token ids (one prompt: n = 1)")


def parse(body, kind: str, tokenizer, context_length: int, model_id: str,
          default_temperature: float = 1.0) -> Request:
    if not isinstance(body, dict):
        raise bad(None, "the request body must be a JSON object")
    allowed = CHAT if kind == "chat" else COMPLETION
    extra = sorted(set(body) - allowed)
    if extra:
        raise bad(extra[0], f"unsupported field '{extra[0]}'")
    model = body.get("model")
    if model is not None and model != model_id:
        raise APIError(404, f"the model '{model}' does not exist; this server serves '{model_id}'", "model",
                       code="model_not_found")
    if _number(body, "n", 1, 1 << 20, 1, integer=True) != 1:
        raise bad("n", "only n = 1 is supported")
    if kind == "chat":
        try:
            prompt = tokenizer.apply_chat_template(_messages(body), tokenize=True)
        except ValueError as e:
            raise bad("messages", str(e)) from None
        logprobs = _bool(body, "logprobs")
        top = _number(body, "top_logprobs", 0, MAX_TOP_LOGPROBS, 0, integer=True)
        if top and not logprobs:
            raise bad("top_logprobs", "'top_logprobs' needs 'logprobs': true")
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        limit_name = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    else:
        prompt = _prompt(body, tokenizer)
        n = _number(body, "logprobs", 0, 5, None, integer=True)
        logprobs, top = n is not None, n or 0
        max_tokens, limit_name = body.get("max_tokens", 16), "max_tokens"
    if len(prompt) >= context_length:
        raise bad("messages" if kind == "chat" else "prompt",
                  f"the prompt has {len(prompt)} tokens; this model's context is {context_length} tokens")
    room = context_length - len(prompt)
    if max_tokens is None:
        max_tokens = room
    elif isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise bad(limit_name, f"'{limit_name}' must be a positive integer, got {max_tokens!r}")
    elif max_tokens > room:
        raise bad(limit_name, f"this model's context is {context_length} tokens; the prompt has {len(prompt)} "
                              f"and '{limit_name}' asks for {max_tokens} more")
    opts = body.get("stream_options")
    if opts is not None and (not isinstance(opts, dict) or set(opts) - {"include_usage"}):
        raise bad("stream_options", "'stream_options' may only hold 'include_usage'")
    stream = _bool(body, "stream")
    if opts is not None and not stream:
        raise bad("stream_options", "'stream_options' needs 'stream': true")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise bad("seed", f"'seed' must be an integer, got {seed!r}")
    params = SamplingParams(
        temperature=float(_number(body, "temperature", 0, 2, default_temperature)),
        top_p=float(_number(body, "top_p", 1e-9, 1, 1.0)),
        top_k=int(_number(body, "top_k", 0, 1 << 30, 0, integer=True)),
        min_p=float(_number(body, "min_p", 0, 1, 0.0)),
        presence_penalty=float(_number(body, "presence_penalty", -2, 2, 0.0)),
        frequency_penalty=float(_number(body, "frequency_penalty", -2, 2, 0.0)),
        logprobs=logprobs, top_logprobs=top, seed=seed)
    return Request(kind, prompt, params, max_tokens, _stop(body), stream,
                   bool(opts and _bool(opts, "include_usage")), _bool(body, "ignore_eos"))
