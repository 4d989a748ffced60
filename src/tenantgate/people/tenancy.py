"""Who may do what in a tenant, and managing its members.

Owners and admins of a tenant manage its members and keys; only owners grant or remove ownership, and a tenant
never loses its last owner. A tenant the caller does not belong to answers 404 (not 403), so ids of other
tenants are never confirmed. Platform admins may do everything.
"""

from __future__ import annotations

from tenantgate.core.errors import Conflict, Forbidden, InvalidRequest, NotFound
from tenantgate.people.context import PeopleContext
from tenantgate.storage.rows import ROLES, MembershipRow, UserRow

MANAGERS = frozenset({"owner", "admin"})


class Tenancy:
    def __init__(self, context: PeopleContext) -> None:
        self._ctx = context
        self._members = context.repos.memberships

    async def role_in(self, user: UserRow, tenant_id: str) -> str | None:
        """The user's role in the tenant (platform admins count as owners everywhere), or None."""
        membership = await self._members.get(user.id, tenant_id)
        if membership is not None:
            return membership.role
        if user.is_admin and await self._ctx.repos.tenants.get(tenant_id) is not None:
            return "owner"
        return None

    async def require_member(self, user: UserRow, tenant_id: str) -> str:
        role = await self.role_in(user, tenant_id)
        if role is None:
            raise NotFound(f"No tenant with id '{tenant_id}'.", param="tenant_id", code="tenant_not_found")
        return role

    async def require_manager(self, user: UserRow, tenant_id: str) -> str:
        role = await self.require_member(user, tenant_id)
        if role not in MANAGERS:
            raise Forbidden("Only the tenant's owners and admins may do this.", code="tenant_role_required")
        return role

    async def members(self, user: UserRow, tenant_id: str) -> list[MembershipRow]:
        await self.require_manager(user, tenant_id)
        return await self._members.of_tenant(tenant_id)

    async def set_role(self, actor: UserRow, tenant_id: str, user_id: str, role: str) -> MembershipRow:
        actor_role = await self.require_manager(actor, tenant_id)
        if role not in ROLES:
            raise InvalidRequest(f"role must be one of {', '.join(ROLES)}.", param="role")
        current = await self._members.get(user_id, tenant_id)
        if current is None:
            raise NotFound(f"No member with id '{user_id}' in this tenant.", code="member_not_found")
        if actor_role != "owner" and "owner" in (role, current.role):
            raise Forbidden("Only owners grant or take ownership.", code="owner_required")
        if current.role == "owner" and role != "owner":
            await self._keep_an_owner(tenant_id, user_id)
        updated = await self._members.put(user_id, tenant_id, role)
        await self._ctx.repos.audit.record(
            f"user:{actor.email}", "member.role", "tenant", tenant_id, {"user_id": user_id, "role": role}
        )
        return updated

    async def remove(self, actor: UserRow, tenant_id: str, user_id: str) -> None:
        """Remove a member (or leave, for oneself); the member's keys in the tenant are revoked."""
        if actor.id == user_id:
            await self.require_member(actor, tenant_id)
        else:
            actor_role = await self.require_manager(actor, tenant_id)
        current = await self._members.get(user_id, tenant_id)
        if current is None:
            raise NotFound(f"No member with id '{user_id}' in this tenant.", code="member_not_found")
        if actor.id != user_id and current.role == "owner" and actor_role != "owner":
            raise Forbidden("Only owners remove owners.", code="owner_required")
        if current.role == "owner":
            await self._keep_an_owner(tenant_id, user_id)
        await self._members.remove(user_id, tenant_id)
        await self._ctx.repos.audit.record(
            f"user:{actor.email}", "member.remove", "tenant", tenant_id, {"user_id": user_id}
        )
        await self._ctx.reload()

    async def _keep_an_owner(self, tenant_id: str, leaving: str) -> None:
        owners = [m for m in await self._members.of_tenant(tenant_id) if m.role == "owner" and m.user_id != leaving]
        if not owners:
            raise Conflict("A tenant needs at least one owner; make someone else owner first.", code="last_owner")
