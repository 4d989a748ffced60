"""Admin pages for backends: the list with live health (htmx polls a partial), register, edit, enable/disable,
delete. Config-file backends (``source == "config"``) are shown read-only, as the admin API treats them."""

from __future__ import annotations

from typing import Any, Final

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from tenantgate.admin import api
from tenantgate.admin.auth import AdminServices
from tenantgate.admin.schemas import BackendCreate, BackendUpdate
from tenantgate.console.admin_common import EMPTY, acting, build, done, error_flash, flash_of, form_values
from tenantgate.console.forms import Form, logged_in, page_caller, posted
from tenantgate.console.render import render, secure_headers
from tenantgate.core.errors import GatewayError
from tenantgate.people.access import Caller
from tenantgate.storage.rows import utcnow

BACKEND_FIELDS: Final = ("name", "base_url", "models", "weight", "priority")
BADGES: Final = {
    "healthy": "ok",
    "cooling": "warn",
    "ejected": "bad",
    "unhealthy": "bad",
    "disabled": "muted",
    "unchecked": "muted",
    "removed": "muted",
}
MAX_SHOWN: Final = 500


def live(admin: AdminServices, row: dict[str, Any]) -> dict[str, Any]:
    """What the health columns show for one backend (``row`` as the admin API lists it).

    A backend no probe or request has reported on yet is "unchecked" here (routing treats it as healthy until
    told otherwise); latency is the traffic average, else the last health check's.
    """
    status = admin.backend_health(row["id"])
    state = row.get("state") or "healthy"
    heard = status.probe_latency_ms is not None or status.latency_ewma_ms is not None or status.last_error
    if state == "healthy" and not heard:
        state = "unchecked"
    latency = row.get("latency_ms")
    if latency is None:
        latency = status.probe_latency_ms
    return {
        "state": state,
        "badge": BADGES.get(state, "muted"),
        "latency": f"{latency:.1f}" if latency is not None else "",
        "in_flight": row.get("in_flight", 0),
        "last_error": row.get("last_error") or "",
    }


async def _rows(admin: AdminServices) -> list[dict[str, Any]]:
    rows = (await api.list_backends(admin))["data"]
    return [{**row, "live": live(admin, row), "model_names": [m["name"] for m in row["models"]]} for row in rows]


async def _backends_view(
    request: Request, caller: Caller, *, status: int = 200, error: GatewayError | None = None, values: Form = EMPTY
) -> Response:
    admin = acting(request, caller)
    rows = await _rows(admin)
    shown = form_values(values, BACKEND_FIELDS)
    return render(
        request,
        "admin_backends.html",
        status=status,
        caller=caller,
        backends=rows,
        shown_ids=",".join(row["id"] for row in rows[:MAX_SHOWN]),
        values=shown,
        invalid=error.param if error else None,
        notice=error_flash(error.message, error.param) if error else flash_of(request),
        now=utcnow(),
    )


@logged_in
async def backends_page(request: Request, caller: Caller) -> Response:
    return await _backends_view(request, caller)


async def backends_health(request: Request) -> Response:
    """The live health cells (htmx out-of-band swaps by element id) and an "updated" line.

    Not a page: a lost session or a non-admin gets an empty 401/403 (a redirect to the login page would be
    swapped into the status line); htmx's poll gets 286 instead, which stops it, with a link to log in again.
    """
    caller = await page_caller(request)
    if caller is None or not caller.user.is_admin:
        if request.headers.get("hx-request") == "true":  # 286: htmx swaps this line in and stops polling
            stopped = '<a href="/console/login">Log in again</a> to see live health.'
            return secure_headers(HTMLResponse(stopped, status_code=286))
        return secure_headers(Response(status_code=401 if caller is None else 403))
    admin = acting(request, caller)
    rows = await _rows(admin)
    current = {row["id"] for row in rows}
    asked = request.query_params.get("shown")
    shown = [part for part in asked.split(",") if part][:MAX_SHOWN] if asked is not None else list(current)
    gone = [backend_id for backend_id in shown if backend_id not in current]
    added = len(current - set(shown))
    return render(
        request,
        "admin_backends_health.html",
        backends=[row for row in rows if row["id"] in shown],
        gone=gone,
        added=added,
        now=utcnow(),
    )


