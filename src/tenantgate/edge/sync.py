"""Keeping this replica's caches in step with the database.

Admin writes bump ``config_version`` in the same transaction. Every replica polls that one row every
``sync_interval`` seconds (a primary-key read) and, when it moved, rebuilds the routing catalog and drops the
auth cache. The replica that made the change reloads at once. This works with SQLite and PostgreSQL alike,
with or without Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncEngine

from tenantgate.config.file import GatewayConfig
from tenantgate.core.secrets import CredentialCipher, Redacted
from tenantgate.edge.context import Gateway
from tenantgate.routing import Catalog, Deployment, ModelPolicy
from tenantgate.storage.repos import BackendRepo, StateRepo
from tenantgate.storage.rows import BackendModel, BackendRow, utcnow

log = logging.getLogger("tenantgate.sync")


def config_backends(config: GatewayConfig) -> list[BackendRow]:
    """Backends declared in the config file, shaped like stored ones (read-only: ``source='config'``)."""
    rows = []
    for entry in config.backends:
        models = tuple(
            BackendModel(m.name, m.upstream_model or m.name, m.input_price_per_mtok, m.output_price_per_mtok)
            for m in entry.model_entries()
        )
        options = {
            "weight": entry.weight,
            "priority": entry.priority,
            "timeouts": entry.timeouts.model_dump(),
            "output_cap_field": entry.output_cap_field,
        }
        rows.append(
            BackendRow(
                f"cfg_{entry.name}",
                entry.name,
                entry.base_url,
                entry.api_key,
                models,
                True,
                utcnow(),
                source="config",
                options=options,
            )
        )
    return rows


def _deployments(row: BackendRow, api_key: Redacted | None) -> list[Deployment]:
    options = row.options
    timeouts = options.get("timeouts") or {}
    return [
        Deployment(
            row.id,
            row.name,
            row.base_url,
            api_key,
            model.name,
            model.upstream_model,
            model.input_price_per_mtok,
            model.output_price_per_mtok,
            weight=int(options.get("weight", 1)),
            priority=int(options.get("priority", 0)),
            connect_timeout=timeouts.get("connect"),
            first_byte_timeout=timeouts.get("first_byte"),
            idle_timeout=timeouts.get("idle"),
            output_cap_field=str(options.get("output_cap_field") or "max_tokens"),
        )
        for model in row.models
    ]


def build_catalog(
    rows: list[BackendRow], decrypt: Callable[[BackendRow], Redacted | None], config: GatewayConfig
) -> Catalog:
    """The routing snapshot: enabled backends' deployments plus each model's policy from the config file.

    A disabled backend is left out, so it gets no new requests while the ones in flight finish (drain).
    """
    deployments = [d for row in rows if row.enabled for d in _deployments(row, decrypt(row))]
    policies = {
        name: ModelPolicy(routing.policy, tuple(routing.fallbacks), routing.max_ejection_share)
        for name, routing in config.models.items()
    }
    return Catalog(deployments, policies)


class ConfigSync:
    def __init__(self, gateway: Gateway, state: StateRepo, backends: BackendRepo, cipher: CredentialCipher) -> None:
        self._gateway = gateway
        self._state = state
        self._backends = backends
        self._cipher = cipher
        self._version = -1
        self._task: asyncio.Task[None] | None = None
        self._static = config_backends(gateway.config)
        self.listeners: list[Callable[[], None]] = []
        self.stored_backends: list[BackendRow] = []

    def _decrypt(self, row: BackendRow) -> Redacted | None:
        if row.source == "config":
            return Redacted(row.api_key_encrypted) if row.api_key_encrypted else None
        return self._cipher.decrypt(row.api_key_encrypted) if row.api_key_encrypted else None

    @property
    def engine(self) -> AsyncEngine:
        return self._backends.engine

    def stored_backends_and_static(self) -> list[BackendRow]:
        """Every backend as of the last reload (no database read)."""
        return [*self._static, *self.stored_backends]

    async def all_backends(self) -> list[BackendRow]:
        return [*self._static, *await self._backends.list()]

    async def reload(self) -> None:
        version = await self._state.config_version()
        self.stored_backends = await self._backends.list()
        rows = [*self._static, *self.stored_backends]
        self._gateway.catalog.current = build_catalog(rows, self._decrypt, self._gateway.config)
        self._gateway.auth.invalidate()
        for listener in self.listeners:
            listener()
        self._version = version

    async def _poll(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                if await self._state.config_version() != self._version:
                    await self.reload()
            except Exception:
                log.exception("config sync failed; keeping the current snapshot")

    def start(self, interval: float) -> None:
        self._task = asyncio.create_task(self._poll(interval), name="config-sync")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
