"""Platform admin routes for people: ``/admin/users``, their memberships and sessions, ``/admin/invites``, and a
read-only view of the effective settings. Behind the admin key or a platform admin's session or key."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request

from tenantgate.admin.api import Admin, _found
from tenantgate.admin.auth import admin_actor
from tenantgate.admin.schemas import path_id
from tenantgate.core.errors import Conflict, InvalidRequest
from tenantgate.people.access import people_of
from tenantgate.people.me_api import invite_answer
from tenantgate.people.policy import normal_email
from tenantgate.people.schemas import AdminInviteIn, RoleIn, UserCreate, UserUpdate
from tenantgate.people.service import membership_out, user_out
from tenantgate.storage.repos import DuplicateName
from tenantgate.storage.rows import UserRow, utcnow

router = APIRouter(prefix="/admin", tags=["people"])


async def _user(request: Request, user_id: str) -> UserRow:
    path_id(user_id, "user_id")
    return _found(await people_of(request).ctx.repos.users.get(user_id), "user", user_id)


async def _reset_link(request: Request, user: UserRow) -> dict[str, Any]:
    accounts = people_of(request).accounts
    ttl = people_of(request).ctx.settings.reset_ttl
    token = await accounts.create_link(user, "reset", admin_actor(request), ttl)
    url = accounts.link(str(request.base_url), "/console/reset?token=", token)
    mailer = people_of(request).ctx.mailer
    if mailer is not None:
        await mailer(user.email, "Set your tenantgate password", f"Open this link to set your password:\n\n{url}\n")
    return {"url": url, "token": token, "expires_at": (utcnow() + ttl).isoformat(), "mailed": mailer is not None}


@router.get("/users", summary="List users")
async def list_users(_admin: Admin, request: Request) -> dict[str, Any]:
    return {"object": "list", "data": [user_out(row) for row in await people_of(request).ctx.repos.users.list()]}


@router.post("/users", status_code=201, summary="Create a user (without a password: a reset link to hand over)")
async def create_user(body: UserCreate, admin: Admin, request: Request) -> dict[str, Any]:
    people = people_of(request)
    email = normal_email(body.email)
    if body.password is not None:
        people.accounts.check_password(body.password)
    if body.tenant_id is not None and await admin.tenants.get(body.tenant_id) is None:
        raise InvalidRequest(f"No tenant with id '{body.tenant_id}'.", param="tenant_id", code="tenant_not_found")
    try:
        row = await people.ctx.repos.users.create(
            email=email,
            password_hash=await people.ctx.passwords.hash(body.password) if body.password else None,
            name=body.name,
            is_admin=body.is_admin,
            limits=body.limit_fields(people.ctx.settings.user_limits_defaults),
            tenant_name=None if body.tenant_id else email,
            tenant_limits=people.ctx.settings.personal_tenant_limits,
            join=(body.tenant_id, body.role) if body.tenant_id else None,
        )
    except DuplicateName:
        raise Conflict("A user with this email already exists.", param="email", code="email_taken") from None
    await people.ctx.repos.audit.record(
        admin_actor(request), "user.create", "user", row.id, body.model_dump(exclude={"password"})
    )
    await admin.reload()
    out = user_out(row)
    if body.password is None:
        out["reset"] = await _reset_link(request, row)
    return out


@router.get("/users/{user_id}", summary="A user, with memberships and live usage of its limits")
async def get_user(user_id: str, _admin: Admin, request: Request) -> dict[str, Any]:
    row = await _user(request, user_id)
    people = people_of(request)
    memberships = await people.ctx.repos.memberships.of_user(row.id)
    return {
        **user_out(row),
        "memberships": [membership_out(m) for m in memberships],
        "usage": await people.ctx.limits_usage(f"user:{row.id}", row.limits),
    }


@router.patch("/users/{user_id}", summary="Update a user's email, name, admin flag, limits; disable or enable")
async def update_user(user_id: str, body: UserUpdate, admin: Admin, request: Request) -> dict[str, Any]:
    await _user(request, user_id)
    people = people_of(request)
    changes: dict[str, Any] = body.model_dump(exclude_unset=True)
    if changes.get("email") is not None:
        changes["email"] = normal_email(changes["email"])
    for name in ("email", "is_admin", "disabled"):  # a null "disabled" would silently enable the user
        if name in changes and changes[name] is None:
            raise InvalidRequest(f"{name} cannot be null.", param=name)
    if "disabled" in changes:
        changes["disabled_at"] = utcnow() if changes.pop("disabled") else None
    try:
        row = await people.ctx.repos.users.update(user_id, changes)
    except DuplicateName:
        raise Conflict("A user with this email already exists.", param="email", code="email_taken") from None
    if changes.get("disabled_at") is not None:
        await people.ctx.repos.sessions.revoke_user(user_id)
    await admin.reload()
    await people.ctx.repos.audit.record(
        admin_actor(request), "user.update", "user", user_id, body.model_dump(mode="json", exclude_unset=True)
    )
    return user_out(_found(row, "user", user_id))


@router.delete("/users/{user_id}", summary="Delete a user, its memberships, sessions and keys")
async def delete_user(user_id: str, admin: Admin, request: Request) -> dict[str, Any]:
    await _user(request, user_id)
    people = people_of(request)
    await people.ctx.repos.users.delete(user_id)
    await admin.reload()
    await people.ctx.repos.audit.record(admin_actor(request), "user.delete", "user", user_id, None)
    return {"id": user_id, "deleted": True}


@router.post("/users/{user_id}/reset-link", status_code=201, summary="A single-use password reset link")
async def reset_link(user_id: str, _admin: Admin, request: Request) -> dict[str, Any]:
    return await _reset_link(request, await _user(request, user_id))


@router.post("/users/{user_id}/login-link", status_code=201, summary="A single-use login link (15 minutes)")
async def login_link(user_id: str, _admin: Admin, request: Request) -> dict[str, Any]:
    user = await _user(request, user_id)
    accounts = people_of(request).accounts
    token = await accounts.create_link(user, "login", admin_actor(request), timedelta(minutes=15))
    return {"url": accounts.link(str(request.base_url), "/console/link?token=", token), "token": token}


@router.delete("/users/{user_id}/sessions", summary="Log a user out everywhere")
async def end_sessions(user_id: str, _admin: Admin, request: Request) -> dict[str, Any]:
    await _user(request, user_id)
    revoked = await people_of(request).ctx.repos.sessions.revoke_user(user_id)
    await people_of(request).ctx.repos.audit.record(admin_actor(request), "user.logout", "user", user_id, None)
    return {"revoked": revoked}


@router.put("/users/{user_id}/memberships/{tenant_id}", summary="Add a user to a tenant or change its role")
async def put_membership(user_id: str, tenant_id: str, body: RoleIn, admin: Admin, request: Request) -> dict[str, Any]:
    await _user(request, user_id)
    path_id(tenant_id, "tenant_id")
    _found(await admin.tenants.get(tenant_id), "tenant", tenant_id)
    people = people_of(request)
    row = await people.ctx.repos.memberships.put(user_id, tenant_id, body.role)
    await admin.reload()
    await people.ctx.repos.audit.record(
        admin_actor(request), "member.put", "tenant", tenant_id, {"user_id": user_id, "role": body.role}
    )
    return membership_out(row)


@router.delete("/users/{user_id}/memberships/{tenant_id}", summary="Remove a user from a tenant (revokes its keys)")
async def delete_membership(user_id: str, tenant_id: str, admin: Admin, request: Request) -> dict[str, Any]:
    await _user(request, user_id)
    people = people_of(request)
    removed = await people.ctx.repos.memberships.remove(user_id, path_id(tenant_id, "tenant_id"))
    _found(True if removed else None, "membership", tenant_id)
    await admin.reload()
    await people.ctx.repos.audit.record(
        admin_actor(request), "member.remove", "tenant", tenant_id, {"user_id": user_id}
    )
    return {"user_id": user_id, "tenant_id": tenant_id, "removed": True}


@router.post("/invites", status_code=201, summary="A single-use invite link (optionally for an email and a tenant)")
async def create_invite(body: AdminInviteIn, _admin: Admin, request: Request) -> dict[str, Any]:
    return await invite_answer(
        request, admin_actor(request), body.email, body.tenant_id, body.role, body.expires_in_hours
    )


@router.get("/invites", summary="Invites, newest first (never their tokens)")
async def list_invites(_admin: Admin, request: Request) -> dict[str, Any]:
    rows = await people_of(request).ctx.repos.tokens.list("invite")
    now = utcnow()
    return {
        "object": "list",
        "data": [
            {
                "id": r.id,
                "email": r.email,
                "tenant_id": r.tenant_id,
                "role": r.role,
                "created_by": r.created_by,
                "created_at": r.created_at.isoformat(),
                "expires_at": r.expires_at.isoformat(),
                "used": r.used_at is not None,
                "state": "used" if r.used_at else ("expired" if r.expires_at <= now else "open"),
            }
            for r in rows
        ],
    }


@router.delete("/invites/{invite_id}", summary="Withdraw an unused invite")
async def delete_invite(invite_id: str, _admin: Admin, request: Request) -> dict[str, Any]:
    revoked = await people_of(request).ctx.repos.tokens.revoke(path_id(invite_id, "invite_id"))
    _found(True if revoked else None, "invite", invite_id)
    await people_of(request).ctx.repos.audit.record(admin_actor(request), "invite.revoke", "invite", invite_id, None)
    return {"id": invite_id, "revoked": True}
