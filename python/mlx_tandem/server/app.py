"""The HTTP side (Starlette): routes, auth, OpenAI response objects and server-sent events.

Each request turns its engine events into text with the same TextStream as stream_generate, so stop
strings, EOS and max_tokens end a text the same way here as in `tandem generate`. A stop string ends
the sequence in the engine at once; so does a client that goes away (streaming or not).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid

from starlette.applications import Starlette
from starlette.requests import Request as HTTPRequest
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route

from ..text import TextStream
from . import metrics
from .engine import Engine, QueueFull
from .protocol import APIError, Request, parse


def _error(e: APIError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


class _Run:
    """One request's generation: engine events in, (text piece, token info, finish) out."""

    def __init__(self, engine: Engine, req: Request):
        self.engine, self.req = engine, req
        self.loop = asyncio.get_running_loop()
        self.events: asyncio.Queue = asyncio.Queue()
        self.text = TextStream(engine.tokenizer, req.max_tokens, req.stop, req.ignore_eos)
        self.created = int(time.time())
        self.seq = engine.submit(req.prompt, req.params, req.max_tokens,
                                 lambda ev: self.loop.call_soon_threadsafe(self.events.put_nowait, ev),
                                 req.ignore_eos)
        self.finish_reason: str | None = None

    async def next(self):
        """The next (text, logprob entry or None, finish reason or None), or None once the text ended;
        raises APIError (503) when the engine failed the sequence (the peer died)."""
        while self.finish_reason is None:
            ev = await self.events.get()
            if ev.error is not None:
                self.finish_reason = "error"
                raise APIError(503, f"generation failed: {ev.error}", type="server_error", code="generation_failed")
            if ev.token is None:  # ended without a token (cancelled)
                self.finish_reason = ev.finish_reason or "cancelled"
                return None
            piece, finish = self.text.add(ev.token)
            if finish is None and ev.finish_reason is not None:  # the engine ended it (EOS/length)
                more, finish = self.text.close(ev.finish_reason)
                piece += more
            self.finish_reason = finish
            return piece, self._logprob(ev), finish
        return None

    def close(self) -> None:
        """Free the sequence in the engine unless it already ended there (stop string, client gone)."""
        if self.seq.finish_reason is None:
            self.engine.cancel(self.seq)

    async def pieces(self):
        try:
            while (item := await self.next()) is not None:
                yield item
        finally:
            self.close()

    def _logprob(self, ev):
        if ev.logprob is None:
            return None
        tok = self.engine.tokenizer
        text = lambda t: tok.decode([t], skip_special_tokens=False)
        entry = {"token": text(ev.token), "logprob": ev.logprob, "bytes": list(text(ev.token).encode())}
        entry["top_logprobs"] = [{"token": text(t), "logprob": lp, "bytes": list(text(t).encode())}
                                 for t, lp in (ev.top_logprobs or [])]
        return entry

    def usage(self) -> dict:
        n = self.text.tokens
        return {"prompt_tokens": len(self.req.prompt), "completion_tokens": n,
                "total_tokens": len(self.req.prompt) + n}


def _completion_logprobs(entries: list[dict], offset0: int = 0) -> dict:
    """The legacy completions format of per-token logprobs."""
    offsets, at = [], offset0
    for e in entries:
        offsets.append(at)
        at += len(e["token"])
    return {"tokens": [e["token"] for e in entries], "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": [{t["token"]: t["logprob"] for t in e["top_logprobs"]} for e in entries],
            "text_offset": offsets}


