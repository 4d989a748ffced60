"""Admin pages for tenants (list, create, edit limits, live usage, members, delete) and every API key."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from tenantgate.admin import api
from tenantgate.admin.schemas import TenantCreate, TenantUpdate, query_text
from tenantgate.console.admin_common import (
    EMPTY,
    acting,
    build,
    done,
    error_flash,
    flash_of,
    form_values,
    limit_values,
    limits_from,
)
from tenantgate.console.forms import Form, logged_in, posted
from tenantgate.console.render import render
from tenantgate.core.errors import GatewayError
from tenantgate.people.access import Caller, people_of
from tenantgate.storage.rows import utcnow

TENANT_FIELDS = ("name", "rpm", "tpm", "max_concurrency", "budget_usd", "budget_period")


async def _tenants_view(
    request: Request, caller: Caller, *, status: int = 200, error: GatewayError | None = None, values: Form = EMPTY
) -> Response:
    admin = acting(request, caller)
    tenants = (await api.list_tenants(admin))["data"]
    keys = await admin.keys.list()
    active: dict[str, int] = {}
    for key in keys:
        if key.revoked_at is None:
            active[key.tenant_id] = active.get(key.tenant_id, 0) + 1
    return render(
        request,
        "admin_tenants.html",
        status=status,
        caller=caller,
        tenants=tenants,
        active_keys=active,
        values=form_values(values, TENANT_FIELDS),
        invalid=error.param if error else None,
        notice=error_flash(error.message, error.param) if error else flash_of(request),
    )


@logged_in
async def tenants_page(request: Request, caller: Caller) -> Response:
    return await _tenants_view(request, caller)


@posted
async def tenant_create(request: Request, caller: Caller, form: Form) -> Response:
    admin = acting(request, caller)
    try:
        body = build(TenantCreate, {"name": form.get("name"), **limits_from(form, blank_is_none=False)})
        row = await api.create_tenant(body, admin, request)
    except GatewayError as exc:
        return await _tenants_view(request, caller, status=exc.status, error=exc, values=form)
    return done(f"/console/admin/tenants/{row['id']}", "tenant_created")


async def _tenant_view(
    request: Request,
    caller: Caller,
    tenant_id: str,
    *,
    status: int = 200,
    error: GatewayError | None = None,
    values: Form | None = None,
) -> Response:
    admin = acting(request, caller)
    tenant = await api.get_tenant(tenant_id, admin)
    members = await people_of(request).ctx.repos.memberships.of_tenant(tenant["id"])
    keys = await admin.keys.list(tenant["id"])
    shown = form_values(values, TENANT_FIELDS) if values else {"name": tenant["name"], **limit_values(tenant)}
    return render(
        request,
        "admin_tenant.html",
        status=status,
        caller=caller,
        tenant=tenant,
        usage=tenant["usage"],
        members=members,
        key_count=sum(1 for key in keys if key.revoked_at is None),
        values=shown,
        invalid=error.param if error else None,
        notice=error_flash(error.message, error.param) if error else flash_of(request),
    )


@logged_in
async def tenant_page(request: Request, caller: Caller) -> Response:
    return await _tenant_view(request, caller, request.path_params["tenant_id"])


@posted
async def tenant_update(request: Request, caller: Caller, form: Form) -> Response:
    admin = acting(request, caller)
    tenant_id = request.path_params["tenant_id"]
    try:
        body = build(TenantUpdate, {"name": form.get("name"), **limits_from(form, blank_is_none=True)})
        await api.update_tenant(tenant_id, body, admin, request)
    except GatewayError as exc:
        return await _tenant_view(request, caller, tenant_id, status=exc.status, error=exc, values=form)
    return done(f"/console/admin/tenants/{tenant_id}", "tenant_saved")


@posted
async def tenant_delete(request: Request, caller: Caller, form: Form) -> Response:
    admin = acting(request, caller)
    await api.delete_tenant(request.path_params["tenant_id"], admin, request)
    return done("/console/admin/tenants", "tenant_deleted")


def _key_state(key: Any, now: Any) -> str:
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= now:
        return "expired"
    return "active"


@logged_in
async def keys_page(request: Request, caller: Caller) -> Response:
    admin = acting(request, caller)
    tenant_id = query_text(request.query_params.get("tenant_id") or None, "tenant_id")
    tenants = await admin.tenants.list()
    names = {row.id: row.name for row in tenants}
    emails = {row.id: row.email for row in await people_of(request).ctx.repos.users.list()}
    now = utcnow()
    keys = [
        {"row": key, "tenant": names.get(key.tenant_id, key.tenant_id), "owner": emails.get(key.user_id or "")}
        | {"state": _key_state(key, now), "prefix": f"tg-{key.public_id}-"}
        for key in reversed(await admin.keys.list(tenant_id))
    ]
    return render(
        request,
        "admin_keys.html",
        caller=caller,
        keys=keys,
        tenants=tenants,
        tenant_id=tenant_id or "",
        tenant_name=names.get(tenant_id or ""),
        notice=flash_of(request),
    )


@posted
async def key_revoke(request: Request, caller: Caller, form: Form) -> Response:
    admin = acting(request, caller)
    await api.revoke_key(request.path_params["key_id"], admin, request)
    tenant_id = form.get("tenant_id")[:200] or None
    return done("/console/admin/keys", "key_revoked", tenant_id=tenant_id)


ROUTES: list[BaseRoute] = [
    Route("/console/admin/tenants", tenants_page, methods=["GET"]),
    Route("/console/admin/tenants", tenant_create, methods=["POST"]),
    Route("/console/admin/tenants/{tenant_id}", tenant_page, methods=["GET"]),
    Route("/console/admin/tenants/{tenant_id}", tenant_update, methods=["POST"]),
    Route("/console/admin/tenants/{tenant_id}/delete", tenant_delete, methods=["POST"]),
    Route("/console/admin/keys", keys_page, methods=["GET"]),
    Route("/console/admin/keys/{key_id}/revoke", key_revoke, methods=["POST"]),
]
