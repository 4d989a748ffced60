"""Per-request metering: time the request, settle the limits reservation, enqueue one usage record, log it.

``finish`` runs exactly once per request that reached the upstream step (success, upstream error, broken
stream or client disconnect), from a ``finally`` in the pipeline, so a reservation is never left behind.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import structlog

from tenantgate.auth.authenticator import Principal
from tenantgate.edge.context import Gateway
from tenantgate.edge.request import ParsedRequest
from tenantgate.metering.bounds import prompt_token_bound
from tenantgate.metering.usage import Usage
from tenantgate.routing.catalog import Deployment
from tenantgate.storage.rows import UsageRecord, utcnow

log = structlog.get_logger("tenantgate.access")


@dataclass(slots=True)
class RequestTrace:
    """What the metrics need about one request, filled in as the pipeline learns it.

    Requests that reach the upstream step are finished by their :class:`RequestMeter` (tokens, cost, TTFT);
    the others (refused, invalid, replayed) by the endpoint itself, with ``metered`` still False.
    """

    route: str
    started: float = field(default_factory=time.perf_counter)
    model: str = ""
    tenant_id: str | None = None
    metered: bool = False


class RequestMeter:
    def __init__(
        self,
        gateway: Gateway,
        principal: Principal,
        parsed: ParsedRequest,
        deployment: Deployment,
        request_id: str,
        ticket: Any,
        trace: RequestTrace,
    ) -> None:
        trace.metered = True
        self.trace = trace
        self.gateway = gateway
        self.principal = principal
        self.parsed = parsed
        self.deployment = deployment
        self.request_id = request_id
        self.ticket = ticket
        self.started = time.perf_counter()
        self.first_byte_at: float | None = None
        self._finished = False
        self._media_allowance = gateway.config.defaults.media_token_allowance

    def first_byte(self, at: float | None = None) -> None:
        if self.first_byte_at is None:
            self.first_byte_at = at if at is not None else time.perf_counter()

    def response_headers(self) -> dict[str, str]:
        return self.gateway.admission.headers(self.ticket)

    async def finish_stream(self, status: int, usage: Usage | None, events: list[bytes] | None, size: int) -> None:
        """Bill a stream: the upstream's usage if it sent one, else what was delivered, counted offline.

        ``events`` is None when the stream outgrew what the relay keeps for counting; then, as when counting
        cannot run, the byte bounds are billed (``size``: bytes delivered).
        """
        if usage is None:
            usage = await self.estimate(events=events, answer_size=size) if events is not None else self.bounds(size)
        await self.finish(status, usage)

    def bounds(self, answer_size: int) -> Usage:
        """Usage at its byte bounds: the prompt's and the answer's sizes (never less than the real count)."""
        parsed = self.parsed
        prompt = prompt_token_bound(parsed.raw_size, parsed.body, self._media_allowance)
        return Usage(prompt, answer_size, estimated=True)

    async def estimate(self, *, answer: Any = None, events: list[bytes] | None = None, answer_size: int) -> Usage:
        """Usage counted off the event loop (see :class:`~tenantgate.metering.estimator.UsageEstimator`)."""
        bound = self.bounds(answer_size)
        return await self.gateway.estimator.estimate(
            self.parsed.endpoint,
            self.parsed.body,
            answer=answer,
            events=events,
            prompt_bound=bound.prompt_tokens,
            completion_bound=bound.completion_tokens,
        )

    async def finish(self, status: int, usage: Usage | None) -> None:
        if self._finished:
            return
        self._finished = True
        now = time.perf_counter()
        usage = usage or Usage(0, 0)
        cost = self.deployment.cost_usd(usage.prompt_tokens, usage.completion_tokens)
        try:
            await self.gateway.admission.settle(self.ticket, usage.total_tokens, cost)
        finally:
            self._record(status, usage, cost, now)

    def _record(self, status: int, usage: Usage, cost: float, now: float) -> None:
        latency_ms = round((now - self.started) * 1000, 3)
        ttft_ms = round((self.first_byte_at - self.started) * 1000, 3) if self.first_byte_at else None
        principal, deployment = self.principal, self.deployment
        record = UsageRecord(
            request_id=self.request_id,
            created_at=utcnow(),
            tenant_id=principal.tenant_id,
            key_id=principal.key_id,
            endpoint=self.parsed.endpoint,
            model=deployment.model,
            backend=deployment.backend_name,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cost_usd=cost,
            status=status,
            latency_ms=latency_ms,
            ttft_ms=ttft_ms,
            estimated=usage.estimated,
            streamed=self.parsed.stream,
        )
        self.gateway.usage.record(record)
        self.gateway.metrics.request_finished(
            self.trace.route,
            self.trace.model,
            status,
            now - self.trace.started,
            (self.first_byte_at - self.started) if self.first_byte_at else None,
            usage.prompt_tokens,
            usage.completion_tokens,
            cost,
            principal.tenant_id,
        )
        extra: dict[str, Any] = {}
        if principal.tenant_id in self.gateway.settings.log_bodies_tenants:  # opted in by the operator
            extra["request_body"] = self.parsed.body
        log.info(
            "request",
            **extra,
            request_id=self.request_id,
            tenant_id=principal.tenant_id,
            key_id=principal.key_id,
            endpoint=self.parsed.endpoint,
            model=deployment.model,
            backend=deployment.backend_name,
            status=status,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            estimated=usage.estimated,
            cost_usd=cost,
            latency_ms=latency_ms,
            ttft_ms=ttft_ms,
            stream=self.parsed.stream,
        )
