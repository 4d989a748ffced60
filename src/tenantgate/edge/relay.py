"""Relaying an upstream SSE stream to the client, event by event, as it arrives.

The relay forwards complete events only, so it can drop the usage-only chunk the gateway asked for when the
client did not. It remembers the usage the upstream reports, and the raw events in case it reports none (then
the delivered text is counted offline). A stream that ends without its terminator, or breaks, is closed with
an in-band ``data: {"error": …}`` event and no ``[DONE]``: a client must never mistake a cut for an end.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import orjson

from tenantgate.core.errors import UpstreamError, UpstreamTimeout
from tenantgate.metering.usage import Usage, usage_from_object

_DONE = b"data: [DONE]"
_RESPONSES_TERMINAL = (b"response.completed", b"response.failed", b"response.incomplete")


@dataclass(slots=True)
class StreamOutcome:
    usage: Usage | None = None
    completed: bool = False
    error: UpstreamError | None = None
    first_byte_at: float | None = None
    events: list[bytes] = field(default_factory=list)


def error_event(error: UpstreamError) -> bytes:
    return b"data: " + error.body_bytes() + b"\n\n"


class StreamRelay:
    def __init__(
        self, upstream: aiohttp.ClientResponse, *, endpoint: str, client_wants_usage: bool, first_chunk: bytes = b""
    ) -> None:
        self._upstream = upstream
        self._first_chunk = first_chunk
        self._buffer = b""
        self._responses_api = endpoint == "responses"
        self._strip_usage_chunk = not client_wants_usage and not self._responses_api
        self.outcome = StreamOutcome()

    def _feed(self, chunk: bytes) -> bytes:
        """Take bytes from the upstream; return the complete events to pass on (possibly none)."""
        buffer = self._buffer + chunk
        if b"\n\n" not in buffer:
            if b"\r\n\r\n" not in buffer:
                self._buffer = buffer
                return b""
            buffer = buffer.replace(b"\r\n", b"\n")
        *complete, self._buffer = buffer.split(b"\n\n")
        out = [event for event in complete if self._keep(event)]
        if not out:
            return b""
        if self.outcome.first_byte_at is None:
            self.outcome.first_byte_at = time.perf_counter()
        return b"\n\n".join(out) + b"\n\n"

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
        if not outcome.completed:
            outcome.error = outcome.error or UpstreamError(
                "The backend ended the stream before it was complete.", code="upstream_stream_incomplete"
            )
            yield error_event(outcome.error)

    def _keep(self, event: bytes) -> bool:
        """Inspect one event: note usage and the end marker; False drops it from what the client sees."""
        if not event.strip():
            return False
        if event.startswith(_DONE):
            self.outcome.completed = True
            return True
        if self._responses_api and any(marker in event for marker in _RESPONSES_TERMINAL):
            self.outcome.completed = True
        self.outcome.events.append(event)
        if b'"usage"' not in event or b'"usage":null' in event or b'"usage": null' in event:
            return True
        data = _data_of(event)
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            return True
        usage = usage_from_object(parsed)
        if usage is not None:
            self.outcome.usage = usage
            if self._strip_usage_chunk and isinstance(parsed, dict) and not parsed.get("choices"):
                return False
        return True

    def close(self) -> None:
        """Drop the upstream connection now (client gone, or finished): the backend sees the cancellation."""
        if not self.outcome.completed:
            self._upstream.close()
        else:
            self._upstream.release()


def _data_of(event: bytes) -> bytes:
    lines = [line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(lines)
