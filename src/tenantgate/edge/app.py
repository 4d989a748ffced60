"""The app factory: builds every part of one gateway process from its settings and wires them together.

Nothing here is global: tests build as many apps as they like, each with its own settings. Start-up and
shutdown run in a fixed order (the lifespan below); shutdown drains before it closes anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.routing import Route

from tenantgate import __version__
from tenantgate.admin.api import AdminServices
from tenantgate.admin.api import router as admin_router
from tenantgate.admin.audit import router as audit_router
from tenantgate.admin.usage import router as usage_router
from tenantgate.admin.usage import tenant_router
from tenantgate.auth.authenticator import Authenticator
from tenantgate.backends.netpolicy import NetworkPolicy, PolicyResolver, host_key
from tenantgate.backends.upstream import UpstreamClient
from tenantgate.config.file import GatewayConfig, load_config, with_env_defaults
from tenantgate.config.settings import Settings
from tenantgate.console.router import console_routes
from tenantgate.core.secrets import CredentialCipher
from tenantgate.edge.admission import build_admission
from tenantgate.edge.bootstrap import bootstrap_keys
from tenantgate.edge.context import CatalogHolder, Gateway
from tenantgate.edge.fastpath import FastPath
from tenantgate.edge.forward import Forwarder
from tenantgate.edge.health import health_routes, metrics_endpoint
from tenantgate.edge.http_errors import RequestIdMiddleware, install_error_handlers
from tenantgate.edge.idempotent import Idempotency
from tenantgate.edge.pipeline import ProxyEndpoint, get_model, list_models
from tenantgate.edge.sync import ConfigSync
from tenantgate.idempotency import DatabaseIdempotencyStore, IdempotencyStore, RedisIdempotencyStore
from tenantgate.metering.estimator import UsageEstimator
from tenantgate.metering.writer import UsageRetention, UsageWriter
from tenantgate.observability import GatewayMetrics
from tenantgate.people.admin_api import router as people_admin_router
from tenantgate.people.auth_api import router as auth_router
from tenantgate.people.factory import build_people
from tenantgate.people.me_api import router as me_router
from tenantgate.routing import HealthChecker, HealthConfig, HealthRegistry, Target
from tenantgate.storage.audit import AuditRepo
from tenantgate.storage.database import create_engine, migrate
from tenantgate.storage.keycheck import check_secret_key
from tenantgate.storage.repos import BackendRepo, KeyRepo, StateRepo, TenantRepo, budget_scopes
from tenantgate.storage.usage import UsageRepo

PROXY_ENDPOINTS = ("chat/completions", "completions", "embeddings", "responses")


@dataclass(slots=True)
class Repos:
    tenants: TenantRepo
    keys: KeyRepo
    backends: BackendRepo
    usage: UsageRepo
    state: StateRepo

    @classmethod
    def on(cls, engine: AsyncEngine) -> Repos:
        return cls(TenantRepo(engine), KeyRepo(engine), BackendRepo(engine), UsageRepo(engine), StateRepo(engine))


def _health_registry(config: GatewayConfig) -> HealthRegistry:
    routing = config.routing
    return HealthRegistry(
        HealthConfig(
            consecutive_failures_to_eject=routing.consecutive_failures_to_eject,
            base_ejection_s=routing.base_ejection_seconds,
            max_ejection_s=max(routing.max_ejection_seconds, routing.base_ejection_seconds),
            unhealthy_threshold=routing.unhealthy_threshold,
            healthy_threshold=routing.healthy_threshold,
        )
    )


def network_policy(settings: Settings) -> NetworkPolicy:
    return NetworkPolicy(
        allow_loopback=settings.backend_allow_loopback,
        allow_private=settings.backend_allow_private,
        allowed_networks=tuple(settings.backend_allowed_networks),
        denied_networks=tuple(settings.backend_denied_networks),
    )


def build_gateway(
    settings: Settings, config: GatewayConfig, engine: AsyncEngine, repos: Repos, restricted_hosts: set[str]
) -> Gateway:
    """Every hot-path object, built once per process."""
    metrics = GatewayMetrics(
        tenant_labels=settings.metrics_tenant_labels, max_tenant_label_values=settings.metrics_max_tenants
    )
    policy = network_policy(settings)
    upstream = UpstreamClient(
        connect_timeout=settings.upstream_connect_timeout,
        read_timeout=settings.upstream_read_timeout,
        max_connections=settings.upstream_max_connections,
        resolver_factory=lambda: PolicyResolver(policy, restricted_hosts),
        network_policy=policy,  # also checked at every connect: IP literals and cached DNS answers never
        restricted_hosts=restricted_hosts,  # reach the resolver
    )
    forwarder = Forwarder(
        upstream,
        _health_registry(config),
        config.routing,
        first_byte_timeout=settings.upstream_first_byte_timeout,
        request_timeout=settings.request_timeout,
        metrics=metrics,
        max_body_bytes=settings.max_upstream_body_bytes,
    )
    store: IdempotencyStore = (
        RedisIdempotencyStore(settings.redis_url) if settings.redis_url else DatabaseIdempotencyStore(engine)
    )
    idempotency = Idempotency(store, ttl_s=settings.idempotency_ttl_seconds, lease_s=settings.idempotency_lease_seconds)
    return Gateway(
        idempotency=idempotency,
        settings=settings,
        config=config,
        auth=Authenticator(
            repos.keys,
            ttl=settings.auth_cache_ttl,
            negative_ttl=settings.auth_negative_ttl,
            max_entries=settings.auth_cache_max_entries,
            max_negative_entries=settings.auth_negative_cache_max_entries,
            max_lookups=settings.auth_max_concurrent_lookups,
        ),
        catalog=CatalogHolder(),
        upstream=upstream,
        usage=UsageWriter(
            repos.usage.insert_many,
            max_queue=settings.usage_queue_size,
            flush_interval=settings.usage_flush_interval,
            batch_size=settings.usage_batch_size,
        ),
        estimator=UsageEstimator(timeout_s=settings.token_count_timeout),
        admission=build_admission(
            settings,
            config,
            budget_scopes=lambda: budget_scopes(engine),
            spent_since=repos.usage.scope_spent_since,
            metrics=metrics,
        ),
        forwarder=forwarder,
        metrics=metrics,
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    config = with_env_defaults(load_config(settings.config_file), settings.rate_limit_rpm)
    engine = create_engine(settings.database_url)
    repos = Repos.on(engine)
    cipher = CredentialCipher.from_settings(
        settings.secret_key.get_secret_value() if settings.secret_key else None, settings.secret_key_file
    )
    restricted_hosts: set[str] = set()  # hosts of API-registered backends: checked again at every connect
    gateway = build_gateway(settings, config, engine, repos, restricted_hosts)
    health = gateway.forwarder.health

    async def probe(target: Target) -> float:
        return await gateway.upstream.probe(target.base_url, target.api_key, config.routing.health_check_timeout)

    checker = HealthChecker(
        health, probe, interval_s=config.routing.health_check_interval, timeout_s=config.routing.health_check_timeout
    )
    sync = ConfigSync(gateway, repos.state, repos.backends, cipher)
    retention = UsageRetention(repos.usage.purge_raw_before, settings.usage_retention_days)

    def follow_catalog() -> None:
        restricted_hosts.clear()
        restricted_hosts.update(host_key(row.base_url) for row in sync.stored_backends)
        targets = gateway.catalog.current.targets()
        checker.set_targets(targets)
        health.retain(target.backend_id for target in targets)

    sync.listeners += [gateway.admission.on_config_change, follow_catalog]

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if settings.migrate_on_start:
            await migrate(engine)
        await check_secret_key(engine, cipher)
        if settings.bootstrap_keys is not None:
            await bootstrap_keys(settings.bootstrap_keys.get_secret_value(), repos.tenants, repos.keys, config.defaults)
        await gateway.upstream.start()
        await sync.reload()
        await gateway.admission.start()
        gateway.usage.start()
        retention.start()
        sync.start(settings.sync_interval)
        checker.start()
        if gateway.idempotency is not None:
            gateway.idempotency.start()
        try:
            yield
        finally:
            gateway.draining = True
            if gateway.background:  # resumable streams still generating
                await asyncio.wait(list(gateway.background), timeout=settings.drain_grace_seconds)
            if gateway.idempotency is not None:
                await gateway.idempotency.close()
            await checker.stop()
            await sync.stop()
            await retention.close()
            await gateway.usage.close()
            await gateway.admission.close()
            await gateway.estimator.close()
            await gateway.upstream.close()
            await engine.dispose()

    app = FastAPI(
        title="tenantgate",
        version=__version__,
        lifespan=lifespan,
        description="Multi-tenant OpenAI-compatible LLM gateway: admin API.",
    )
    app.state.gateway = gateway
    app.state.admin = AdminServices(
        admin_key=settings.admin_key,
        tenants=repos.tenants,
        keys=repos.keys,
        backends=repos.backends,
        usage=repos.usage,
        cipher=cipher,
        reload=sync.reload,
        list_backends=sync.all_backends,
        flush_usage=gateway.usage.flush,
        defaults=config.defaults,
        limits_usage=gateway.admission.usage_view,
        backend_health=lambda backend_id: health.status(backend_id),
        network_policy=network_policy(settings),
    )
    install_error_handlers(app)
    proxies = {endpoint: ProxyEndpoint(gateway, endpoint) for endpoint in PROXY_ENDPOINTS}
    for endpoint, proxy in proxies.items():
        app.router.routes.append(Route(f"/v1/{endpoint}", proxy, methods=["POST"]))
    app.router.routes.append(Route("/v1/models", list_models, methods=["GET"]))
    app.router.routes.append(Route("/v1/models/{model:path}", get_model, methods=["GET"]))
    app.router.routes.extend(health_routes(gateway, engine))
    app.router.routes.append(Route("/metrics", metrics_endpoint(gateway, sync), methods=["GET"]))
    app.state.audit = AuditRepo(engine)
    app.state.people = build_people(
        settings, config, engine, repos.tenants, repos.keys, repos.usage, gateway, sync.reload
    )
    app.include_router(auth_router)
    app.include_router(me_router)
    app.include_router(people_admin_router)
    app.include_router(audit_router)
    app.include_router(admin_router)
    app.include_router(usage_router)
    app.include_router(tenant_router)
    app.router.routes.extend(console_routes())
    app.add_middleware(RequestIdMiddleware)
    app.state.fast_routes = {("POST", f"/v1/{endpoint}"): proxy for endpoint, proxy in proxies.items()}
    return app


def create_asgi(settings: Settings | None = None) -> FastPath:
    """What ``tenantgate serve`` runs: the app behind the fast path for the OpenAI routes.

    Everything built so far (modules, routes, templates, schemas) lives as long as the process, so it is moved
    out of the collector's view: full collections under load then do not walk it again and again (the console
    and people modules added ~4 MiB of such objects, which showed as gateway CPU per stream)."""
    app = create_app(settings)
    gc.collect()
    gc.freeze()
    return FastPath(app, app.state.fast_routes)
