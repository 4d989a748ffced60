"""Redis trouble must never hang or crash a request: timeouts, a circuit breaker and a fail mode.

Every call to Redis gets ``timeout_s`` (tens of ms), counted from when it owns one of ``max_in_flight`` slots
(so a burst of requests queueing in this process is not mistaken for a slow Redis; the queue has its own bound).
Consecutive failures open the breaker so further requests do not even try until a cool-down passes; then one
request probes. What a refused or failed call turns into is the fail mode:

- ``closed``: ``ServiceUnavailable`` (503, ``limiter_unavailable``). Limits are never exceeded, availability is.
- ``local``: reserve from an in-process :class:`MemoryLimitStore` (limits per replica, spend seen only here)
  until Redis answers again. Tickets carry their origin in the id prefix so they settle where they were made.

Settles are best-effort during an outage: they are logged and dropped, never raised. The Redis-side lease
then expires after ``lease_seconds`` (freeing the slot and the reserved money); the dropped spend is still in
the usage ledger, which ``seed_spend`` reads at the next start. A reserve that timed out may still have been
applied by Redis; it is likewise released by its lease, so outages can only make limits stricter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, TypeVar

from redis.exceptions import NoScriptError, OutOfMemoryError, ReadOnlyError, RedisError, ResponseError

from tenantgate.core.errors import RateLimited, ServiceUnavailable
from tenantgate.limits import algorithms as alg
from tenantgate.limits.breaker import CircuitBreaker
from tenantgate.limits.memory import MemoryLimitStore
from tenantgate.limits.model import NO_OVERSHOOT, Demand, Overshoot, Scope, ScopeUsage, Ticket
from tenantgate.limits.redis_store import RedisLimitStore

FailMode = Literal["closed", "local"]
LOCAL_ID_PREFIX = "m_"

log = logging.getLogger("tenantgate.limits")
_T = TypeVar("_T")


class _Unavailable(Exception):
    """Redis could not be used for this call (breaker open, timeout, connection error)."""


class _Rejected(_Unavailable):
    """Redis is up but a script refused this call's arguments: a bug or bad data, not an outage. It must not
    open the breaker (one tenant's odd request would otherwise take limits down for everyone) nor be retried."""


def _is_script_error(exc: RedisError) -> bool:
    if not isinstance(exc, ResponseError) or isinstance(exc, NoScriptError | ReadOnlyError | OutOfMemoryError):
        return False
    return "script" in str(exc).lower()


def _unavailable() -> ServiceUnavailable:
    return ServiceUnavailable("rate limiter unavailable", code="limiter_unavailable", headers={"retry-after": "1"})


class ResilientLimitStore:
    """Wraps a :class:`RedisLimitStore` with timeouts, a breaker and the fail mode."""

    def __init__(
        self,
        primary: RedisLimitStore,
        *,
        fail_mode: FailMode = "closed",
        timeout_s: float = 0.25,
        breaker: CircuitBreaker | None = None,
        fallback: MemoryLimitStore | None = None,
        max_in_flight: int = 64,
        queue_timeout_s: float | None = None,
        settle_attempts: int = 5,
        settle_backoff_s: float = 0.1,
    ) -> None:
        if fail_mode not in ("closed", "local"):
            raise ValueError(f"unknown fail_mode: {fail_mode!r}")
        self._primary = primary
        self._fail_mode: FailMode = fail_mode
        self._timeout_s = timeout_s
        self._queue_timeout_s = max(1.0, 20 * timeout_s) if queue_timeout_s is None else queue_timeout_s
        self._slots = asyncio.Semaphore(max_in_flight)
        self._settle_attempts = max(1, settle_attempts)
        self._settle_backoff_s = settle_backoff_s
        self._breaker = breaker or CircuitBreaker()
        if fail_mode == "local" and fallback is None:
            fallback = MemoryLimitStore(id_prefix=LOCAL_ID_PREFIX)
        self._fallback = fallback if fail_mode == "local" else None

    async def _guarded(self, what: str, op: Callable[[], Awaitable[_T]]) -> _T:
        """Run one Redis operation in a slot, under the breaker and the timeout.

        The slot bounds calls in flight (like the connection pool). Waiting for a slot is local load, not a
        Redis failure, so it has its own, longer bound and never trips the breaker; ``timeout_s`` starts only
        once the call owns a slot, so a burst of requests does not read as a slow Redis.
        """
        if self._slots.locked():
            try:
                async with asyncio.timeout(self._queue_timeout_s):
                    await self._slots.acquire()
            except TimeoutError as exc:
                raise _Unavailable(f"{what}: too many limiter calls waiting") from exc
        else:
            await self._slots.acquire()  # free slot: returns without suspending
        try:
            if not self._breaker.allow():
                raise _Unavailable(f"{what}: circuit open")
            return await self._call(what, op)
        finally:
            self._slots.release()

    async def _call(self, what: str, op: Callable[[], Awaitable[_T]]) -> _T:
        try:
            async with asyncio.timeout(self._timeout_s):
                result = await op()
        except RateLimited:
            self._succeeded()
            raise
        except RedisError as exc:
            if not _is_script_error(exc):
                raise self._failed(what, exc) from exc
            self._succeeded()  # Redis answered; only this call's data was refused
            log.error("limits: Redis refused the %s script: %r", what, exc)
            raise _Rejected(what) from exc
        except (OSError, TimeoutError) as exc:
            raise self._failed(what, exc) from exc
        except BaseException:
            self._breaker.abandon()
            raise
        self._succeeded()
        return result

    def _failed(self, what: str, exc: BaseException) -> _Unavailable:
        log.debug("limits: redis %s failed: %r", what, exc)
        if self._breaker.record_failure():
            mode = "to local limits" if self._fallback is not None else "closed (503)"
            log.error("limits: Redis unavailable (%r); failing %s until it answers again", exc, mode)
        return _Unavailable(what)

    async def warm(self, connections: int = 16) -> None:
        """Best effort: a Redis that is down at start-up is handled by the fail mode like any later outage."""
        try:
            async with asyncio.timeout(max(2.0, 20 * self._timeout_s)):
                await self._primary.warm(connections)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("limits: could not warm the Redis pool at start-up: %r", exc)

    def _succeeded(self) -> None:
        if self._breaker.record_success():
            log.warning("limits: Redis answers again; back to shared limits")

    async def reserve(self, scopes: Sequence[Scope], demand: Demand, now: float | None = None) -> Ticket:
        try:
            return await self._guarded("reserve", lambda: self._primary.reserve(scopes, demand, now))
        except _Unavailable as exc:
            if self._fallback is None:
                raise _unavailable() from exc
            return await self._fallback.reserve(scopes, demand, now)

    async def settle(self, ticket: Ticket, tokens: int, cost_usd: float, now: float | None = None) -> Overshoot:
        """Never raises. Retries with back-off while Redis is away (the script is idempotent); a settle that
        still fails only leaves a lease to expire and its spend in the usage ledger (see the module docstring).
        The overshoot is reported whether or not Redis could record it: it happened upstream either way.
        """
        if ticket.settled:
            return NO_OVERSHOOT
        if self._fallback is not None and ticket.id.startswith(LOCAL_ID_PREFIX):
            return await self._fallback.settle(ticket, tokens, cost_usd, now)
        ticket.settled = True
        beyond = alg.overshoot(ticket.demand, alg.clamp_tokens(tokens), alg.cost_to_nano(cost_usd))
        for attempt in range(self._settle_attempts):
            try:
                await self._guarded("settle", lambda: self._primary.settle_once(ticket, tokens, cost_usd, now))
                return beyond
            except _Rejected:
                break  # the same arguments would be refused again
            except _Unavailable:
                await asyncio.sleep(self._settle_backoff_s * 2**attempt)
            except Exception:
                log.exception("limits: settle of ticket %s failed", ticket.id)
                return beyond
        log.warning(
            "limits: settle of ticket %s dropped (tokens=%d cost_usd=%.6f); its lease expires on its own",
            ticket.id,
            tokens,
            cost_usd,
        )
        return beyond

    async def snapshot(self, scope: Scope, now: float | None = None) -> ScopeUsage:
        """Admin reads fail with 503 during an outage: local numbers would look authoritative but are not."""
        try:
            return await self._guarded("snapshot", lambda: self._primary.snapshot(scope, now))
        except _Unavailable as exc:
            raise _unavailable() from exc

    async def seed_spend(self, scope_name: str, period_start: float, spent_usd: float) -> None:
        """Seeds the fallback too, so local mode starts from the ledger's spend; a down Redis is only logged."""
        if self._fallback is not None:
            await self._fallback.seed_spend(scope_name, period_start, spent_usd)
        try:
            await self._guarded("seed", lambda: self._primary.seed_spend(scope_name, period_start, spent_usd))
        except _Unavailable:
            log.warning("limits: could not seed spend of %s while Redis is unavailable", scope_name)

    def status(self) -> dict[str, Any]:
        breaker = self._breaker.state
        state = "ok" if breaker == "closed" else "degraded" if self._fallback is not None else "down"
        return {
            "backend": "redis",
            "state": state,
            "fail_mode": self._fail_mode,
            "breaker": breaker,
            "consecutive_failures": self._breaker.failures,
        }

    async def check(self) -> dict[str, Any]:
        """Ping through the breaker, so /health notices an outage or a recovery even without traffic."""
        with contextlib.suppress(_Unavailable):
            await self._guarded("ping", self._primary.ping)
        return self.status()

    async def close(self) -> None:
        await self._primary.close()
        if self._fallback is not None:
            await self._fallback.close()
