"""Relaying an upstream SSE stream to the client, event by event, as it arrives.

The relay forwards complete events only, so it can drop the usage-only chunk the gateway asked for when the
client did not, check that each ``data:`` payload is JSON (an upstream that sends anything else ends the
stream with an error rather than passing garbage on as if it were valid), and show the model name the client
asked for. It remembers the usage the upstream reports, and the raw events (up to a bound) in case it reports
none (then the delivered text is counted offline). A stream that ends without its terminator, or breaks, is
closed with an in-band ``data: {"error": …}`` event and no ``[DONE]``: a client must never mistake a cut for an
end.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import orjson

from tenantgate.core.errors import UpstreamError, UpstreamTimeout
from tenantgate.core.secrets import scrub
from tenantgate.metering.usage import Usage, usage_from_object

_DONE = b"data: [DONE]"
_RESPONSES_TERMINAL = (b"response.completed", b"response.failed", b"response.incomplete")
_ERROR_TYPES = frozenset({"error", "response.failed"})
_KEPT_BYTES = 4 * 1024 * 1024  # events kept per stream for counting when the upstream reports no usage
_MODEL_FIELD = re.compile(rb'"model"\s*:\s*"(?:[^"\\]|\\.)*"')


def rename_model(data: bytes, model: str) -> bytes:
    """``data`` (JSON, or SSE events of JSON) with every ``"model": "…"`` member naming ``model`` instead.

    Backends answer with their own name for the model (an alias's target, a fallback, a dated version); the
    client sees the name it asked for. Text inside strings is escaped JSON, so it cannot match.
    """
    return ModelRenamer(model)(data)


class ModelRenamer:
    """:func:`rename_model` for a stream: the regex finds the backend's ``"model"`` member in the first event,
    then each event is a plain ``bytes.replace`` of that exact member (C speed), checked by two counts; an
    event that names the model differently falls back to the regex."""

    __slots__ = ("_member", "_seen")

    def __init__(self, model: str) -> None:
        self._member = b'"model":' + orjson.dumps(model)
        self._seen: bytes | None = None

    def __call__(self, data: bytes) -> bytes:
        seen, member = self._seen, self._member
        if seen is not None:
            data = data.replace(seen, member)
            if data.count(b'"model"') == data.count(member):
                return data
        return _MODEL_FIELD.sub(self._learn, data)

    def _learn(self, match: re.Match[bytes]) -> bytes:
        self._seen = match.group(0)
        return self._member


@dataclass(slots=True)
class StreamOutcome:
    usage: Usage | None = None
    completed: bool = False
    error: UpstreamError | None = None
    first_byte_at: float | None = None
    events: list[bytes] | None = field(default_factory=list)  # None once more than _KEPT_BYTES arrived
    size: int = 0  # bytes of events relayed


def error_event(error: UpstreamError) -> bytes:
    return b"data: " + error.body_bytes() + b"\n\n"


class StreamRelay:
    def __init__(
        self,
        upstream: aiohttp.ClientResponse,
        *,
        endpoint: str,
        client_wants_usage: bool,
        first_chunk: bytes = b"",
        model: str | None = None,
        max_event_bytes: int = 16 * 1024 * 1024,
        secrets: tuple[str | None, ...] = (),
    ) -> None:
        self._upstream = upstream
        self._first_chunk = first_chunk
        self._buffer = b""
        self._responses_api = endpoint == "responses"
        self._strip_usage_chunk = not client_wants_usage and not self._responses_api
        self._rename = ModelRenamer(model) if model is not None else None
        self._max_event_bytes = max_event_bytes
        self._kept = 0
        self._secrets = secrets
        self.outcome = StreamOutcome()

    def _feed(self, chunk: bytes) -> bytes:
        """Take bytes from the upstream; return the complete events to pass on (possibly none)."""
        buffer = self._buffer + chunk
        if b"\n\n" not in buffer:
            if b"\r\n\r\n" not in buffer:
                if len(buffer) > self._max_event_bytes:
                    raise _Malformed("The backend sent a stream event larger than the gateway accepts.")
                self._buffer = buffer
                return b""
            buffer = buffer.replace(b"\r\n", b"\n")
        *complete, self._buffer = buffer.split(b"\n\n")
        out = [passed for event in complete if (passed := self._pass(event)) is not None]
        if not out:
            return b""
        if self.outcome.first_byte_at is None:
            self.outcome.first_byte_at = time.perf_counter()
        data = b"\n\n".join(out) + b"\n\n"
        if self._rename is not None:
            data = self._rename(data)
        self.outcome.size += len(data)
        return data

    async def events(self) -> AsyncIterator[bytes]:
        outcome = self.outcome
        try:
            if self._first_chunk and (out := self._feed(self._first_chunk)):
                yield out
            while not outcome.completed:
                chunk = await self._upstream.content.readany()
                if not chunk:
                    break
                if out := self._feed(chunk):
                    yield out
        except TimeoutError:
            outcome.error = UpstreamTimeout("The backend stopped sending (stream idle timeout).")
        except aiohttp.ClientError:
            outcome.error = UpstreamError(
                "The backend connection broke in the middle of the stream.", code="upstream_stream_broken"
            )
        except _Malformed as malformed:
            outcome.error = UpstreamError(str(malformed), code="upstream_invalid_stream")
        if not outcome.completed:
            outcome.error = outcome.error or UpstreamError(
                "The backend ended the stream before it was complete.", code="upstream_stream_incomplete"
            )
            yield error_event(outcome.error)

    def _pass(self, event: bytes) -> bytes | None:
        """Inspect one event: note usage and the end marker; return what the client sees of it (None drops it).

        Raises :class:`_Malformed` when a ``data:`` payload is not JSON: nothing after it can be trusted. An
        error event is scrubbed of credentials (an upstream may echo the gateway's key in it).
        """
        if not event.strip():
            return None
        if event.startswith(_DONE):
            self.outcome.completed = True
            return event
        data = _data_of(event)
        if not data:
            return event  # a comment or a bare ``event:``/``id:`` line: passed on as is
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise _Malformed("The backend sent a stream event that is not valid JSON.") from None
        if self._responses_api and any(marker in event for marker in _RESPONSES_TERMINAL):
            self.outcome.completed = True
        if b"error" in data and isinstance(parsed, dict) and ("error" in parsed or parsed.get("type") in _ERROR_TYPES):
            event = scrub(event.decode(errors="replace"), self._secrets).encode()
        self._keep_for_counting(event)
        if b'"usage"' not in data or b'"usage":null' in data or b'"usage": null' in data:
            return event  # most chunks: no usage to look at
        usage = usage_from_object(parsed)
        if usage is not None:
            self.outcome.usage = usage
            if self._strip_usage_chunk and isinstance(parsed, dict) and not parsed.get("choices"):
                return None
        return event

    def _keep_for_counting(self, event: bytes) -> None:
        events = self.outcome.events
        if events is None:
            return
        self._kept += len(event)
        if self._kept > _KEPT_BYTES:
            self.outcome.events = None  # counting falls back to the byte bounds
        else:
            events.append(event)

    def close(self) -> None:
        """Drop the upstream connection now (client gone, or finished): the backend sees the cancellation."""
        if not self.outcome.completed:
            self._upstream.close()
        else:
            self._upstream.release()


class _Malformed(Exception):
    """The upstream's stream cannot be relayed as it is (not JSON, or an event too large)."""


def _data_of(event: bytes) -> bytes:
    if event.startswith(b"data: ") and b"\n" not in event:  # the usual one-line event
        return event[6:]
    lines = [line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(lines)