@posted
async def backend_create(request: Request, caller: Caller, form: Form) -> Response:
    admin = acting(request, caller)
    try:
        fields: dict[str, Any] = {
            "name": form.get("name"),
            "base_url": form.get("base_url"),
            "api_key": form.optional("api_key"),
            "models": model_names(form.get("models")),
        }
        for name in ("weight", "priority"):
            if form.optional(name) is not None:
                fields[name] = form.get(name)
        await api.create_backend(build(BackendCreate, fields), admin, request)
    except GatewayError as exc:
        return await _backends_view(request, caller, status=exc.status, error=exc, values=form)
    return done("/console/admin/backends", "backend_created")


def model_names(text: str) -> list[str]:
    """``"a, b,,c"`` → ``["a", "b", "c"]``."""
    return [part.strip() for part in text.split(",") if part.strip()]


def merged_models(current: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    """The new model list: names already served keep their upstream name and prices (set through the API or
    config), new names come with none."""
    known = {model["name"]: model for model in current}
    return [known.get(name, {"name": name}) for name in names]


async def _backend_view(
    request: Request,
    caller: Caller,
    backend_id: str,
    *,
    status: int = 200,
    error: GatewayError | None = None,
    values: Form | None = None,
) -> Response:
    admin = acting(request, caller)
    row = await api.get_backend(backend_id, admin)
    names = [model["name"] for model in row["models"]]
    if values:
        shown = form_values(values, BACKEND_FIELDS)
    else:
        shown = {"base_url": row["base_url"], "models": ", ".join(names)}
        shown |= {"weight": str(row["weight"]), "priority": str(row["priority"])}
    return render(
        request,
        "admin_backend.html",
        status=status,
        caller=caller,
        backend=row,
        live=live(admin, row),
        values=shown,
        invalid=error.param if error else None,
        notice=error_flash(error.message, error.param) if error else flash_of(request),
    )


@logged_in
async def backend_page(request: Request, caller: Caller) -> Response:
    return await _backend_view(request, caller, request.path_params["backend_id"])


@posted
async def backend_update(request: Request, caller: Caller, form: Form) -> Response:
    admin = acting(request, caller)
    backend_id = request.path_params["backend_id"]
    try:
        current = await api.get_backend(backend_id, admin)
        fields: dict[str, Any] = {"base_url": form.get("base_url")}
        names = model_names(form.get("models"))
        if names != [model["name"] for model in current["models"]]:
            fields["models"] = merged_models(current["models"], names)
        for name in ("weight", "priority"):
            if form.optional(name) is not None:
                fields[name] = form.get(name)
        if form.get("remove_api_key"):
            fields["api_key"] = ""
        elif form.optional("api_key") is not None:
            fields["api_key"] = form.get("api_key")
        await api.update_backend(backend_id, build(BackendUpdate, fields), admin, request)
    except GatewayError as exc:
        return await _backend_view(request, caller, backend_id, status=exc.status, error=exc, values=form)
    return done(f"/console/admin/backends/{backend_id}", "backend_saved")


@posted
async def backend_enabled(request: Request, caller: Caller, form: Form) -> Response:
    admin = acting(request, caller)
    backend_id = request.path_params["backend_id"]
    enable = form.get("enabled") == "1"
    await api.update_backend(backend_id, BackendUpdate(enabled=enable), admin, request)
    back = "/console/admin/backends" if form.get("back") == "list" else f"/console/admin/backends/{backend_id}"
    return done(back, "backend_enabled" if enable else "backend_disabled")


@posted
async def backend_delete(request: Request, caller: Caller, form: Form) -> Response:
    admin = acting(request, caller)
    await api.delete_backend(request.path_params["backend_id"], admin, request)
    return done("/console/admin/backends", "backend_deleted")


ROUTES: list[BaseRoute] = [
    Route("/console/admin/backends", backends_page, methods=["GET"]),
    Route("/console/admin/backends", backend_create, methods=["POST"]),
    Route("/console/admin/backends/health", backends_health, methods=["GET"]),
    Route("/console/admin/backends/{backend_id}", backend_page, methods=["GET"]),
    Route("/console/admin/backends/{backend_id}", backend_update, methods=["POST"]),
    Route("/console/admin/backends/{backend_id}/enabled", backend_enabled, methods=["POST"]),
    Route("/console/admin/backends/{backend_id}/delete", backend_delete, methods=["POST"]),
]
