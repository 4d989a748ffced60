"""Reading and checking an OpenAI request body: only the fields the gateway acts on are validated.

Unknown fields pass through untouched; the body is re-serialised with the upstream model name and, for
streams, ``stream_options.include_usage`` so the gateway can meter what it relays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.requests import Request
from starlette.types import Receive

from tenantgate.core.errors import InvalidRequest, PayloadTooLarge

STREAMABLE = frozenset({"chat/completions", "completions", "responses"})
USAGE_OPTION = frozenset({"chat/completions", "completions"})  # endpoints that know stream_options
# Every output-length field an OpenAI-compatible server may honour. The reservation takes the largest one
# present, whatever the endpoint: which one a given server reads is its choice, not the client's.
LENGTH_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
# The field each endpoint's cap is forwarded in (chat: the backend's ``output_cap_field``).
_CAP_FIELDS: dict[str, tuple[str, ...]] = {
    "chat/completions": ("max_tokens", "max_completion_tokens"),
    "completions": ("max_tokens",),
    "responses": ("max_output_tokens",),
}
MAX_LENGTH_FIELD = 10_000_000  # tokens per choice; larger is no real model's output and would overflow budgets
MAX_CHOICES = 128  # OpenAI's own bound on ``n``
_NESTING_HINT = 250  # orjson writes at most 254 levels: bodies with this many brackets get a trial encode


@dataclass(slots=True)
class ParsedRequest:
    endpoint: str
    body: dict[str, Any]
    model: str
    stream: bool
    client_wants_usage: bool
    max_output_tokens: int | None  # the largest output-length field sent (per choice), None when none was
    choices: int = 1  # sequences the upstream generates: max(n, best_of)
    raw_size: int = 0  # bytes of the JSON body: the prompt's reservation bound (see metering/bounds.py)
    output_cap: int | None = None  # per choice; set when a limit applies, then forwarded to the upstream
    _payloads: dict[tuple[str, str], bytes] = field(default_factory=dict)

    def upstream_payload(self, upstream_model: str, cap_field: str = "max_tokens") -> bytes:
        """The body for one backend: its model name, usage asked for on streams, and the output cap.

        When a limit applies (``output_cap`` set), the request's length fields are replaced by the one field
        the backend honours (``cap_field`` for chat), so what it generates is bounded by what was reserved.
        """
        cache_key = (upstream_model, cap_field)
        cached = self._payloads.get(cache_key)
        if cached is not None:
            return cached
        body = dict(self.body)
        body["model"] = upstream_model
        if self.stream and self.endpoint in USAGE_OPTION:
            options = dict(body.get("stream_options") or {})
            options["include_usage"] = True
            body["stream_options"] = options
        fields = _CAP_FIELDS.get(self.endpoint)
        if self.output_cap is not None and fields is not None:
            for name in LENGTH_FIELDS:
                body.pop(name, None)
            body[cap_field if cap_field in fields else fields[0]] = self.output_cap
        payload = self._payloads[cache_key] = _dumps(body)
        return payload

    def forget_payloads(self) -> None:
        """Drop the encoded bodies once an attempt succeeded (a long stream should not keep them)."""
        self._payloads.clear()


def _dumps(body: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError:
        raise InvalidRequest("The request body is nested too deeply.", code="invalid_json") from None


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


def _positive_int(body: dict[str, Any], name: str, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
        raise InvalidRequest(f"'{name}' must be an integer between 1 and {high}.", param=name, code="invalid_value")
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
    for name in LENGTH_FIELDS:
        value = _positive_int(body, name, MAX_LENGTH_FIELD)
        if value is not None and (max_output is None or value > max_output):
            max_output = value
    choices = max(_positive_int(body, "n", MAX_CHOICES) or 1, _positive_int(body, "best_of", MAX_CHOICES) or 1)
    _number(body, "temperature", 0, 2)
    _number(body, "top_p", 0, 1)
    _check_endpoint_fields(endpoint, body)
    if raw.count(b"{") + raw.count(b"[") >= _NESTING_HINT:
        _dumps(body)  # refuse what cannot be forwarded now, before anything is reserved
    wants_usage = bool(options and options.get("include_usage") is True)
    return ParsedRequest(endpoint, body, model, stream, wants_usage, max_output, choices, len(raw))
