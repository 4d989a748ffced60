"""A person's own API keys: created within the caps of the user and the tenant, listed, revoked, rotated.

A key is bound by its own limits, its user's and its tenant's at request time anyway; the caps checked here
make the key's *stated* limits honest (a key cannot claim 1,000 rpm under a user capped at 10) and refuse a
budget larger than the user's or tenant's. Each person holds at most ``max_keys_per_user`` active keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from tenantgate.auth.keys import generate_key
from tenantgate.core.errors import Forbidden, InvalidRequest, NotFound, RateLimited
from tenantgate.people.context import PeopleContext
from tenantgate.people.tenancy import MANAGERS, Tenancy
from tenantgate.storage.rows import KeyRow, LimitFields, UserRow, utcnow

_CAPPED = ("rpm", "tpm", "max_concurrency", "budget_usd")


@dataclass(frozen=True, slots=True)
class KeyRequest:
    name: str | None = None
    tenant_id: str | None = None
    models: list[str] | None = None
    expires_at: datetime | None = None
    limits: LimitFields = field(default_factory=LimitFields)


def cap_problems(wanted: LimitFields, caps: dict[str, LimitFields]) -> list[str]:
    """Each limit of ``wanted`` that is above the same limit of a level in ``caps`` (name -> limits)."""
    problems = []
    for name in _CAPPED:
        value = getattr(wanted, name)
        if value is None:
            continue
        for level, limits in caps.items():
            cap = getattr(limits, name)
            if cap is not None and value > cap:
                problems.append(f"{name} {value} is above your {level}'s {cap}")
    return problems


def is_active(row: KeyRow) -> bool:
    return row.revoked_at is None and (row.expires_at is None or row.expires_at > utcnow())


class PersonalKeys:
    def __init__(self, context: PeopleContext, tenancy: Tenancy) -> None:
        self._ctx = context
        self._keys = context.repos.keys
        self._tenancy = tenancy

    async def _default_tenant(self, user: UserRow) -> str:
        memberships = await self._ctx.repos.memberships.of_user(user.id)
        if not memberships:
            raise InvalidRequest("You belong to no tenant yet; ask an admin for an invite.", code="no_tenant")
        owned = [m for m in memberships if m.role == "owner"]
        return (owned or memberships)[0].tenant_id

    async def create(self, user: UserRow, request: KeyRequest) -> tuple[KeyRow, str]:
        tenant_id = request.tenant_id or await self._default_tenant(user)
        await self._tenancy.require_member(user, tenant_id)
        tenant = await self._ctx.repos.tenants.get(tenant_id)
        if tenant is None:
            raise NotFound(f"No tenant with id '{tenant_id}'.", param="tenant_id", code="tenant_not_found")
        problems = cap_problems(request.limits, {"user": user.limits, "tenant": tenant.limits})
        if problems:
            raise InvalidRequest("The key's limits exceed your caps: " + "; ".join(problems) + ".", code="over_cap")
        if request.models is not None:
            known = set(self._ctx.known_models())
            unknown = sorted(set(request.models) - known)
            if unknown:
                raise InvalidRequest(f"Unknown model(s): {', '.join(unknown)}.", param="models", code="unknown_model")
        if request.expires_at is not None and request.expires_at <= utcnow():
            raise InvalidRequest("expires_at must be in the future.", param="expires_at")
        active = [row for row in await self._keys.list(user_id=user.id) if is_active(row)]
        if len(active) >= self._ctx.settings.max_keys_per_user:
            raise RateLimited(
                f"You already hold {len(active)} active keys (the most allowed); revoke one first.",
                code="too_many_keys",
            )
        row, secret = await self._issue(
            KeyRequest(request.name, tenant_id, request.models, request.expires_at, request.limits), user.id
        )
        await self._ctx.repos.audit.record(
            f"user:{user.email}", "key.create", "key", row.id, {"tenant_id": tenant_id, "name": request.name}
        )
        return row, secret

    async def _issue(self, settings: KeyRequest, user_id: str | None) -> tuple[KeyRow, str]:
        """A new key with these settings (``tenant_id`` set); the row and its secret, shown once."""
        assert settings.tenant_id is not None
        new = generate_key()
        row = await self._keys.create(
            tenant_id=settings.tenant_id,
            public_id=new.public_id,
            secret_hash=new.secret_hash,
            name=settings.name,
            models=settings.models,
            expires_at=settings.expires_at,
            limits=settings.limits,
            user_id=user_id,
        )
        return row, new.plaintext

    async def mine(self, user: UserRow) -> list[KeyRow]:
        return await self._keys.list(user_id=user.id)

    async def _owned(self, user: UserRow, key_id: str) -> KeyRow:
        """The user's key, or one in a tenant the user manages; 404 for anything else (ids are not confirmed)."""
        row = await self._keys.get(key_id)
        if row is not None and row.user_id != user.id:
            role = await self._tenancy.role_in(user, row.tenant_id)
            if role not in MANAGERS:
                row = None
        if row is None:
            raise NotFound(f"No key with id '{key_id}'.", code="key_not_found")
        return row

    async def revoke(self, user: UserRow, key_id: str) -> KeyRow:
        await self._owned(user, key_id)
        row = await self._keys.revoke(key_id)
        await self._ctx.reload()
        await self._ctx.repos.audit.record(f"user:{user.email}", "key.revoke", "key", key_id, None)
        assert row is not None
        return row

    async def rotate(self, user: UserRow, key_id: str) -> tuple[KeyRow, str]:
        """A new secret with the same settings; the old key is revoked at once. A person's key is rotated by that
        person only: the answer carries the new secret, and a manager holding it could spend as the owner (a
        manager revokes the key instead)."""
        old = await self._owned(user, key_id)
        if old.user_id is not None and old.user_id != user.id:
            raise Forbidden("Only the key's owner may rotate it; revoke it instead.", code="not_key_owner")
        if old.revoked_at is not None:
            raise InvalidRequest("This key is revoked; create a new one.", code="key_revoked")
        if old.expires_at is not None and old.expires_at <= utcnow():
            raise InvalidRequest("This key has expired; create a new one.", code="key_expired")
        same = KeyRequest(old.name, old.tenant_id, old.models, old.expires_at, old.limits)
        row, secret = await self._issue(same, old.user_id)
        await self._keys.revoke(key_id)
        await self._ctx.reload()
        await self._ctx.repos.audit.record(f"user:{user.email}", "key.rotate", "key", key_id, {"replaced_by": row.id})
        return row, secret

    async def of_tenant(self, user: UserRow, tenant_id: str) -> list[KeyRow]:
        await self._tenancy.require_manager(user, tenant_id)
        return await self._keys.list(tenant_id=tenant_id)
