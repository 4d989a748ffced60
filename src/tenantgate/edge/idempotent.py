"""Idempotent and resumable requests: the ``Idempotency-Key`` header on ``POST /v1/*``.

Scope = (tenant, key, endpoint, idempotency key); the canonical body is its fingerprint. The first request
runs; a retry with the same body replays the stored result without calling the upstream, metering or
charging again; a retry with another body gets 422. A retry while the first still runs gets 409 for a plain
request, and for a stream **attaches** to it: the generation runs in its own task, independent of any client
connection, writing every SSE event (numbered with ``id:``) to the store; every client, the first one
included, follows the store from the start or from ``Last-Event-ID``. So a client whose network drops
reconnects with the same key and receives the rest, while the upstream generates once.

Only successful answers are stored: an error before or from the upstream abandons the record so a retry runs
afresh. A stream that breaks after it started is stored as it happened (its error event included).

The store is wrapped in :class:`GuardedIdempotencyStore`, so Redis or database trouble is always
:class:`IdempotencyUnavailable`: a claim answers 503 ``idempotency_unavailable`` (before any upstream call), a
follower ends its stream with that error in-band, and an answer that could not be recorded is still delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from tenantgate.auth.authenticator import Principal
from tenantgate.core.errors import Conflict, GatewayError, InvalidRequest, UpstreamError
from tenantgate.edge.relay import error_event
from tenantgate.edge.request import ParsedRequest
from tenantgate.edge.responses import RelayResponse, json_response
from tenantgate.idempotency import (
    GuardedIdempotencyStore,
    IdempotencyError,
    IdempotencyStore,
    IdempotencyUnavailable,
    IdemScope,
    LeaseLost,
    StoredResponse,
    StreamLost,
    fingerprint,
    new_owner,
)

log = logging.getLogger("tenantgate.idempotency")

_MAX_KEY_LENGTH = 255
_WAIT_S = 10.0  # a follower's long-poll; a comment line keeps the connection alive in between
_STORED_HEADERS = ("content-type",)


class IdempotencyMismatch(GatewayError):
    status = 422
    type = "invalid_request_error"
    code = "idempotency_key_reused"


def _start_index(request: Request) -> int:
    last = request.headers.get("last-event-id")
    return int(last) + 1 if last is not None and last.isdigit() else 0


def number_events(chunk: bytes, first_id: int) -> list[bytes]:
    """Split a relayed chunk into its SSE events, each given an ``id:`` line (for ``Last-Event-ID``)."""
    events = [event for event in chunk.split(b"\n\n") if event.strip()]
    return [b"id: %d\n%s\n\n" % (first_id + offset, event) for offset, event in enumerate(events)]


@dataclass(slots=True)
class Claimed:
    """This request owns the idempotency record: run it, then store or abandon the result."""

    store: IdempotencyStore
    scope: IdemScope
    owner: str
    ttl_s: float
    lease_s: float

    async def abandon(self) -> None:
        """Best effort, on error paths: never replaces the error being handled."""
        with contextlib.suppress(IdempotencyError, IdempotencyUnavailable):
            await self.store.abandon(self.scope, self.owner)

    async def store_response(self, status: int, headers: dict[str, str], body: bytes) -> None:
        """The client gets its answer even if it cannot be recorded (the upstream already ran and was billed)."""
        kept = {name: value for name, value in headers.items() if name in _STORED_HEADERS}
        try:
            await self.store.finish(self.scope, self.owner, StoredResponse(status, kept, body), self.ttl_s)
        except IdempotencyError:
            log.warning("idempotency record was taken over before the result could be stored")
        except IdempotencyUnavailable:
            log.warning("idempotency store unavailable: a result was delivered but not recorded for replay")

    async def generate(self, events: AsyncIterator[bytes], on_done: Callable[[], Awaitable[None]]) -> None:
        """Pump a stream into the store, whoever is listening (the background task of a resumable stream)."""
        count = 0
        renewed = time.monotonic()
        try:
            async for chunk in events:
                for event in number_events(chunk, count):
                    await self.store.append_event(self.scope, self.owner, event)
                    count += 1
                if time.monotonic() - renewed > self.lease_s / 3:
                    await self.store.renew(self.scope, self.owner, self.lease_s)
                    renewed = time.monotonic()
            await self.store.finish(
                self.scope, self.owner, StoredResponse(200, {"content-type": "text/event-stream"}, b""), self.ttl_s
            )
        except LeaseLost:
            log.warning("idempotent stream lost its lease; recording stopped")
        except IdempotencyUnavailable:
            log.warning("idempotency store unavailable; recording of a resumable stream stopped")
            await self.abandon()
        except Exception:
            log.exception("idempotent stream recording failed")
            await self.abandon()
        finally:
            with contextlib.suppress(Exception):
                await events.aclose()  # type: ignore[attr-defined]
            await on_done()


class Idempotency:
    def __init__(self, store: IdempotencyStore, *, ttl_s: float, lease_s: float, purge_every_s: float = 600) -> None:
        self.store: IdempotencyStore = (
            store if isinstance(store, GuardedIdempotencyStore) else GuardedIdempotencyStore(store)
        )
        self._ttl_s = ttl_s
        self._lease_s = lease_s
        self._purge_every_s = purge_every_s
        self._purger: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._purger = asyncio.create_task(self._purge_loop(), name="idempotency-purge")

    async def close(self) -> None:
        if self._purger is not None:
            self._purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purger
        await self.store.close()

    async def _purge_loop(self) -> None:
        while True:
            await asyncio.sleep(self._purge_every_s)
            try:
                await self.store.purge_expired()
            except Exception:
                log.exception("purging expired idempotency records failed")

    async def claim(
        self, request: Request, key: str, principal: Principal, parsed: ParsedRequest, request_id: str
    ) -> Claimed | Response | RelayResponse:
        """Own the record (→ :class:`Claimed`) or answer now: replay, attach, 409 or 422."""
        if not key or len(key) > _MAX_KEY_LENGTH:
            raise InvalidRequest(
                f"Idempotency-Key must be 1 to {_MAX_KEY_LENGTH} characters.",
                param="Idempotency-Key",
                code="invalid_idempotency_key",
            )
        scope = IdemScope(principal.tenant_id, principal.key_id, parsed.endpoint, key)
        owner = new_owner()
        claim = await self.store.begin(
            scope, fingerprint(parsed.body), stream=parsed.stream, lease_seconds=self._lease_s, owner=owner
        )
        headers = {"x-request-id": request_id, "idempotent-replayed": "true"}
        if claim.kind == "new":
            return Claimed(self.store, scope, owner, self._ttl_s, self._lease_s)
        if claim.kind == "mismatch":
            raise IdempotencyMismatch(
                "This Idempotency-Key was already used with a different request body.", param="Idempotency-Key"
            )
        if claim.kind == "replay" and not claim.is_stream and claim.response is not None:
            stored = claim.response
            return json_response(stored.body, request_id, status=stored.status, extra={**stored.headers, **headers})
        start = _start_index(request)
        if claim.kind == "replay" and claim.events is not None:
            return RelayResponse(_replay(claim.events[start:]), _nothing, headers)
        if claim.is_stream:  # in progress: attach to the running generation
            return RelayResponse(
                self.follow(scope, start, claim.owner),
                _nothing,
                {"x-request-id": request_id, "idempotent-attached": "true"},
            )
        raise Conflict(
            "A request with this Idempotency-Key is still in progress; retry shortly.",
            param="Idempotency-Key",
            code="idempotency_key_in_progress",
            headers={"retry-after": "1"},
        )

    async def follow(self, scope: IdemScope, start: int, owner: str | None) -> AsyncIterator[bytes]:
        """Events of a stream from ``start``, live, until it finishes (also the first client's own view)."""
        index = start
        try:
            while True:
                events, finished = await self.store.wait_events(scope, index, _WAIT_S, owner=owner)
                for event in events:
                    yield event
                index += len(events)
                if finished:
                    return
                if not events:
                    yield b": keep-alive\n\n"
        except StreamLost:
            yield error_event(
                UpstreamError(
                    "The stream this request attached to was lost; retry with a new key.", code="idempotent_stream_lost"
                )
            )
        except IdempotencyUnavailable as unavailable:  # headers are sent: end the stream with the error in-band
            yield b"data: " + unavailable.body_bytes() + b"\n\n"


async def _replay(events: list[bytes]) -> AsyncIterator[bytes]:
    for event in events:
        yield event


async def _nothing(_disconnected: bool) -> None:
    return None
