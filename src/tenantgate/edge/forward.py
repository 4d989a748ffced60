"""Forwarding with failover: try the route's candidates in order until one answers.

Before the first byte has gone to the client, a connect error, timeout, 5xx, 429 or refused credential moves
the request to the next candidate (another backend, then fallback models), after a jittered back-off and only
while the retry budget allows. Every attempt feeds the health registry (passive outlier detection). For a
stream, the first chunk is read here, inside the attempt, so a backend that accepts the request but never
starts answering can still be replaced. Once bytes flow to the client, nothing is retried.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

import aiohttp

from tenantgate.auth.authenticator import Principal
from tenantgate.backends.upstream import UpstreamClient, UpstreamFailure
from tenantgate.config.file import RoutingDefaults
from tenantgate.core.errors import GatewayError, RateLimited, ServiceUnavailable, UpstreamError, UpstreamTimeout
from tenantgate.edge.request import ParsedRequest
from tenantgate.observability import GatewayMetrics, UpstreamOutcome
from tenantgate.routing import Catalog, Deployment, HealthRegistry
from tenantgate.routing.retry_budget import RetryBudget
from tenantgate.routing.snapshot import FailureKind as HealthFailure


@dataclass(slots=True)
class Attempt:
    """The attempt that succeeded: its deployment, the open response, and what was read of it."""

    deployment: Deployment
    response: aiohttp.ClientResponse
    first_chunk: bytes = b""
    body: bytes | None = None
    failures: list[str] = field(default_factory=list)
    released: bool = False

    def done(self, health: HealthRegistry) -> None:
        """Give back the backend's in-flight slot, once, however many paths end the request."""
        if not self.released:
            self.released = True
            health.release(self.deployment.backend_id)


class Forwarder:
    def __init__(
        self,
        upstream: UpstreamClient,
        health: HealthRegistry,
        routing: RoutingDefaults,
        first_byte_timeout: float,
        request_timeout: float,
        metrics: GatewayMetrics,
        max_body_bytes: int,
    ) -> None:
        self.metrics = metrics
        self._max_body_bytes = max_body_bytes
        self.upstream = upstream
        self.health = health
        self._routing = routing
        self._first_byte_timeout = first_byte_timeout
        self._request_timeout = request_timeout
        self.budget = RetryBudget(routing.retry_budget_ratio, routing.retry_budget_min_per_second)

    def plan(self, catalog: Catalog, model: str, principal: Principal) -> list[Deployment]:
        """Candidates in failover order, limited to models this key may use and to ``max_attempts``."""
        candidates = catalog.candidates(model, self.health.view(), self.health.now())
        allowed = [d for d in candidates if principal.may_use(d.model)]
        if not allowed:
            raise ServiceUnavailable(f"No backend is available for the model '{model}'.", code="no_backend")
        return allowed[: self._routing.max_attempts]

    def deadline(self, catalog_timeout: float | None) -> float:
        return time.monotonic() + (catalog_timeout or self._request_timeout)

    async def open(
        self, candidates: list[Deployment], request: ParsedRequest, deadline: float, tenant_id: str | None = None
    ) -> Attempt:
        self.budget.record_request()
        failures: list[UpstreamFailure] = []
        names: list[str] = []
        for index, deployment in enumerate(candidates):
            if index:
                if not self.budget.try_spend():
                    self.metrics.retry_budget_exhausted()
                    names.append("(retry budget exhausted)")
                    break
                self.metrics.retry(request.model)
                await asyncio.sleep(self._backoff(index))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                attempt = await self._attempt(deployment, request, remaining, tenant_id)
            except UpstreamFailure as failure:
                failures.append(failure)
                names.append(failure.message)
                continue
            attempt.failures = names
            if index:
                self.metrics.failover(request.model)
            return attempt
        raise _combined(request.model, failures, names)

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self._routing.backoff_max_seconds, self._routing.backoff_base_seconds * 2 ** (attempt - 1))
        return random.uniform(0, ceiling)

    async def _attempt(
        self, deployment: Deployment, request: ParsedRequest, remaining: float, tenant_id: str | None
    ) -> Attempt:
        backend_id = deployment.backend_id
        limit = min(remaining, deployment.first_byte_timeout or self._first_byte_timeout)
        started = time.perf_counter()
        self.health.acquire(backend_id)
        response: aiohttp.ClientResponse | None = None
        try:
            async with asyncio.timeout(limit):
                payload = request.upstream_payload(deployment.upstream_model, deployment.output_cap_field)
                response = await self.upstream.post(deployment, request.endpoint, payload)
                attempt = Attempt(deployment, response)
                if request.stream:
                    attempt.first_chunk = await response.content.readany()
                    if not attempt.first_chunk:
                        raise UpstreamFailure(
                            f"{deployment.backend_name}: closed the stream before any data", kind="stream_broken"
                        )
                else:
                    attempt.body = await _read_capped(response, self._max_body_bytes)
        except (UpstreamFailure, TimeoutError, aiohttp.ClientError) as exc:
            failure = exc if isinstance(exc, UpstreamFailure) else _as_failure(deployment, exc)
            self.metrics.upstream_attempt(deployment.backend_name, _OUTCOMES[failure.kind])
            self.health.release(backend_id)
            if response is not None:
                response.close()
            self._record(deployment, failure, tenant_id)
            raise failure from None
        except BaseException as exc:
            if isinstance(exc, GatewayError):  # a 4xx about the request itself: the backend is fine
                self.metrics.upstream_attempt(deployment.backend_name, "http_4xx")
            self.health.release(backend_id)
            if response is not None:
                response.close()
            raise
        self.metrics.upstream_attempt(deployment.backend_name, "success")
        self.health.record_success(backend_id, time.perf_counter() - started)
        return attempt

    def _record(self, deployment: Deployment, failure: UpstreamFailure, tenant_id: str | None) -> None:
        """Feed the health registry. A failure is charged to the tenant whose payload may have caused it (a
        crafted request can make a backend answer 500, drop the connection or stall), so one tenant alone
        cannot eject a shared backend; only a refused connection (nothing was sent yet) is no one's doing."""
        backend_id = deployment.backend_id
        if failure.kind == "429":
            self.health.record_rate_limited(backend_id, failure.retry_after)
            return
        blamed = None if isinstance(failure.__cause__, aiohttp.ClientConnectorError) else tenant_id
        kind: HealthFailure = (
            "timeout" if failure.kind == "timeout" else "connect" if failure.kind == "connect" else "5xx"
        )
        self.health.record_failure(backend_id, kind, failure.message, tenant_id=blamed)


