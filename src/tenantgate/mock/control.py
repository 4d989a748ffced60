"""The mock's own endpoints beside inference: model listing, health, statistics and standing faults.

Tests drive the mock through these (``/_mock/*``), and the gateway's health checks read ``/v1/models``.
"""

from __future__ import annotations

import orjson
from aiohttp import web

from tenantgate.mock.common import _MODEL_CREATED, FAULTS_KEY, OPTIONS_KEY, STATS_KEY, Json, MockError, _json


def _model_card(model_id: str) -> Json:
    return {"id": model_id, "object": "model", "created": _MODEL_CREATED, "owned_by": "mock"}


async def _models(request: web.Request) -> web.StreamResponse:
    status = request.app[FAULTS_KEY].get("status")
    if status:
        raise MockError(int(status), f"Injected mock failure ({status}).")
    return await _models_list(request)


async def _models_list(request: web.Request) -> web.StreamResponse:
    return _json({"object": "list", "data": [_model_card(m) for m in request.app[OPTIONS_KEY].models]})


async def _model(request: web.Request) -> web.StreamResponse:
    model_id = request.match_info["model_id"]
    if model_id not in request.app[OPTIONS_KEY].models:
        message = f"The model `{model_id}` does not exist or you do not have access to it."
        raise MockError(404, message, code="model_not_found", param="model")
    return _json(_model_card(model_id))


async def _health(request: web.Request) -> web.StreamResponse:
    return _json({"status": "ok"})


async def _stats(request: web.Request) -> web.StreamResponse:
    return _json(request.app[STATS_KEY].snapshot())


async def _reset(request: web.Request) -> web.StreamResponse:
    request.app[STATS_KEY].reset()
    return _json({"status": "ok"})


async def _set_faults(request: web.Request) -> web.StreamResponse:
    """Standing faults for every later request (same keys as the body's ``"mock"`` object; ``{}`` clears).

    They let a test make one backend of several fail, stall or recover while the gateway routes traffic
    through all of them. A standing ``status`` also fails ``GET /v1/models``, so health checks see it too.
    """
    faults = orjson.loads(await request.read() or b"{}")
    if not isinstance(faults, dict):
        raise MockError(400, "faults must be an object", param="mock")
    request.app[FAULTS_KEY] = faults
    return _json({"faults": faults})


def add_control_routes(app: web.Application) -> None:
    app.router.add_get("/health", _health)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/v1/models/{model_id:.+}", _model)
    app.router.add_get("/_mock/stats", _stats)
    app.router.add_post("/_mock/reset", _reset)
    app.router.add_put("/_mock/faults", _set_faults)
