"""Reading and checking an OpenAI request body: only the fields the gateway acts on are validated.

Unknown fields pass through untouched; the body is re-serialised with the upstream model name and, for
streams, ``stream_options.include_usage`` so the gateway can meter what it relays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.types import Receive

from tenantgate.core.errors import InvalidRequest, PayloadTooLarge

STREAMABLE = frozenset({"chat/completions", "completions", "responses"})
USAGE_OPTION = frozenset({"chat/completions", "completions"})  # endpoints that know stream_options


@dataclass(slots=True)
class ParsedRequest:
    endpoint: str
    body: dict[str, Any]
    model: str
    stream: bool
    client_wants_usage: bool
    max_output_tokens: int | None

    def upstream_payload(self, upstream_model: str) -> bytes:
        body = self.body
        body["model"] = upstream_model
        if self.stream and self.endpoint in USAGE_OPTION:
            options = dict(body.get("stream_options") or {})
            options["include_usage"] = True
            body["stream_options"] = options
        return orjson.dumps(body)


def receive_of(request: Request) -> Receive:
    return request.receive


async def read_body(request: Request, receive: Receive, limit: int) -> bytes:
    """Read the body straight from ASGI ``receive``, refusing it before buffering when Content-Length (or the
    bytes so far) exceed ``limit``. (Starlette's ``Request.stream`` does the same with more machinery.)"""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"Request body is larger than the {limit} byte limit.")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise InvalidRequest("The client went away before sending the whole body.", code="client_disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Request body is larger than the {limit} byte limit.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _positive_int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequest(f"'{name}' must be a positive integer.", param=name, code="invalid_value")
    return value


def _number(body: dict[str, Any], name: str, low: float, high: float) -> None:
    value = body.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise InvalidRequest(
            f"'{name}' must be a number between {low:g} and {high:g}.", param=name, code="invalid_value"
        )


def _require(body: dict[str, Any], name: str) -> Any:
    if body.get(name) is None:
        raise InvalidRequest(f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter")
    return body[name]


def _check_endpoint_fields(endpoint: str, body: dict[str, Any]) -> None:
    if endpoint == "chat/completions":
        messages = _require(body, "messages")
        if not isinstance(messages, list) or not messages:
            raise InvalidRequest("'messages' must be a non-empty array.", param="messages", code="invalid_type")
        for index, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise InvalidRequest(
                    f"'messages[{index}]' must be an object with a 'role'.",
                    param=f"messages[{index}]",
                    code="invalid_type",
                )
    elif endpoint == "completions":
        prompt = _require(body, "prompt")
        if not isinstance(prompt, str | list):
            raise InvalidRequest("'prompt' must be a string or an array.", param="prompt", code="invalid_type")
    elif endpoint == "embeddings":
        value = _require(body, "input")
        if not isinstance(value, str | list) or value in ("", []):
            raise InvalidRequest("'input' must be a non-empty string or array.", param="input", code="invalid_type")
    elif endpoint == "responses":
        _require(body, "input")


def parse_request(endpoint: str, raw: bytes) -> ParsedRequest:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("The request body is not valid JSON.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    model = _require(body, "model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' must be a non-empty string.", param="model", code="invalid_type")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean.", param="stream", code="invalid_type")
    if stream and endpoint not in STREAMABLE:
        raise InvalidRequest(f"'/v1/{endpoint}' does not support streaming.", param="stream", code="invalid_value")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise InvalidRequest("'stream_options' must be an object.", param="stream_options", code="invalid_type")
    max_output = None
    for name in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        value = _positive_int(body, name)
        max_output = value if value is not None else max_output
    _positive_int(body, "n")
    _number(body, "temperature", 0, 2)
    _number(body, "top_p", 0, 1)
    _check_endpoint_fields(endpoint, body)
    wants_usage = bool(options and options.get("include_usage") is True)
    return ParsedRequest(endpoint, body, model, stream, wants_usage, max_output)
