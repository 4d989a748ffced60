"""The people services as one object on ``app.state.people``: what the JSON API and the console both call."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from tenantgate.core.errors import NotFound
from tenantgate.limits import period_bounds
from tenantgate.people.accounts import Accounts
from tenantgate.people.context import PeopleContext
from tenantgate.people.keys import PersonalKeys
from tenantgate.people.tenancy import MANAGERS, Tenancy
from tenantgate.storage.rows import MembershipRow, UserRow
from tenantgate.storage.usage import UsageFilter


def user_out(user: UserRow) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "is_admin": user.is_admin,
        "disabled": not user.active,
        "created_at": user.created_at.isoformat(),
        **user.limits.as_dict(),
    }


def membership_out(row: MembershipRow) -> dict[str, Any]:
    return {
        "user_id": row.user_id,
        "email": row.user_email,
        "tenant_id": row.tenant_id,
        "tenant_name": row.tenant_name,
        "role": row.role,
        "created_at": row.created_at.isoformat(),
    }


class People:
    def __init__(self, context: PeopleContext, *, cookie_secure: str = "auto") -> None:
        self.ctx = context
        self.cookie_secure = cookie_secure
        self.accounts = Accounts(context)
        self.tenancy = Tenancy(context)
        self.keys = PersonalKeys(context, self.tenancy)

    async def profile(self, user: UserRow, csrf_token: str | None) -> dict[str, Any]:
        """``GET /me``: the user, memberships, own limits and their live usage, spend in the budget period."""
        memberships = await self.ctx.repos.memberships.of_user(user.id)
        period = user.limits.budget_period or "monthly"
        start, end = period_bounds(period, time.time())  # type: ignore[arg-type]
        await self.ctx.flush_usage()
        spent = await self.ctx.repos.usage.user_spent_since(user.id, datetime.fromtimestamp(start, UTC))
        return {
            "user": user_out(user),
            "memberships": [membership_out(row) for row in memberships],
            "limits": user.limits.as_dict(),
            "usage": await self.ctx.limits_usage(f"user:{user.id}", user.limits),
            "spend": {
                "period": period,
                "period_start": datetime.fromtimestamp(start, UTC).isoformat(),
                "period_end": None if end == float("inf") else datetime.fromtimestamp(end, UTC).isoformat(),
                "spent_usd": spent,
                "budget_usd": user.limits.budget_usd,
            },
            "csrf_token": csrf_token,
        }

    async def visible_usage(
        self, user: UserRow, *, tenant_id: str | None, key_id: str | None, base: UsageFilter
    ) -> UsageFilter:
        """The usage a user may see: its own keys; with ``tenant_id`` of a tenant it manages, the whole tenant.
        A key or tenant outside that answers 404, like an unknown one."""
        manages = False
        if tenant_id is not None:
            role = await self.tenancy.require_member(user, tenant_id)
            manages = role in MANAGERS
        key_ids: tuple[str, ...] | None = None
        if not manages:
            key_ids = tuple(row.id for row in await self.keys.mine(user))
        if key_id is not None:
            key = await self.ctx.repos.keys.get(key_id)
            visible = key is not None and (
                key.user_id == user.id or (manages and key.tenant_id == tenant_id) or user.is_admin
            )
            if not visible:
                raise NotFound(f"No key with id '{key_id}'.", param="key_id", code="key_not_found")
            key_ids = None  # the one key, visible to the caller: its whole usage
        return UsageFilter(
            tenant_id=tenant_id,
            key_id=key_id,
            model=base.model,
            since=base.since,
            until=base.until,
            key_ids=key_ids,
        )
