"""Admin pages for people: users (create, limits, admin flag, disable, memberships, one-time links, sessions)
and invites (create, list, withdraw). One-time links are shown once, in the answer to the form that made them."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

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
from tenantgate.core.errors import Forbidden, GatewayError, InvalidRequest
from tenantgate.people import admin_api
from tenantgate.people.access import Caller, clear_session_cookie, people_of
from tenantgate.people.schemas import AdminInviteIn, RoleIn, UserCreate, UserUpdate
from tenantgate.storage.rows import ROLES

USER_FIELDS = ("email", "name", "tenant_id", "role", "rpm", "tpm", "max_concurrency", "budget_usd", "budget_period")
INVITE_FIELDS = ("invite_email", "invite_tenant", "invite_role", "invite_hours")


async def _users_view(
    request: Request,
    caller: Caller,
    *,
    status: int = 200,
    error: GatewayError | None = None,
    values: Form = EMPTY,
    handover: dict[str, str] | None = None,
) -> Response:
    admin = acting(request, caller)
    users = (await admin_api.list_users(admin, request))["data"]
    invites = (await admin_api.list_invites(admin, request))["data"]
    tenants = await admin.tenants.list()
    shown = form_values(values, USER_FIELDS + INVITE_FIELDS)
    shown["is_admin"] = "1" if values.get("is_admin") else ""
    if not values.get("invite_tenant"):
        shown["invite_tenant"] = request.query_params.get("tenant", "")[:200]
    return render(
        request,
        "admin_users.html",
        status=status,
        caller=caller,
        users=users,
        invites=invites,
        tenants=tenants,
        tenant_names={row.id: row.name for row in tenants},
        roles=ROLES,
        values=shown,
        invalid=error.param if error else None,
        notice=error_flash(error.message, error.param) if error else flash_of(request),
        handover=handover,
    )


@logged_in
async def users_page(request: Request, caller: Caller) -> Response:
    return await _users_view(request, caller)


@posted
async def user_create(request: Request, caller: Caller, form: Form) -> Response:
    admin = acting(request, caller)
    try:
        fields: dict[str, Any] = {
            "email": form.get("email"),
            "password": form.optional("password"),
            "name": form.optional("name"),
            "is_admin": bool(form.get("is_admin")),
            **limits_from(form, blank_is_none=False),
        }
        if form.optional("tenant_id"):
            fields |= {"tenant_id": form.get("tenant_id"), "role": form.get("role") or "member"}
        created = await admin_api.create_user(build(UserCreate, fields), admin, request)
    except GatewayError as exc:
        return await _users_view(request, caller, status=exc.status, error=exc, values=form)
    if "reset" not in created:
        return done(f"/console/admin/users/{created['id']}", "user_created")
    reset = created["reset"]
    note = (
        f"{created['email']} has no password yet. Hand this single-use link over; it sets their password and "
        f"expires at {reset['expires_at'][:16].replace('T', ' ')} UTC."
        + (" It was also mailed to them." if reset["mailed"] else "")
    )
    link = {"title": "User created: their password link", "url": reset["url"], "note": note}
    return await _users_view(request, caller, handover=link)


@posted
async def invite_create(request: Request, caller: Caller, form: Form) -> Response:
    admin = acting(request, caller)
    try:
        fields = {
            "email": form.optional("invite_email"),
            "tenant_id": form.optional("invite_tenant"),
            "role": form.get("invite_role") or "member",
            "expires_in_hours": form.optional("invite_hours"),
        }
        body = build(AdminInviteIn, fields)
        invite = await admin_api.create_invite(body, admin, request)
    except GatewayError as exc:
        if exc.param in ("email", "tenant_id", "role", "expires_in_hours"):
            exc.param = {"email": "invite_email", "tenant_id": "invite_tenant", "role": "invite_role"}.get(
                exc.param, "invite_hours"
            )
        return await _users_view(request, caller, status=exc.status, error=exc, values=form)
    whom = f"for {invite['email']}" if invite["email"] else "for anyone who has the link"
    note = f"Single-use sign-up link {whom}; it expires at {invite['expires_at'][:16].replace('T', ' ')} UTC."
    link = {"title": "Invite created", "url": invite["url"], "note": note}
    return await _users_view(request, caller, handover=link)


@posted
async def invite_withdraw(request: Request, caller: Caller, form: Form) -> Response:
    admin = acting(request, caller)
    await admin_api.delete_invite(request.path_params["invite_id"], admin, request)
    return done("/console/admin/users", "invite_withdrawn")


async def _user_view(
    request: Request,
    caller: Caller,
    user_id: str,
    *,
    status: int = 200,
    error: GatewayError | None = None,
    values: Form | None = None,
    handover: dict[str, str] | None = None,
) -> Response:
    admin = acting(request, caller)
    user = await admin_api.get_user(user_id, admin, request)
    if values:
        shown = form_values(values, USER_FIELDS)
        shown["is_admin"] = "1" if values.get("is_admin") else ""
    else:
        shown = {"email": user["email"], "name": user["name"] or "", **limit_values(user)}
        shown["is_admin"] = "1" if user["is_admin"] else ""
    member_of = {m["tenant_id"] for m in user["memberships"]}
    tenants = [row for row in await admin.tenants.list() if row.id not in member_of]
    sessions = await people_of(request).ctx.repos.sessions.of_user(user["id"])
    keys = [key for key in await admin.keys.list(user_id=user["id"]) if key.revoked_at is None]
    return render(
        request,
        "admin_user.html",
        status=status,
        caller=caller,
        person=user,
        usage=user["usage"],
        is_self=user["id"] == caller.user.id,
        tenants=tenants,
        roles=ROLES,
        session_count=len(sessions),
        key_count=len(keys),
        values=shown,
        invalid=error.param if error else None,
        notice=error_flash(error.message, error.param) if error else flash_of(request),
        handover=handover,
    )


@logged_in
async def user_page(request: Request, caller: Caller) -> Response:
    return await _user_view(request, caller, request.path_params["user_id"])


def _not_self(caller: Caller, user_id: str, what: str) -> None:
    """An admin cannot lock themself out from here (another admin can, or the JSON API)."""
    if user_id == caller.user.id:
        raise Forbidden(f"You cannot {what} your own account here; ask another platform admin.", code="self_lockout")


@posted
async def user_update(request: Request, caller: Caller, form: Form) -> Response:
    admin = acting(request, caller)
    user_id = request.path_params["user_id"]
    try:
        is_admin = bool(form.get("is_admin"))
        if not is_admin:
            _not_self(caller, user_id, "remove admin rights from")
        fields = {
            "email": form.get("email"),
            "name": form.optional("name"),
            "is_admin": is_admin,
            **limits_from(form, blank_is_none=True),
        }
        await admin_api.update_user(user_id, build(UserUpdate, fields), admin, request)
    except GatewayError as exc:
        return await _user_view(request, caller, user_id, status=exc.status, error=exc, values=form)
    return done(f"/console/admin/users/{user_id}", "user_saved")


@posted
async def user_state(request: Request, caller: Caller, form: Form) -> Response:
    admin = acting(request, caller)
    user_id = request.path_params["user_id"]
    disable = form.get("disabled") == "1"
    if disable:
        _not_self(caller, user_id, "disable")
    await admin_api.update_user(user_id, UserUpdate(disabled=disable), admin, request)
    return done(f"/console/admin/users/{user_id}", "user_disabled" if disable else "user_enabled")


@posted
async def user_delete(request: Request, caller: Caller, form: Form) -> Response:
    admin = acting(request, caller)
    user_id = request.path_params["user_id"]
    _not_self(caller, user_id, "delete")
    await admin_api.delete_user(user_id, admin, request)
    return done("/console/admin/users", "user_deleted")


@posted
async def membership_put(request: Request, caller: Caller, form: Form) -> Response:
    admin = acting(request, caller)
    user_id = request.path_params["user_id"]
    tenant_id = form.optional("tenant_id") or request.path_params.get("tenant_id", "")
    try:
        if not tenant_id:
            raise InvalidRequest("Tenant: choose a tenant.", param="tenant_id")
        await admin_api.put_membership(user_id, tenant_id, build(RoleIn, {"role": form.get("role")}), admin, request)
    except GatewayError as exc:
        return await _user_view(request, caller, user_id, status=exc.status, error=exc)
    return done(f"/console/admin/users/{user_id}", "member_saved")


@posted
async def membership_remove(request: Request, caller: Caller, form: Form) -> Response:
    admin = acting(request, caller)
    user_id = request.path_params["user_id"]
    await admin_api.delete_membership(user_id, request.path_params["tenant_id"], admin, request)
    return done(f"/console/admin/users/{user_id}", "member_removed")


@posted
async def user_reset_link(request: Request, caller: Caller, form: Form) -> Response:
    admin = acting(request, caller)
    user_id = request.path_params["user_id"]
    reset = await admin_api.reset_link(user_id, admin, request)
    note = (
        f"Single-use link to set a new password; it expires at {reset['expires_at'][:16].replace('T', ' ')} UTC. "
        "Their current password keeps working until they use it."
        + (" It was also mailed to them." if reset["mailed"] else "")
    )
    link = {"title": "Password reset link", "url": reset["url"], "note": note}
    return await _user_view(request, caller, user_id, handover=link)


@posted
async def user_login_link(request: Request, caller: Caller, form: Form) -> Response:
    admin = acting(request, caller)
    user_id = request.path_params["user_id"]
    login = await admin_api.login_link(user_id, admin, request)
    note = "Single-use link that logs them in without a password; it expires in 15 minutes. Send it privately."
    link = {"title": "Login link", "url": login["url"], "note": note}
    return await _user_view(request, caller, user_id, handover=link)


@posted
async def user_logout(request: Request, caller: Caller, form: Form) -> Response:
    admin = acting(request, caller)
    user_id = request.path_params["user_id"]
    await admin_api.end_sessions(user_id, admin, request)
    if user_id == caller.user.id:  # this session ended too
        response = RedirectResponse("/console/login", status_code=303)
        clear_session_cookie(response)
        return response
    return done(f"/console/admin/users/{user_id}", "sessions_ended")


ROUTES: list[BaseRoute] = [
    Route("/console/admin/users", users_page, methods=["GET"]),
    Route("/console/admin/users", user_create, methods=["POST"]),
    Route("/console/admin/invites", invite_create, methods=["POST"]),
    Route("/console/admin/invites/{invite_id}/withdraw", invite_withdraw, methods=["POST"]),
    Route("/console/admin/users/{user_id}", user_page, methods=["GET"]),
    Route("/console/admin/users/{user_id}", user_update, methods=["POST"]),
    Route("/console/admin/users/{user_id}/state", user_state, methods=["POST"]),
    Route("/console/admin/users/{user_id}/delete", user_delete, methods=["POST"]),
    Route("/console/admin/users/{user_id}/memberships", membership_put, methods=["POST"]),
    Route("/console/admin/users/{user_id}/memberships/{tenant_id}", membership_put, methods=["POST"]),
    Route("/console/admin/users/{user_id}/memberships/{tenant_id}/remove", membership_remove, methods=["POST"]),
    Route("/console/admin/users/{user_id}/reset-link", user_reset_link, methods=["POST"]),
    Route("/console/admin/users/{user_id}/login-link", user_login_link, methods=["POST"]),
    Route("/console/admin/users/{user_id}/logout", user_logout, methods=["POST"]),
]
