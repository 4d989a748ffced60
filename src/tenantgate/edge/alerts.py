"""Budget alerts: when a scope's spend crosses the soft threshold (e.g. 80 %), tell the operator once per period.

Checks run off the request path: after a settle, a scope is looked at again at most once a second, in a
background task. The alert goes to the log and, when configured, as a JSON POST to a webhook. "Once per
period" is per process (several replicas may each send one; the payload carries the period so a receiver
can de-duplicate).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

import aiohttp
import orjson

from tenantgate.limits import LimitStore, Scope

log = logging.getLogger("tenantgate.alerts")

_CHECK_EVERY_S = 1.0


class BudgetAlerts:
    def __init__(self, store: LimitStore, threshold: float, webhook: str | None) -> None:
        self._store = store
        self._threshold = threshold
        self._webhook = webhook
        self._last_check: dict[str, float] = {}
        self._sent: set[tuple[str, str]] = set()
        self._pending: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self.sent: list[dict[str, Any]] = []

    async def start(self) -> None:
        if self._webhook:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._session is not None:
            await self._session.close()

    def after_settle(self, scopes: Iterable[Scope]) -> None:
        """Look at each budgeted scope soon: now, or when its once-a-second slot comes (one pending look each)."""
        now = time.monotonic()
        for scope in scopes:
            if scope.limits.budget_usd is None or scope.name in self._pending:
                continue
            delay = max(0.0, self._last_check.get(scope.name, -_CHECK_EVERY_S) + _CHECK_EVERY_S - now)
            self._pending.add(scope.name)
            task = asyncio.get_running_loop().create_task(self._check(scope, delay))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _check(self, scope: Scope, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        self._pending.discard(scope.name)
        self._last_check[scope.name] = time.monotonic()
        try:
            usage = await self._store.snapshot(scope)
            budget = scope.limits.budget_usd
            if budget is None or usage.spent_usd < self._threshold * budget:
                return
            marker = (scope.name, usage.period_start)
            if marker in self._sent:
                return
            self._sent.add(marker)
            event = {
                "event": "budget.threshold_reached",
                "scope": scope.name,
                "budget_usd": budget,
                "spent_usd": round(usage.spent_usd, 9),
                "threshold": self._threshold,
                "period": scope.limits.budget_period,
                "period_start": usage.period_start,
                "period_end": usage.period_end,
            }
            self.sent.append(event)
            log.warning("budget threshold reached", extra={"alert": event})
            if self._session is not None and self._webhook:
                async with self._session.post(
                    self._webhook, data=orjson.dumps(event), headers={"Content-Type": "application/json"}
                ) as response:
                    if response.status >= 300:
                        log.error("budget alert webhook answered %s", response.status)
        except Exception:
            log.exception("budget alert check failed")
