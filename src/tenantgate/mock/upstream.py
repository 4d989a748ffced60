"""A realistic OpenAI-compatible upstream for demos, tests and benchmarks.

The gateway must be exercised against something that behaves like a real provider (SSE framing, usage
accounting, error bodies, slow first tokens, crashes mid-stream) without network access or cost. Replies are
deterministic (the last user message's words, cycled to ``chunks`` words) so tests can assert exact content,
and faults are chosen per request (see :mod:`tenantgate.mock.faults`) so one process serves every scenario.
``/_mock/stats`` exposes what the mock saw, which lets tests prove what the gateway forwarded and when it
gave up on a request.
"""

from __future__ import annotations

import base64
import itertools
import struct
import time
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from tenantgate.mock.common import (
    _OUTCOME,
    FAULTS_KEY,
    OPTIONS_KEY,
    STATS_KEY,
    Json,
    MockError,
    MockOptions,
    MockStats,
    _hang,
    _json,
    _observe,
    _rand,
    _sleep,
    _sse,
    _tracked,
)
from tenantgate.mock.content import (
    _input_tokens,
    _inputs,
    _last_user_words,
    _max_tokens,
    _message_tokens,
    _vector,
    count_param,
    obeyed_length_fields,
)
from tenantgate.mock.control import add_control_routes
from tenantgate.mock.faults import FaultError, Faults, echo_auth_error, parse_faults


async def _admit(request: web.Request) -> tuple[Json, Faults]:
    """Parse the body and fault options, apply an injected status, and check the model."""
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise MockError(400, "We could not parse the JSON body of your request.") from None
    if not isinstance(body, dict):
        raise MockError(400, "The request body must be a JSON object.")
    request.app[STATS_KEY].last_body = body
    options = request.app[OPTIONS_KEY]
    standing = request.app[FAULTS_KEY]
    fault_source = {"mock": {**standing, **(body.get("mock") or {})}} if standing else body
    try:
        faults = parse_faults(
            request.headers, fault_source, ttft=options.ttft, chunk_delay=options.chunk_delay, chunks=options.chunks
        )
    except FaultError as exc:
        raise MockError(400, str(exc), param="mock") from None
    if faults.echo_auth:
        raise echo_auth_error(request.headers, faults.status or 400)
    if faults.status is not None:
        await _sleep(faults.ttft)
        headers = {"retry-after": "1"} if faults.status == 429 else None
        raise MockError(faults.status, f"Injected mock failure ({faults.status}).", headers=headers)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise MockError(400, "You must provide a model parameter.", param="model")
    if model not in options.models:
        message = f"The model `{model}` does not exist or you do not have access to it."
        raise MockError(404, message, code="model_not_found", param="model")
    return body, faults


@dataclass(frozen=True, slots=True)
class _Reply:
    words: list[str]
    finish: str  # "stop", or "length" when the token limit cut the reply short
    prompt_tokens: int

    @classmethod
    def make(cls, source: list[str], prompt_tokens: int, faults: Faults, limit: int | None) -> _Reply:
        source = source or ["mock"]
        count = faults.chunks if limit is None else min(faults.chunks, limit)
        words = [source[i % len(source)] for i in range(count)]
        return cls(words, "length" if count < faults.chunks else "stop", prompt_tokens)

    @property
    def text(self) -> str:
        return " ".join(self.words)

    @property
    def pieces(self) -> list[str]:
        """Stream deltas: each word with a trailing space except the last, so they join to ``text``."""
        last = len(self.words) - 1
        return [w if i == last else w + " " for i, w in enumerate(self.words)]

    def usage(self, sequences: int = 1) -> Json:
        """Like a real server, every generated sequence (``n`` choices, ``best_of`` candidates) is billed."""
        p, c = self.prompt_tokens, len(self.words) * sequences
        return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def _die(request: web.Request, response: web.StreamResponse | None = None) -> web.StreamResponse:
    """Simulate an upstream crash: close the socket with no terminating chunk (buffered bytes still flush)."""
    request[_OUTCOME] = "aborted"
    if request.transport is not None:
        request.transport.close()
    return response if response is not None else web.Response()  # aiohttp's write to it fails silently


async def _plain(request: web.Request, faults: Faults, payload: Json) -> web.StreamResponse:
    if faults.stall:
        await web.StreamResponse(headers={"Content-Type": "application/json"}).prepare(request)
        await _hang()
    await _sleep(faults.ttft)
    if faults.die_after is not None:
        return _die(request)
    return _json(payload, headers={"x-request-id": f"req_{_rand()}"})


