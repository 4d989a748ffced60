"""Health endpoints: ``/health`` (summary), ``/health/live`` (process up), ``/health/ready`` (can serve).

Readiness is what a load balancer should route on: the database answers, Redis answers when configured (or the
fail mode keeps serving), at least one backend is healthy, and the gateway is not draining. It turns 503 the
moment a drain starts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tenantgate import __version__
from tenantgate.edge.context import Gateway
from tenantgate.edge.pipeline import new_request_id
from tenantgate.edge.responses import json_response
from tenantgate.edge.sync import ConfigSync


async def _database(engine: AsyncEngine) -> str:
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
    except Exception:
        return "unavailable"
    return "ok"


def _backends(gateway: Gateway) -> dict[str, Any]:
    view = gateway.forwarder.health.view()
    ids = {
        d.backend_id for model in gateway.catalog.current.models() for d in gateway.catalog.current.deployments(model)
    }
    healthy = sum(1 for backend_id in ids if view.of(backend_id).healthy)
    return {"total": len(ids), "healthy": healthy}


async def _checks(gateway: Gateway, engine: AsyncEngine) -> dict[str, Any]:
    limits = (await gateway.admission.check())["limits"]
    return {
        "database": await _database(engine),
        "limits": limits,
        "backends": _backends(gateway),
        "draining": gateway.draining,
    }


def health_routes(gateway: Gateway, engine: AsyncEngine) -> list[Route]:
    async def summary(_request: Request) -> Response:
        checks = await _checks(gateway, engine)
        ok = checks["database"] == "ok"
        body = {
            "status": "ok" if ok else "degraded",
            "service": "tenantgate",
            "version": __version__,
            "database": checks["database"],
            "models": len(gateway.catalog.current.models()),
            "limits": checks["limits"],
            "backends": checks["backends"],
            "draining": gateway.draining,
            "worker": gateway.settings.worker,  # which of `serve --workers N` answered (null: a single process)
        }
        return json_response(orjson.dumps(body), new_request_id(), status=200 if ok else 503)

    async def live(_request: Request) -> Response:
        return json_response(b'{"status":"ok"}', new_request_id())

    async def ready(_request: Request) -> Response:
        checks = await _checks(gateway, engine)
        limits_ok = checks["limits"].get("state", "ok") == "ok" or checks["limits"].get("fail_mode") == "local"
        reasons = []
        if gateway.draining:
            reasons.append("draining")
        if checks["database"] != "ok":
            reasons.append("database unavailable")
        if not limits_ok:
            reasons.append("limits store unavailable")
        if checks["backends"]["healthy"] == 0:
            reasons.append("no healthy backend")
        body = {"status": "ready" if not reasons else "not_ready", "reasons": reasons, "checks": checks}
        return json_response(orjson.dumps(body), new_request_id(), status=503 if reasons else 200)

    return [
        Route("/health", summary, methods=["GET"]),
        Route("/health/live", live, methods=["GET"]),
        Route("/health/ready", ready, methods=["GET"]),
    ]


def metrics_endpoint(gateway: Gateway, sync: ConfigSync) -> Callable[[Request], Awaitable[Response]]:
    """``GET /metrics``: gauges are refreshed on the loop, the text is encoded in a thread (a big registry
    takes tens of milliseconds to render, which must not stall the requests in flight)."""
    metrics = gateway.metrics

    def refresh_gauges() -> None:
        usage = gateway.usage
        metrics.set_usage_queue(usage.depth, usage.dropped, usage.written)
        limits = gateway.admission.status()["limits"]
        metrics.set_limits_store(limits.get("state", "ok"))
        if limits.get("backend") == "redis":
            metrics.set_redis_up(limits.get("state") == "ok")
        view = gateway.forwarder.health.view()
        for row in sync.stored_backends_and_static():
            state = view.of(row.id).state if row.enabled else "disabled"
            metrics.set_backend_health(row.name, state)

    metrics.collect_hook = refresh_gauges

    async def endpoint(request: Request) -> Response:
        metrics.set_database_up(await _database(sync.engine) == "ok")
        metrics.refresh()
        body, content_type = await asyncio.to_thread(metrics.encode, request.headers.get("accept"))
        return Response(body, media_type=content_type)

    return endpoint
