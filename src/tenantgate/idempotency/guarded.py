"""The boundary between the request path and an idempotency store's backend (Redis or the database).

A store talks to Redis or SQL and can fail in their ways (connection refused, timeouts, a database error).
Those are outages, not bugs in a request, so the client must get the documented fail mode: 503
``idempotency_unavailable`` (:class:`IdempotencyUnavailable`), never a 500 with a driver's traceback. This wrapper
turns every backend error of every store call into that one exception and lets the store's own signals
(:class:`LeaseLost`, :class:`StreamLost`) through unchanged, so callers handle exactly three outcomes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from typing import TypeVar

from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from tenantgate.idempotency.model import (
    Claim,
    IdempotencyError,
    IdempotencyStore,
    IdempotencyUnavailable,
    IdemScope,
    LeaseLost,
    StoredResponse,
    StreamLost,
)

log = logging.getLogger("tenantgate.idempotency")

_T = TypeVar("_T")
BACKEND_ERRORS: tuple[type[Exception], ...] = (RedisError, SQLAlchemyError, OSError, TimeoutError, IdempotencyError)
"""What a store's backend raises when it is down, slow or failing (redis-py, SQLAlchemy, sockets), and a
store's own generic error (the database store's ``begin`` giving up under contention)."""
_LOG_EVERY_S = 5.0


class GuardedIdempotencyStore:
    """An :class:`IdempotencyStore` whose backend failures all surface as :class:`IdempotencyUnavailable`."""

    def __init__(self, inner: IdempotencyStore) -> None:
        self.inner = inner
        self._last_log = -_LOG_EVERY_S
        self._unlogged = 0

    async def _guard(self, what: str, call: Awaitable[_T]) -> _T:
        try:
            return await call
        except (LeaseLost, StreamLost):
            raise
        except BACKEND_ERRORS as exc:
            self._log(what, exc)
            raise IdempotencyUnavailable() from exc

    def _log(self, what: str, exc: BaseException) -> None:
        """One line per few seconds during an outage, not one per request."""
        now = time.monotonic()
        if now - self._last_log < _LOG_EVERY_S:
            self._unlogged += 1
            return
        more = f" (and {self._unlogged} more failures)" if self._unlogged else ""
        log.warning("idempotency store unavailable: %s failed: %r%s", what, exc, more)
        self._last_log, self._unlogged = now, 0

    async def begin(
        self, scope: IdemScope, fingerprint: str, *, stream: bool, lease_seconds: float, owner: str
    ) -> Claim:
        return await self._guard(
            "begin", self.inner.begin(scope, fingerprint, stream=stream, lease_seconds=lease_seconds, owner=owner)
        )

    async def append_event(self, scope: IdemScope, owner: str, event: bytes) -> None:
        await self._guard("append_event", self.inner.append_event(scope, owner, event))

    async def read_events(self, scope: IdemScope, start: int, *, owner: str | None = None) -> tuple[list[bytes], bool]:
        return await self._guard("read_events", self.inner.read_events(scope, start, owner=owner))

    async def wait_events(
        self,
        scope: IdemScope,
        start: int,
        timeout: float,  # noqa: ASYNC109 - a long-poll wait, not a deadline
        *,
        owner: str | None = None,
    ) -> tuple[list[bytes], bool]:
        return await self._guard("wait_events", self.inner.wait_events(scope, start, timeout, owner=owner))

    async def finish(self, scope: IdemScope, owner: str, response: StoredResponse | None, ttl_seconds: float) -> None:
        await self._guard("finish", self.inner.finish(scope, owner, response, ttl_seconds))

    async def abandon(self, scope: IdemScope, owner: str) -> None:
        await self._guard("abandon", self.inner.abandon(scope, owner))

    async def renew(self, scope: IdemScope, owner: str, lease_seconds: float) -> None:
        await self._guard("renew", self.inner.renew(scope, owner, lease_seconds))

    async def purge_expired(self) -> int:
        return await self._guard("purge_expired", self.inner.purge_expired())

    async def close(self) -> None:
        await self.inner.close()