async def _stream(
    request: web.Request, faults: Faults, preamble: bytes, deltas: list[bytes], tail: bytes
) -> web.StreamResponse:
    """Send an SSE stream one event at a time; ``ttft`` delays the headers and first event together."""
    await _sleep(faults.ttft)
    headers = {
        "Content-Type": "text/event-stream",
        "Cache-Control": "no-cache",
        "x-request-id": f"req_{_rand()}",
    }
    response = web.StreamResponse(headers=headers)
    try:
        await response.prepare(request)
        await response.write(preamble)
        if faults.stall:
            await _hang()
        if faults.die_after is not None:
            deltas = deltas[: faults.die_after]
        for i, event in enumerate(deltas):
            if i:
                await _sleep(faults.chunk_delay)
            await response.write(event)
            if faults.bad_event and i == 0:
                await response.write(b"data: this is not json\n\n")
            if faults.error_event and i == 0:  # a leaky upstream: its in-band error quotes the credential
                leak = f"overloaded while serving {request.headers.get('authorization', '')}"
                await response.write(_sse({"error": {"message": leak, "type": "server_error", "code": None}}))
        if faults.die_after is not None:
            return _die(request, response)
        await response.write(tail)
        await response.write_eof()
    except ConnectionResetError:
        request[_OUTCOME] = "cancelled"
    return response


async def _classic(
    request: web.Request, body: Json, faults: Faults, reply: _Reply, *, chat: bool
) -> web.StreamResponse:
    """Chat and legacy completions share everything but the object names and where the text goes."""
    model, created = body["model"], int(time.time())
    rid = ("chatcmpl-" if chat else "cmpl-") + _rand()
    kind = "chat.completion" if chat else "text_completion"
    n = count_param(body, "n")
    usage = None if faults.omit_usage else reply.usage(max(n, count_param(body, "best_of")))
    if body.get("stream") is not True:
        choices: list[Json] = []
        for index in range(n):
            if chat:
                choice: Json = {"index": index, "message": {"role": "assistant", "content": reply.text}}
            else:
                choice = {"index": index, "text": reply.text}
            choice.update(logprobs=None, finish_reason=reply.finish)
            choices.append(choice)
        payload: Json = {"id": rid, "object": kind, "created": created, "model": model, "choices": choices}
        if usage is not None:
            payload["usage"] = usage
        return await _plain(request, faults, payload)

    stream_options = body.get("stream_options")
    with_usage = usage is not None and isinstance(stream_options, dict) and stream_options.get("include_usage") is True
    chunk_kind = "chat.completion.chunk" if chat else "text_completion"

    def chunk(piece: str | None, finish: str | None = None, *, first: bool = False) -> bytes:
        out = b""
        for index in range(n):  # one event per choice, as real servers interleave them
            if chat:
                delta: Json = (
                    {"role": "assistant", "content": ""} if first else {} if piece is None else {"content": piece}
                )
                choice: Json = {"index": index, "delta": delta}
            else:
                choice = {"index": index, "text": piece or ""}
            choice.update(logprobs=None, finish_reason=finish)
            obj: Json = {"id": rid, "object": chunk_kind, "created": created, "model": model, "choices": [choice]}
            if with_usage:
                obj["usage"] = None
            out += _sse(obj)
        return out

    tail = chunk(None, reply.finish)
    if with_usage:
        final = {
            "id": rid,
            "object": chunk_kind,
            "created": created,
            "model": model,
            "choices": [],
            "usage": usage,
        }
        tail += _sse(final)
    deltas = [chunk(piece) for piece in reply.pieces]
    return await _stream(request, faults, chunk(None, first=True), deltas, tail + b"data: [DONE]\n\n")


async def _chat(request: web.Request) -> web.StreamResponse:
    body, faults = await _admit(request)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise MockError(400, "'messages' must be a non-empty array.", param="messages")
    limit = _max_tokens(body, *obeyed_length_fields(faults, "max_completion_tokens", "max_tokens"))
    reply = _Reply.make(_last_user_words(messages), _message_tokens(messages), faults, limit)
    return await _classic(request, body, faults, reply, chat=True)


async def _completions(request: web.Request) -> web.StreamResponse:
    """Legacy completions; a list of prompts still yields a single choice (echoing the first prompt)."""
    body, faults = await _admit(request)
    prompts = _inputs(body.get("prompt"), "prompt")
    source = prompts[0].split() if isinstance(prompts[0], str) else []
    reply = _Reply.make(
        source, _input_tokens(prompts), faults, _max_tokens(body, *obeyed_length_fields(faults, "max_tokens"))
    )
    return await _classic(request, body, faults, reply, chat=False)


