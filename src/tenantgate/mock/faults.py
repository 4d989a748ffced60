"""Per-request fault options for the mock upstream.

One mock process serves many test scenarios, so every fault is chosen per request rather than at start-up:
``x-mock-*`` headers first (easy to set from any HTTP client), then the ``"mock"`` object of the JSON body,
which wins because a gateway under test forwards the body verbatim but may drop unknown headers. Values left
unset fall back to the process-wide :class:`~tenantgate.mock.upstream.MockOptions` defaults.
"""

from __future__ import annotations

import base64
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from tenantgate.mock.common import MockError

# Body key -> header name. Body keys carry no hyphens so they read naturally in JSON.
_HEADERS: dict[str, str] = {
    "status": "x-mock-status",
    "ttft": "x-mock-ttft",
    "chunk_delay": "x-mock-chunk-delay",
    "chunks": "x-mock-chunks",
    "die_after": "x-mock-die-after",
    "omit_usage": "x-mock-omit-usage",
    "stall": "x-mock-stall",
    "echo_auth": "x-mock-echo-auth",  # an error body that echoes the request's credentials (a leaky upstream)
    # Which output-length field the mock obeys: "max_tokens" (Ollama's dialect), "max_completion_tokens", or
    # "none" (a server that ignores the cap); unset = both, max_completion_tokens first (vLLM, OpenAI).
    "length_field": "x-mock-length-field",
    "bad_event": "x-mock-bad-event",  # a stream event whose data is not JSON, after the first delta
    "error_event": "x-mock-error-event",  # an in-band error event echoing the request's credential, mid-stream
}
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


class FaultError(ValueError):
    """A fault option could not be understood; the mock answers 400 rather than silently ignoring it."""


@dataclass(frozen=True, slots=True)
class Faults:
    """The effective behaviour of one request after merging defaults, headers and body."""

    ttft: float
    chunk_delay: float
    chunks: int
    status: int | None = None
    die_after: int | None = None
    omit_usage: bool = False
    stall: bool = False
    echo_auth: bool = False
    length_field: str | None = None
    bad_event: bool = False
    error_event: bool = False


def parse_faults(
    headers: Mapping[str, str], body: Mapping[str, Any], *, ttft: float, chunk_delay: float, chunks: int
) -> Faults:
    """Merge the defaults with ``x-mock-*`` headers and the body's ``"mock"`` object (body wins).

    Raises :class:`FaultError` on a malformed value so a typo in a test fails loudly instead of passing
    against the default behaviour.
    """
    raw: dict[str, Any] = {}
    for key, header in _HEADERS.items():
        value = headers.get(header)
        if value is not None:
            raw[key] = value
    from_body = body.get("mock")
    if from_body is not None:
        if not isinstance(from_body, dict):
            raise FaultError("'mock' must be an object")
        unknown = sorted(set(from_body) - set(_HEADERS))
        if unknown:
            raise FaultError(f"unknown mock option(s): {', '.join(unknown)}")
        raw.update({k: v for k, v in from_body.items() if v is not None})
    if not raw:  # the hot path for benchmarks: nothing to parse
        return Faults(ttft=ttft, chunk_delay=chunk_delay, chunks=chunks)

    status = _int(raw, "status", minimum=0)
    if status is not None and status != 0 and not 400 <= status <= 599:
        raise FaultError("mock status must be an HTTP error status (400-599)")
    return Faults(
        ttft=_float(raw, "ttft", ttft),
        chunk_delay=_float(raw, "chunk_delay", chunk_delay),
        chunks=_int(raw, "chunks", minimum=0, default=chunks) or 0,
        status=status or None,
        die_after=_int(raw, "die_after", minimum=0),
        omit_usage=_bool(raw, "omit_usage"),
        stall=_bool(raw, "stall"),
        echo_auth=_bool(raw, "echo_auth"),
        length_field=_length_field(raw),
        bad_event=_bool(raw, "bad_event"),
        error_event=_bool(raw, "error_event"),
    )


_LENGTH_FIELDS = frozenset({"max_tokens", "max_completion_tokens", "none"})


def _length_field(raw: Mapping[str, Any]) -> str | None:
    value = raw.get("length_field")
    if value is None:
        return None
    if value not in _LENGTH_FIELDS:
        raise FaultError(f"mock option length_field must be one of {sorted(_LENGTH_FIELDS)}")
    return str(value)


def _float(raw: Mapping[str, Any], key: str, default: float) -> float:
    value = raw.get(key)
    if value is None:
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise FaultError(f"mock option {key} must be a number of seconds") from None
    if isinstance(value, bool) or not 0 <= number < float("inf"):
        raise FaultError(f"mock option {key} must be a non-negative number of seconds")
    return number


def _int(raw: Mapping[str, Any], key: str, *, minimum: int, default: int | None = None) -> int | None:
    value = raw.get(key)
    if value is None:
        return default
    if isinstance(value, (bool, float)):
        raise FaultError(f"mock option {key} must be an integer")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise FaultError(f"mock option {key} must be an integer") from None
    if number < minimum:
        raise FaultError(f"mock option {key} must be >= {minimum}")
    return number


def _bool(raw: Mapping[str, Any], key: str) -> bool:
    value = raw.get(key)
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise FaultError(f"mock option {key} must be a boolean")


def echo_auth_error(headers: Mapping[str, str], status: int) -> MockError:
    """A leaky upstream's error: the request's credential in every field and the usual encodings."""
    auth = headers.get("authorization", "")
    key = auth.removeprefix("Bearer ")
    basic = base64.b64encode(f"gateway:{key}".encode()).decode()
    message = (
        f"Invalid request. Received headers: Authorization: {auth}; api_key={key}; "
        f"as URL: {urllib.parse.quote(auth, safe='')}; as base64: {base64.b64encode(auth.encode()).decode()}; "
        f"as Basic: Basic {basic}; json: {orjson.dumps({'api_key': key}).decode()}"
    )
    return MockError(status, message, code=key, param=auth)