def build_app(engine: Engine, model_id: str, api_key: str | None = None,
              default_temperature: float = 1.0) -> Starlette:
    registry = metrics.Registry(engine)

    def authorized(request: HTTPRequest) -> bool:
        if api_key is None:
            return True  # any Bearer token (the openai client always sends one), or none
        got = request.headers.get("authorization", "")
        scheme, _, token = got.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), api_key.encode())

    def guarded(handler):
        async def wrapped(request: HTTPRequest):
            if not authorized(request):
                return _error(APIError(401, "invalid or missing API key (Authorization: Bearer <key>)",
                                       type="invalid_request_error", code="invalid_api_key"))
            try:
                return await handler(request)
            except APIError as e:
                return _error(e)
        return wrapped

    async def health(request):
        ok, detail = engine.health()
        return JSONResponse({"status": "ok" if ok else "unhealthy", "detail": detail}, status_code=200 if ok else 503)

    async def models(request):
        return JSONResponse({"object": "list", "data": [
            {"id": model_id, "object": "model", "created": 0, "owned_by": "mlx-tandem"}]})

    async def prometheus(request):
        return PlainTextResponse(registry.render(), media_type=metrics.CONTENT_TYPE)

    async def body_of(request) -> dict:
        try:
            return json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise APIError(400, f"the request body is not valid JSON: {e}") from None

    def start(req: Request) -> _Run:
        try:  # while the peer is down requests queue and wait for it (the engine keeps accepting)
            return _Run(engine, req)
        except QueueFull as e:
            raise APIError(429, str(e), type="rate_limit_error", code="queue_full",
                           headers={"Retry-After": str(e.retry_after)}) from None

    async def complete(request, kind: str):
        req = parse(await body_of(request), kind, engine.tokenizer, engine.context_length, model_id,
                    default_temperature)
        run = start(req)
        rid = ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex
        if req.stream:
            return StreamingResponse(_sse(run, rid, kind, model_id), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        return await _whole(request, run, rid, kind, model_id)

    async def chat(request):
        return await complete(request, "chat")

    async def completions(request):
        return await complete(request, "completion")

    routes = [Route("/health", health), Route("/v1/models", guarded(models)),
              Route("/metrics", guarded(prometheus)),
              Route("/v1/chat/completions", guarded(chat), methods=["POST"]),
              Route("/v1/completions", guarded(completions), methods=["POST"])]

    async def not_found(request, exc):
        return _error(APIError(404, f"no route {request.method} {request.url.path}", code="not_found"))

    async def not_allowed(request, exc):
        return _error(APIError(405, f"{request.method} is not allowed on {request.url.path}"))

    async def crashed(request, exc):  # never a stack trace to the client
        return _error(APIError(500, f"internal error: {type(exc).__name__}", type="server_error"))

    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_allowed, Exception: crashed})


async def _whole(request: HTTPRequest, run: _Run, rid: str, kind: str, model_id: str):
    text, entries = [], []
    try:
        while True:
            try:
                item = await asyncio.wait_for(run.next(), timeout=0.5)
            except asyncio.TimeoutError:  # nothing yet: is the client still there?
                if await request.is_disconnected():
                    return PlainTextResponse("", status_code=499)
                continue
            if item is None:
                break
            text.append(item[0])
            if item[1] is not None:
                entries.append(item[1])
    finally:
        run.close()
    content, lp = "".join(text), None
    if run.req.params.wants_logprobs:
        lp = {"content": entries} if kind == "chat" else _completion_logprobs(entries)
    choice = ({"index": 0, "message": {"role": "assistant", "content": content}, "logprobs": lp,
               "finish_reason": run.finish_reason} if kind == "chat" else
              {"index": 0, "text": content, "logprobs": lp, "finish_reason": run.finish_reason})
    return JSONResponse({"id": rid, "object": "chat.completion" if kind == "chat" else "text_completion",
                         "created": run.created, "model": model_id, "choices": [choice], "usage": run.usage()})


def _sse_data(obj) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def _sse(run: _Run, rid: str, kind: str, model_id: str):
    obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
    head = {"id": rid, "object": obj, "created": run.created, "model": model_id}

    def chunk(text, lp, finish, first=False):
        if kind == "chat":
            delta = ({"role": "assistant", "content": text} if first else {"content": text}) if finish is None or text \
                else {}
            c = {"index": 0, "delta": delta, "logprobs": {"content": [lp]} if lp else None, "finish_reason": finish}
        else:
            c = {"index": 0, "text": text, "logprobs": _completion_logprobs([lp]) if lp else None,
                 "finish_reason": finish}
        out = dict(head, choices=[c])
        if run.req.include_usage:
            out["usage"] = None
        return _sse_data(out)

    try:
        if kind == "chat":
            yield chunk("", None, None, first=True)
        async for piece, lp, finish in run.pieces():
            if piece or lp or finish:
                yield chunk(piece, lp, finish)
        if run.req.include_usage:
            yield _sse_data(dict(head, choices=[], usage=run.usage()))
    except APIError as e:  # the peer failed mid-stream: an error event naming the cause
        yield _sse_data(e.body())
    yield "data: [DONE]\n\n"
