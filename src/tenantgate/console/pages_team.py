"""``/console/tenants``: the teams a person belongs to; for the ones they manage, members, invites, keys, usage.

A team the person does not belong to answers the error page with 404 (as the JSON API does), so ids of other
teams are never confirmed. Members who do not manage a team see their role and who to ask.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from tenantgate.admin.schemas import path_id
from tenantgate.console.forms import Form, logged_in, posted
from tenantgate.console.pages_usage import key_view, when
from tenantgate.console.render import render
from tenantgate.core.errors import Forbidden, GatewayError, NotFound
from tenantgate.people.access import Caller, people_of
from tenantgate.people.me_api import invite_answer
from tenantgate.people.tenancy import MANAGERS
from tenantgate.storage.rows import ROLES, utcnow

DONE: Final = {
    "role": "Role changed.",
    "removed": "Member removed; their keys in this team are revoked.",
    "key-revoked": "Key revoked. Requests with it are refused within a few seconds.",
}


def _tenant_id(request: Request) -> str:
    return path_id(request.path_params["tenant_id"], "tenant_id")


@logged_in
async def teams_page(request: Request, caller: Caller) -> Response:
    memberships = await people_of(request).ctx.repos.memberships.of_user(caller.user.id)
    flash = {"kind": "ok", "text": "You left the team."} if request.query_params.get("left") == "1" else None
    return render(request, "team_list.html", caller=caller, memberships=memberships, managers=MANAGERS, flash=flash)


async def team_page_response(
    request: Request,
    caller: Caller,
    tenant_id: str,
    *,
    status: int = 200,
    flash: dict[str, str] | None = None,
    invite: dict[str, Any] | None = None,
    invite_values: dict[str, str] | None = None,
) -> Response:
    people = people_of(request)
    user = caller.user
    role = await people.tenancy.require_member(user, tenant_id)
    tenant = await people.ctx.repos.tenants.get(tenant_id)
    if tenant is None:
        raise NotFound(f"No tenant with id '{tenant_id}'.", code="tenant_not_found")
    if role not in MANAGERS:
        return render(request, "team_member.html", caller=caller, tenant=tenant, role=role)
    if flash is None and request.query_params.get("done") in DONE:
        flash = {"kind": "ok", "text": DONE[request.query_params["done"]]}
    members = await people.tenancy.members(user, tenant_id)
    owners = {m.user_id: m.user_email for m in members}
    keys = sorted(await people.keys.of_tenant(user, tenant_id), key=lambda row: row.created_at, reverse=True)
    now = utcnow()
    return render(
        request,
        "team_detail.html",
        status=status,
        caller=caller,
        flash=flash,
        tenant=tenant,
        role=role,
        members=[{"row": m, "since": when(m.created_at)} for m in members],
        owner_count=sum(1 for m in members if m.role == "owner"),
        roles=ROLES if role == "owner" else tuple(r for r in ROLES if r != "owner"),
        keys=[key_view(row, {tenant_id: tenant.name}, now, owners) for row in keys],
        invite=invite,
        invite_values=invite_values or {"email": "", "role": "member"},
    )


@logged_in
async def team_page(request: Request, caller: Caller) -> Response:
    return await team_page_response(request, caller, _tenant_id(request))


async def _or_page(request: Request, caller: Caller, tenant_id: str, exc: GatewayError, **extra: Any) -> Response:
    """A failed action on a team: the team page again with the reason, or the error page when that is gone too."""
    if exc.status == 404 or exc.code == "tenant_role_required":
        raise exc
    return await team_page_response(
        request, caller, tenant_id, status=exc.status, flash={"kind": "error", "text": exc.message}, **extra
    )


@posted
async def invite_create(request: Request, caller: Caller, form: Form) -> Response:
    tenant_id = _tenant_id(request)
    people = people_of(request)
    values = {"email": form.get("email")[:254], "role": form.get("role") or "member"}
    try:
        role = await people.tenancy.require_manager(caller.user, tenant_id)
        if role != "owner" and values["role"] == "owner":
            raise Forbidden("Only owners invite owners.", code="owner_required")
        answer = await invite_answer(
            request, f"user:{caller.user.email}", values["email"] or None, tenant_id, values["role"], None
        )
    except GatewayError as exc:
        return await _or_page(request, caller, tenant_id, exc, invite_values=values)
    answer["expires"] = when(answer["expires_at"])
    return await team_page_response(request, caller, tenant_id, status=201, invite=answer)


@posted
async def member_role(request: Request, caller: Caller, form: Form) -> Response:
    tenant_id = _tenant_id(request)
    user_id = path_id(request.path_params["user_id"], "user_id")
    try:
        await people_of(request).tenancy.set_role(caller.user, tenant_id, user_id, form.get("role"))
    except GatewayError as exc:
        return await _or_page(request, caller, tenant_id, exc)
    return RedirectResponse(f"/console/tenants/{quote(tenant_id, safe='')}?done=role", status_code=303)


@posted
async def member_remove(request: Request, caller: Caller, form: Form) -> Response:
    tenant_id = _tenant_id(request)
    user_id = path_id(request.path_params["user_id"], "user_id")
    try:
        await people_of(request).tenancy.remove(caller.user, tenant_id, user_id)
    except GatewayError as exc:
        return await _or_page(request, caller, tenant_id, exc)
    if user_id == caller.user.id:
        return RedirectResponse("/console/tenants?left=1", status_code=303)
    return RedirectResponse(f"/console/tenants/{quote(tenant_id, safe='')}?done=removed", status_code=303)


@posted
async def team_key_revoke(request: Request, caller: Caller, form: Form) -> Response:
    tenant_id = _tenant_id(request)
    key_id = path_id(request.path_params["key_id"], "key_id")
    people = people_of(request)
    await people.tenancy.require_manager(caller.user, tenant_id)
    row = await people.ctx.repos.keys.get(key_id)
    if row is None or row.tenant_id != tenant_id:
        raise NotFound(f"No key with id '{key_id}' in this team.", code="key_not_found")
    await people.keys.revoke(caller.user, key_id)
    return RedirectResponse(f"/console/tenants/{quote(tenant_id, safe='')}?done=key-revoked", status_code=303)


ROUTES: list[BaseRoute] = [
    Route("/console/tenants", teams_page, methods=["GET"]),
    Route("/console/tenants/{tenant_id}", team_page, methods=["GET"]),
    Route("/console/tenants/{tenant_id}/invites", invite_create, methods=["POST"]),
    Route("/console/tenants/{tenant_id}/members/{user_id}/role", member_role, methods=["POST"]),
    Route("/console/tenants/{tenant_id}/members/{user_id}/remove", member_remove, methods=["POST"]),
    Route("/console/tenants/{tenant_id}/keys/{key_id}/revoke", team_key_revoke, methods=["POST"]),
]