async def _read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body of a non-streamed answer, refused (502) past ``limit`` bytes instead of buffered."""
    declared = response.content_length
    if declared is not None and declared > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(limit: int) -> UpstreamError:
    """Not a backend failure (no failover, no ejection): the answer this request asked for is too big."""
    return UpstreamError(
        f"The backend's answer is larger than the gateway's {limit} byte limit.", code="upstream_response_too_large"
    )


_OUTCOMES: dict[str, UpstreamOutcome] = {
    "connect": "connect_error",
    "timeout": "timeout",
    "5xx": "http_5xx",
    "auth": "http_5xx",
    "429": "http_429",
    "stream_broken": "stream_broken",
}


def _as_failure(deployment: Deployment, exc: BaseException) -> UpstreamFailure:
    name = deployment.backend_name
    if isinstance(exc, TimeoutError):
        return UpstreamFailure(f"{name}: no answer in time", kind="timeout", status=504, code="upstream_timeout")
    return UpstreamFailure(f"{name}: connection broke before the answer", kind="stream_broken")


def _combined(model: str, failures: list[UpstreamFailure], names: list[str]) -> GatewayError:
    """One client-facing error for a request every candidate failed, naming what was tried (no bodies)."""
    tried = "; ".join(names) if names else "no attempt fitted in the request deadline"
    message = f"All backends for the model '{model}' failed: {tried}."
    if failures and all(f.kind == "429" for f in failures):
        waits = [f.retry_after for f in failures if f.retry_after is not None]
        retry_after = max(1, int(min(waits))) if waits else 1
        return RateLimited(
            message,
            code="upstream_rate_limited",
            headers={"retry-after": str(retry_after), "retry-after-ms": str(retry_after * 1000)},
        )
    if failures and all(f.kind == "timeout" for f in failures):
        return UpstreamTimeout(message)
    if not failures:
        return UpstreamTimeout(message)
    return UpstreamError(message)
