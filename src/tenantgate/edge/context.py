"""The objects one gateway process is made of, built by the app factory and handed to the handlers."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from tenantgate.auth.authenticator import Authenticator, Principal
from tenantgate.backends.upstream import UpstreamClient
from tenantgate.config.file import GatewayConfig
from tenantgate.config.settings import Settings
from tenantgate.edge.forward import Forwarder
from tenantgate.edge.idempotent import Idempotency
from tenantgate.edge.request import ParsedRequest
from tenantgate.edge.responses import StreamRegistry
from tenantgate.metering.estimator import UsageEstimator
from tenantgate.metering.writer import UsageWriter
from tenantgate.observability import GatewayMetrics
from tenantgate.routing.catalog import Catalog, Deployment
from tenantgate.storage.rows import LimitFields


class Admission(Protocol):
    """Limits and budgets: reserve before the upstream call, settle after it (see :mod:`tenantgate.edge.admission`)."""

    async def reserve(
        self, principal: Principal, deployment: Deployment, request: ParsedRequest, output_tokens: int
    ) -> Any: ...

    def caps_output(self, ticket: Any) -> bool: ...

    async def settle(self, ticket: Any, total_tokens: int, cost_usd: float) -> None: ...

    def headers(self, ticket: Any) -> dict[str, str]: ...

    def status(self) -> dict[str, Any]: ...

    async def check(self) -> dict[str, Any]: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def on_config_change(self) -> None: ...

    async def usage_view(self, scope_name: str, fields: LimitFields) -> dict[str, Any] | None: ...


@dataclass(slots=True)
class CatalogHolder:
    """The current routing snapshot; swapped whole when the config version changes."""

    current: Catalog = field(default_factory=lambda: Catalog(()))


@dataclass(slots=True)
class Gateway:
    settings: Settings
    config: GatewayConfig
    auth: Authenticator
    catalog: CatalogHolder
    upstream: UpstreamClient
    usage: UsageWriter
    estimator: UsageEstimator
    admission: Admission
    forwarder: Forwarder
    metrics: GatewayMetrics
    idempotency: Idempotency | None = None
    draining: bool = False
    streams: StreamRegistry = field(default_factory=StreamRegistry)
    background: set[asyncio.Task[None]] = field(default_factory=set)

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run work that must outlive its request (a resumable stream); shutdown waits for it."""
        task = asyncio.get_running_loop().create_task(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
