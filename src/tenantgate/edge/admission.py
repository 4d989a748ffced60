"""Admission: limits and budgets around the upstream call (reserve before, settle after)."""

from __future__ import annotations

from typing import Any

from tenantgate.auth.authenticator import Principal
from tenantgate.config.file import GatewayConfig
from tenantgate.config.settings import Settings
from tenantgate.edge.request import ParsedRequest
from tenantgate.metering.tokens import TokenCounter
from tenantgate.routing.catalog import Deployment
from tenantgate.storage.usage import UsageRepo


class Unlimited:
    """No limits configured anywhere: admission costs nothing."""

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def reserve(
        self, principal: Principal, deployment: Deployment, request: ParsedRequest, max_output_tokens: int
    ) -> Any:
        return None

    async def settle(self, ticket: Any, total_tokens: int, cost_usd: float) -> None:
        return None

    def headers(self, ticket: Any) -> dict[str, str]:
        return {}

    def status(self) -> dict[str, Any]:
        return {}


def build_admission(settings: Settings, config: GatewayConfig, tokens: TokenCounter, usage: UsageRepo) -> Unlimited:
    return Unlimited()
