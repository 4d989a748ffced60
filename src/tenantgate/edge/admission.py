"""Admission: limits and budgets around the upstream call (reserve before, settle after).

A request is counted against every level that has a limit (its key, its user and its tenant). The reservation holds
the worst case, from cheap sound bounds (:mod:`tenantgate.metering.bounds`: the body's size for the prompt, the
largest output field times the choices), and its cost at the model's prices, so concurrent requests can never
overspend; the pipeline forwards the output cap so the upstream cannot generate more than was reserved.
Settling replaces the reservation with the real usage, in full: an upstream that reports more than was
reserved (it ignored the cap) is billed what it reports, the key stays refused until that is paid off, and
the overshoot is counted. A principal without any limit skips the store entirely.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from tenantgate.auth.authenticator import Principal
from tenantgate.config.file import GatewayConfig
from tenantgate.config.settings import Settings
from tenantgate.core.errors import RateLimited, ServiceUnavailable
from tenantgate.edge.alerts import BudgetAlerts
from tenantgate.edge.request import ParsedRequest
from tenantgate.limits import Demand, Limits, LimitStore, Scope, Ticket, build_limit_store, period_bounds
from tenantgate.metering.bounds import prompt_token_bound
from tenantgate.observability import GatewayMetrics
from tenantgate.routing.catalog import Deployment
from tenantgate.storage.rows import LimitFields

log = logging.getLogger("tenantgate.limits")

BudgetScopes = Callable[[], Awaitable[list[tuple[str, LimitFields]]]]
SpentSince = Callable[[str, float], Awaitable[float]]


def to_limits(fields: LimitFields) -> Limits | None:
    """The store's view of a row's limit columns; None when the level has no limit at all."""
    if fields.rpm is None and fields.tpm is None and fields.max_concurrency is None and fields.budget_usd is None:
        return None
    period = fields.budget_period or "monthly"
    return Limits(fields.rpm, fields.tpm, fields.max_concurrency, fields.budget_usd, period)  # type: ignore[arg-type]


def caps_output(scopes: tuple[Scope, ...]) -> bool:
    """Whether tokens or money are limited at some level: then the prompt is bounded and the output capped."""
    return any(s.limits.tpm is not None or s.limits.budget_usd is not None for s in scopes)


def scopes_of(principal: Principal) -> tuple[Scope, ...]:
    scopes = []
    key_limits = to_limits(principal.key_limits)
    if key_limits is not None:
        scopes.append(Scope(f"key:{principal.key_id}", key_limits))
    if principal.user_id is not None:
        user_limits = to_limits(principal.user_limits)
        if user_limits is not None:
            scopes.append(Scope(f"user:{principal.user_id}", user_limits))
    tenant_limits = to_limits(principal.tenant_limits)
    if tenant_limits is not None:
        scopes.append(Scope(f"tenant:{principal.tenant_id}", tenant_limits))
    return tuple(scopes)


class LimitAdmission:
    def __init__(
        self,
        store: LimitStore,
        *,
        media_allowance: int,
        budget_scopes: BudgetScopes,
        spent_since: SpentSince,
        alerts: BudgetAlerts,
        metrics: GatewayMetrics,
    ) -> None:
        self.store = store
        self._media_allowance = media_allowance
        self._budget_scopes = budget_scopes
        self._spent_since = spent_since
        self._alerts = alerts
        self._tasks: set[asyncio.Task[None]] = set()
        self.metrics = metrics

    async def start(self) -> None:
        warm = getattr(self.store, "warm", None)
        if warm is not None:
            await warm()
        await self.seed_budgets()
        await self._alerts.start()

    async def close(self) -> None:
        """Let pending settles finish (bounded), then release the store."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=10)
        for task in list(self._tasks):
            task.cancel()
        await self._alerts.close()
        await self.store.close()

    async def seed_budgets(self) -> None:
        """Rebuild each budget's spend in its current period from the usage ledger (the store keeps a value
        it already has, so this is safe on every start, on every replica and after every admin change)."""
        now = time.time()
        for scope_name, fields in await self._budget_scopes():
            limits = to_limits(fields)
            if limits is None or limits.budget_usd is None:
                continue
            start, _ = period_bounds(limits.budget_period, now)
            spent = await self._spent_since(scope_name, start)
            await self.store.seed_spend(scope_name, start, spent)

    def on_config_change(self) -> None:
        self._spawn(self._reseed())

    async def _reseed(self) -> None:
        try:
            await self.seed_budgets()
        except Exception:
            log.exception("re-seeding budgets after a config change failed")

    async def reserve(
        self, principal: Principal, deployment: Deployment, request: ParsedRequest, output_tokens: int
    ) -> Ticket | None:
        """Reserve the worst case of ``request`` (``output_tokens``: its output bound, all choices)."""
        scopes = scopes_of(principal)
        if not scopes:
            return None
        prompt = 0
        if caps_output(scopes):
            prompt = prompt_token_bound(request.raw_size, request.body, self._media_allowance)
        output = output_tokens if request.endpoint != "embeddings" else 0
        demand = Demand(prompt + output, deployment.cost_usd(prompt, output))
        try:
            return await self.store.reserve(scopes, demand)
        except RateLimited as refused:
            self.metrics.limit_refused(refused.limit_kind or "rpm")  # type: ignore[arg-type]
            raise
        except ServiceUnavailable:
            self.metrics.limit_refused("limiter_unavailable")
            raise

    async def settle(self, ticket: Ticket | None, total_tokens: int, cost_usd: float) -> None:
        """Settle off the response path: the client never waits for the limits store after its answer.

        The store retries while Redis is away; shutdown waits for settles still running (see :meth:`close`).
        """
        if ticket is None:
            return
        self._spawn(self._settle(ticket, total_tokens, cost_usd))

    async def _settle(self, ticket: Ticket, total_tokens: int, cost_usd: float) -> None:
        beyond = await self.store.settle(ticket, total_tokens, cost_usd)
        if beyond:
            # The upstream ignored the forwarded cap (or its tokenizer beat the byte bound): the store billed it
            # in full, so the key stays refused until the excess is paid; counted so an operator can find it.
            self.metrics.reservation_overshot(beyond.tokens, beyond.cost_usd)
            log.warning(
                "usage beyond the reservation billed in full: %d tokens, %.6f USD", beyond.tokens, beyond.cost_usd
            )
        self._alerts.after_settle(ticket.scopes)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def caps_output(self, ticket: Ticket | None) -> bool:
        return ticket is not None and caps_output(ticket.scopes)

    def headers(self, ticket: Ticket | None) -> dict[str, str]:
        return ticket.headers if ticket is not None else {}

    def status(self) -> dict[str, Any]:
        return {"limits": self.store.status()}

    async def check(self) -> dict[str, Any]:
        """Like :meth:`status`, but probes Redis (through its breaker) so an idle gateway notices recovery."""
        return {"limits": await self.store.check()}

    async def usage_view(self, scope_name: str, fields: LimitFields) -> dict[str, Any] | None:
        """Usage of one scope against its limits, for the admin API."""
        limits = to_limits(fields)
        if limits is None:
            return None
        return (await self.store.snapshot(Scope(scope_name, limits))).as_dict()


def build_admission(
    settings: Settings,
    config: GatewayConfig,
    *,
    budget_scopes: BudgetScopes,
    spent_since: SpentSince,
    metrics: GatewayMetrics,
) -> LimitAdmission:
    store = build_limit_store(
        settings.redis_url,
        fail_mode=settings.limits_fail_mode,
        timeout_s=settings.limits_redis_timeout,
        lease_seconds=settings.limits_lease_seconds,
    )
    alerts = BudgetAlerts(store, config.defaults.budget_alert_threshold, config.defaults.budget_alert_webhook)
    return LimitAdmission(
        store,
        media_allowance=config.defaults.media_token_allowance,
        budget_scopes=budget_scopes,
        spent_since=spent_since,
        alerts=alerts,
        metrics=metrics,
    )