async def _responses(request: web.Request) -> web.StreamResponse:
    """A minimal Responses API: one output message, the standard event sequence when streaming."""
    body, faults = await _admit(request)
    raw = body.get("input")
    items: Any = [{"role": "user", "content": raw}] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not items:
        raise MockError(400, "'input' must be a string or a non-empty array.", param="input")
    counted = items if not isinstance(body.get("instructions"), str) else [{"content": body["instructions"]}, *items]
    reply = _Reply.make(
        _last_user_words(items),
        _message_tokens(counted),
        faults,
        _max_tokens(body, *obeyed_length_fields(faults, "max_output_tokens")),
    )
    rid, msg_id, created = f"resp_{_rand()}", f"msg_{_rand()}", int(time.time())

    def part(text: str) -> Json:
        return {"type": "output_text", "text": text, "annotations": []}

    def item(done: bool) -> Json:
        content = [part(reply.text)] if done else []
        status = "completed" if done else "in_progress"
        return {"type": "message", "id": msg_id, "status": status, "role": "assistant", "content": content}

    def response(done: bool) -> Json:
        incomplete = done and reply.finish == "length"
        obj: Json = {
            "id": rid,
            "object": "response",
            "created_at": created,
            "status": ("incomplete" if incomplete else "completed") if done else "in_progress",
            "model": body["model"],
            "output": [item(True)] if done else [],
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
        }
        if done and not faults.omit_usage:
            p, c = reply.prompt_tokens, len(reply.words)
            obj["usage"] = {"input_tokens": p, "output_tokens": c, "total_tokens": p + c}
        return obj

    if body.get("stream") is not True:
        return await _plain(request, faults, response(True))
    seq = itertools.count()

    def event(name: str, **fields: Any) -> bytes:
        return _sse({"type": name, "sequence_number": next(seq), **fields}, event=name)

    at = {"item_id": msg_id, "output_index": 0, "content_index": 0}
    preamble = (
        event("response.created", response=response(False))
        + event("response.output_item.added", output_index=0, item=item(False))
        + event("response.content_part.added", **at, part=part(""))
    )
    deltas = [event("response.output_text.delta", **at, delta=piece) for piece in reply.pieces]
    tail = (
        event("response.output_text.done", **at, text=reply.text)
        + event("response.content_part.done", **at, part=part(reply.text))
        + event("response.output_item.done", output_index=0, item=item(True))
        + event("response.completed", response=response(True))
    )
    return await _stream(request, faults, preamble, deltas, tail)


async def _embeddings(request: web.Request) -> web.StreamResponse:
    body, faults = await _admit(request)
    inputs = _inputs(body.get("input"), "input")
    encoding = body.get("encoding_format") or "float"  # the openai SDK asks for base64 unless told otherwise
    if encoding not in ("float", "base64"):
        raise MockError(400, "'encoding_format' must be 'float' or 'base64'.", param="encoding_format")
    dims = body.get("dimensions") or 8
    if isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= 4096:
        raise MockError(400, "'dimensions' must be an integer between 1 and 4096.", param="dimensions")
    data = []
    for index, value in enumerate(inputs):
        vector = _vector(value, dims)
        embedding: Any = vector
        if encoding == "base64":
            embedding = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    payload: Json = {"object": "list", "data": data, "model": body["model"]}
    if not faults.omit_usage:
        tokens = _input_tokens(inputs)
        payload["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
    return await _plain(request, faults, payload)


def build_app(options: MockOptions) -> web.Application:
    """The mock as an aiohttp app; serve it with ``handler_cancellation=True`` (see :func:`start_mock`)."""
    app = web.Application(middlewares=[_observe], client_max_size=64 * 1024 * 1024)
    app[OPTIONS_KEY] = options
    app[STATS_KEY] = MockStats()
    app[FAULTS_KEY] = {}
    add_control_routes(app)
    app.router.add_post("/v1/chat/completions", _tracked(_chat))
    app.router.add_post("/v1/completions", _tracked(_completions))
    app.router.add_post("/v1/responses", _tracked(_responses))
    app.router.add_post("/v1/embeddings", _tracked(_embeddings))
    return app


if __name__ == "__main__":  # ``python -m tenantgate.mock.upstream`` keeps working
    from tenantgate.mock.serve import main

    main()
