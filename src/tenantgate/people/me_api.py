"""``/me``: a person's profile, keys, usage, and the tenants they manage (members, invites, keys)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from tenantgate.admin.schemas import key_out, path_id
from tenantgate.admin.usage import Options, _filters, _report
from tenantgate.core.errors import Forbidden
from tenantgate.people.access import CurrentCaller, people_of
from tenantgate.people.keys import KeyRequest
from tenantgate.people.schemas import InviteIn, LinkIn, MyKeyIn, RoleIn
from tenantgate.people.service import membership_out
from tenantgate.storage.rows import utcnow

router = APIRouter(prefix="/me", tags=["people"])


@router.get("", summary="Who you are: user, memberships, limits, spend in the period, CSRF token")
async def me(caller: CurrentCaller, request: Request) -> dict[str, Any]:
    return await people_of(request).profile(caller.user, caller.csrf_token)


@router.get("/models", summary="Models you may use, with their prices (USD per million tokens)")
async def my_models(caller: CurrentCaller, request: Request) -> dict[str, Any]:
    catalog = request.app.state.gateway.catalog.current
    data = []
    for name in sorted(catalog.models()):
        deployment = catalog.deployments(name)[0]
        data.append(
            {
                "id": name,
                "input_price_per_mtok": deployment.input_price_per_mtok,
                "output_price_per_mtok": deployment.output_price_per_mtok,
            }
        )
    return {"object": "list", "data": data}


@router.get("/keys", summary="Your API keys (never their secrets)")
async def my_keys(caller: CurrentCaller, request: Request) -> dict[str, Any]:
    return {"object": "list", "data": [key_out(row) for row in await people_of(request).keys.mine(caller.user)]}


@router.post("/keys", status_code=201, summary="Create a key (its secret is shown only in this answer)")
async def create_my_key(body: MyKeyIn, caller: CurrentCaller, request: Request) -> dict[str, Any]:
    row, secret = await people_of(request).keys.create(
        caller.user,
        KeyRequest(body.name, body.tenant_id, body.models, body.expires_at, body.limit_fields()),
    )
    return {**key_out(row), "key": secret}


@router.delete("/keys/{key_id}", summary="Revoke one of your keys (or one of a tenant you manage)")
async def revoke_my_key(key_id: str, caller: CurrentCaller, request: Request) -> dict[str, Any]:
    return key_out(await people_of(request).keys.revoke(caller.user, path_id(key_id, "key_id")))


@router.post("/keys/{key_id}/rotate", status_code=201, summary="Replace a key's secret (the old one stops working)")
async def rotate_my_key(key_id: str, caller: CurrentCaller, request: Request) -> dict[str, Any]:
    row, secret = await people_of(request).keys.rotate(caller.user, path_id(key_id, "key_id"))
    return {**key_out(row), "key": secret}


@router.get("/usage", summary="Your usage (or a tenant's you manage), like /admin/usage", response_model=None)
async def my_usage(
    caller: CurrentCaller,
    request: Request,
    options: Options,
    tenant_id: str | None = Query(default=None, description="A tenant you manage: its whole usage."),
    key_id: str | None = None,
    model: str | None = None,
) -> Response | dict[str, Any]:
    base = _filters(tenant_id, key_id, model, options.since, options.until)
    people = people_of(request)
    filters = await people.visible_usage(caller.user, tenant_id=tenant_id, key_id=key_id, base=base)
    return await _report(request.app.state.admin, filters, options)


@router.get("/usage/records", summary="Your most recent requests")
async def my_usage_records(
    caller: CurrentCaller,
    request: Request,
    tenant_id: str | None = None,
    key_id: str | None = None,
    model: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = Query(default=50, ge=1, le=1000),
) -> dict[str, Any]:
    base = _filters(tenant_id, key_id, model, since, until)
    people = people_of(request)
    filters = await people.visible_usage(caller.user, tenant_id=tenant_id, key_id=key_id, base=base)
    await people.ctx.flush_usage()
    return {"object": "list", "data": await people.ctx.repos.usage.records(filters, limit)}


@router.get("/sessions", summary="Your open sessions")
async def my_sessions(caller: CurrentCaller, request: Request) -> dict[str, Any]:
    rows = await people_of(request).ctx.repos.sessions.of_user(caller.user.id)
    return {
        "object": "list",
        "data": [
            {"created_at": r.created_at.isoformat(), "last_seen_at": r.last_seen_at.isoformat(), "client": r.client}
            for r in rows
        ],
    }


@router.delete("/sessions", summary="Log out everywhere")
async def end_my_sessions(caller: CurrentCaller, request: Request) -> dict[str, Any]:
    return {"revoked": await people_of(request).ctx.repos.sessions.revoke_user(caller.user.id)}


@router.post("/invites/accept", summary="Join a tenant with an invite while logged in")
async def accept_invite(body: LinkIn, caller: CurrentCaller, request: Request) -> dict[str, Any]:
    membership = await people_of(request).accounts.accept_invite(caller.user, body.token)
    return membership_out(membership)


def _tenant_id(tenant_id: str) -> str:
    return path_id(tenant_id, "tenant_id")


@router.get("/tenants/{tenant_id}/members", summary="Members of a tenant you manage")
async def members(tenant_id: str, caller: CurrentCaller, request: Request) -> dict[str, Any]:
    rows = await people_of(request).tenancy.members(caller.user, _tenant_id(tenant_id))
    return {"object": "list", "data": [membership_out(row) for row in rows]}


@router.patch("/tenants/{tenant_id}/members/{user_id}", summary="Change a member's role")
async def set_member_role(
    tenant_id: str, user_id: str, body: RoleIn, caller: CurrentCaller, request: Request
) -> dict[str, Any]:
    row = await people_of(request).tenancy.set_role(
        caller.user, _tenant_id(tenant_id), path_id(user_id, "user_id"), body.role
    )
    return membership_out(row)


@router.delete("/tenants/{tenant_id}/members/{user_id}", summary="Remove a member (their keys here are revoked)")
async def remove_member(tenant_id: str, user_id: str, caller: CurrentCaller, request: Request) -> dict[str, Any]:
    await people_of(request).tenancy.remove(caller.user, _tenant_id(tenant_id), path_id(user_id, "user_id"))
    return {"tenant_id": tenant_id, "user_id": user_id, "removed": True}


@router.post("/tenants/{tenant_id}/invites", status_code=201, summary="Invite someone to a tenant you manage")
async def invite_to_tenant(tenant_id: str, body: InviteIn, caller: CurrentCaller, request: Request) -> dict[str, Any]:
    people = people_of(request)
    role = await people.tenancy.require_manager(caller.user, _tenant_id(tenant_id))
    if role != "owner" and body.role == "owner":
        raise Forbidden("Only owners invite owners.", code="owner_required")
    return await invite_answer(
        request, f"user:{caller.user.email}", body.email, tenant_id, body.role, body.expires_in_hours
    )


async def invite_answer(
    request: Request, actor: str, email: str | None, tenant_id: str | None, role: str, hours: float | None
) -> dict[str, Any]:
    accounts = people_of(request).accounts
    ttl = timedelta(hours=hours) if hours else None
    row, token = await accounts.create_invite(actor, email=email, tenant_id=tenant_id, role=role, ttl=ttl)
    return {
        "id": row.id,
        "url": accounts.link(str(request.base_url), "/console/signup?invite=", token),
        "token": token,
        "email": row.email,
        "tenant_id": row.tenant_id,
        "role": row.role,
        "expires_at": row.expires_at.isoformat(),
    }


@router.get("/tenants/{tenant_id}/keys", summary="Every key of a tenant you manage")
async def tenant_keys(tenant_id: str, caller: CurrentCaller, request: Request) -> dict[str, Any]:
    rows = await people_of(request).keys.of_tenant(caller.user, _tenant_id(tenant_id))
    return {"object": "list", "data": [key_out(row) for row in rows], "as_of": utcnow().isoformat()}
