"""The app factory: builds every part of one gateway process from its settings and wires them together.

Nothing here is global: tests build as many apps as they like, each with its own settings.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tenantgate import __version__
from tenantgate.admin.api import AdminServices
from tenantgate.admin.api import router as admin_router
from tenantgate.auth.authenticator import Authenticator
from tenantgate.backends.upstream import UpstreamClient
from tenantgate.config.file import load_config
from tenantgate.config.settings import Settings
from tenantgate.core.errors import GatewayError, InvalidRequest, NotFound
from tenantgate.core.secrets import CredentialCipher
from tenantgate.edge.admission import build_admission
from tenantgate.edge.bootstrap import bootstrap_keys
from tenantgate.edge.context import CatalogHolder, Gateway
from tenantgate.edge.pipeline import ProxyEndpoint, get_model, list_models, new_request_id
from tenantgate.edge.responses import error_response, json_response
from tenantgate.edge.sync import ConfigSync
from tenantgate.metering.tokens import TokenCounter
from tenantgate.metering.writer import UsageWriter
from tenantgate.storage.database import create_engine, migrate
from tenantgate.storage.repos import BackendRepo, KeyRepo, StateRepo, TenantRepo, budget_scopes
from tenantgate.storage.usage import UsageRepo

log = logging.getLogger("tenantgate")

PROXY_ENDPOINTS = ("chat/completions", "completions", "embeddings", "responses")


class RequestIdMiddleware:
    """Gives every response an ``x-request-id`` (the /v1 handlers set their own; this covers the rest)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.setdefault("headers", [])
                if not any(name == b"x-request-id" for name, _ in headers):
                    headers.append((b"x-request-id", new_request_id().encode()))
            await send(message)

        await self.app(scope, receive, send_with_id)


def _install_error_handlers(app: FastAPI) -> None:
    async def gateway_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, GatewayError)
        return error_response(exc, new_request_id())

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            error: GatewayError = NotFound(f"Unknown path: {request.url.path}", code="unknown_url")
        else:
            error = GatewayError(str(exc.detail), status=exc.status_code, code="http_error")
            error.type = "invalid_request_error"
        return error_response(error, new_request_id())

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(part) for part in first["loc"] if part != "body") or None
        message = f"{param}: {first['msg']}" if param else str(first["msg"])
        return error_response(InvalidRequest(message, param=param, code="invalid_value"), new_request_id())

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error", exc_info=exc)
        return error_response(GatewayError("The gateway had an internal error."), new_request_id())

    app.add_exception_handler(GatewayError, gateway_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    config = load_config(settings.config_file)
    engine = create_engine(settings.database_url)
    tenants, keys, backends = TenantRepo(engine), KeyRepo(engine), BackendRepo(engine)
    usage_repo, state = UsageRepo(engine), StateRepo(engine)
    cipher = CredentialCipher.from_settings(
        settings.secret_key.get_secret_value() if settings.secret_key else None, settings.secret_key_file
    )
    tokens = TokenCounter()
    gateway = Gateway(
        settings=settings,
        config=config,
        auth=Authenticator(keys, ttl=settings.auth_cache_ttl, negative_ttl=settings.auth_negative_ttl),
        catalog=CatalogHolder(),
        upstream=UpstreamClient(
            connect_timeout=settings.upstream_connect_timeout,
            read_timeout=settings.upstream_read_timeout,
            max_connections=settings.upstream_max_connections,
        ),
        usage=UsageWriter(
            usage_repo.insert_many,
            max_queue=settings.usage_queue_size,
            flush_interval=settings.usage_flush_interval,
            batch_size=settings.usage_batch_size,
        ),
        tokens=tokens,
        admission=build_admission(
            settings,
            config,
            tokens,
            budget_scopes=lambda: budget_scopes(engine),
            spent_since=usage_repo.scope_spent_since,
        ),
    )
    sync = ConfigSync(gateway, state, backends, cipher)
    sync.listeners.append(gateway.admission.on_config_change)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if settings.migrate_on_start:
            await migrate(engine)
        if settings.bootstrap_keys is not None:
            await bootstrap_keys(settings.bootstrap_keys.get_secret_value(), tenants, keys)
        await sync.reload()
        await gateway.upstream.start()
        await gateway.admission.start()
        gateway.usage.start()
        sync.start(settings.sync_interval)
        try:
            yield
        finally:
            gateway.draining = True
            await sync.stop()
            await gateway.usage.close()
            await gateway.admission.close()
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
        tenants=tenants,
        keys=keys,
        backends=backends,
        usage=usage_repo,
        cipher=cipher,
        reload=sync.reload,
        list_backends=sync.all_backends,
        flush_usage=gateway.usage.flush,
        defaults=config.defaults,
        limits_usage=gateway.admission.usage_view,
    )
    _install_error_handlers(app)
    for endpoint in PROXY_ENDPOINTS:
        app.router.routes.append(Route(f"/v1/{endpoint}", ProxyEndpoint(gateway, endpoint), methods=["POST"]))
    app.router.routes.append(Route("/v1/models", list_models, methods=["GET"]))
    app.router.routes.append(Route("/v1/models/{model:path}", get_model, methods=["GET"]))
    app.include_router(admin_router)

    @app.get("/health", tags=["health"], summary="Gateway status")
    async def health() -> Response:
        database = "ok"
        try:
            async with engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
        except Exception:
            database = "unavailable"
        body: dict[str, Any] = {
            "status": "ok" if database == "ok" else "degraded",
            "service": "tenantgate",
            "version": __version__,
            "database": database,
            "models": len(gateway.catalog.current.models()),
            **await gateway.admission.check(),
        }
        return json_response(orjson.dumps(body), new_request_id(), status=200 if database == "ok" else 503)

    app.add_middleware(RequestIdMiddleware)
    return app
