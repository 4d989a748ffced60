"""Users and memberships: the only code that writes the ``users`` and ``memberships`` tables.

Changes that alter what a key may do (a user's limits, disabling a user, leaving a tenant) bump the config
version in the same transaction, so every replica's key cache follows within the sync interval. Leaving a
tenant revokes the user's keys in that tenant in the same transaction: a key never outlives its owner's access.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from tenantgate.storage import schema
from tenantgate.storage.repos import DuplicateName, _bump_version, new_id
from tenantgate.storage.rows import LimitFields, MembershipRow, UserRow, as_utc, storable, utcnow

_MAX_TENANT_NAME = 200  # tenants.name is VARCHAR(200)


def user_from(row: Any) -> UserRow:
    return UserRow(
        id=row.id,
        email=row.email,
        name=row.name,
        password_hash=row.password_hash,
        is_admin=bool(row.is_admin),
        disabled_at=as_utc(row.disabled_at),
        created_at=as_utc(row.created_at) or utcnow(),
        password_changed_at=as_utc(row.password_changed_at),
        limits=LimitFields.from_row(row),
    )


class UserRepo:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @asynccontextmanager
    async def _unique_email(self, email: str | None) -> AsyncIterator[None]:
        """The unique index refusing ``email`` (a concurrent writer committed it after our check) answers like
        the check: :class:`DuplicateName`, not a database error."""
        try:
            yield
        except sa.exc.IntegrityError:
            if email is not None and await self.get_by_email(email) is not None:
                raise DuplicateName("a user with this email already exists") from None
            raise

    async def create(
        self,
        *,
        email: str,
        password_hash: str | None,
        name: str | None = None,
        is_admin: bool = False,
        limits: LimitFields | None = None,
        tenant_name: str | None = None,
        tenant_limits: LimitFields | None = None,
        join: tuple[str, str] | None = None,
    ) -> UserRow:
        """A new user; with ``tenant_name`` also a personal tenant it owns, with ``join`` a ``(tenant_id, role)``
        membership: all in one transaction, so a failed sign-up leaves no half-made user or tenant."""
        user_id = new_id("usr")
        now = utcnow()
        users = schema.users
        async with self._unique_email(email), self._engine.begin() as conn:
            if await conn.scalar(sa.select(users.c.id).where(users.c.email == email)):
                raise DuplicateName("a user with this email already exists")
            await conn.execute(
                users.insert().values(
                    id=user_id,
                    email=email,
                    name=name,
                    password_hash=password_hash,
                    is_admin=is_admin,
                    created_at=now,
                    password_changed_at=now if password_hash else None,
                    **(limits or LimitFields()).as_dict(),
                )
            )
            if tenant_name is not None:
                tenant_id = new_id("ten")
                tenant_name = tenant_name[:_MAX_TENANT_NAME]
                taken = await conn.scalar(sa.select(schema.tenants.c.id).where(schema.tenants.c.name == tenant_name))
                if taken:  # the suffix keeps the name within its column
                    suffix = f" ({user_id[-6:]})"
                    tenant_name = tenant_name[: _MAX_TENANT_NAME - len(suffix)] + suffix
                await conn.execute(
                    schema.tenants.insert().values(
                        id=tenant_id, name=tenant_name, created_at=now, **(tenant_limits or LimitFields()).as_dict()
                    )
                )
                await conn.execute(
                    schema.memberships.insert().values(
                        user_id=user_id, tenant_id=tenant_id, role="owner", created_at=now
                    )
                )
            if join is not None:
                await conn.execute(
                    schema.memberships.insert().values(user_id=user_id, tenant_id=join[0], role=join[1], created_at=now)
                )
            await _bump_version(conn)
        found = await self.get(user_id)
        assert found is not None
        return found

    async def get(self, user_id: str) -> UserRow | None:
        if not storable(user_id):
            return None
        async with self._engine.connect() as conn:
            row = (await conn.execute(schema.users.select().where(schema.users.c.id == user_id))).first()
        return user_from(row) if row else None

    async def get_by_email(self, email: str) -> UserRow | None:
        if not storable(email):
            return None
        async with self._engine.connect() as conn:
            row = (await conn.execute(schema.users.select().where(schema.users.c.email == email))).first()
        return user_from(row) if row else None

    async def list(self) -> list[UserRow]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(schema.users.select().order_by(schema.users.c.created_at))
        return [user_from(row) for row in rows]

    async def count(self) -> int:
        async with self._engine.connect() as conn:
            return int(await conn.scalar(sa.select(sa.func.count()).select_from(schema.users)) or 0)

    async def update(self, user_id: str, changes: Mapping[str, Any]) -> UserRow | None:
        values = dict(changes)
        if "email" in values:
            async with self._engine.connect() as conn:
                users = schema.users
                clash = await conn.scalar(
                    sa.select(users.c.id).where(users.c.email == values["email"], users.c.id != user_id)
                )
            if clash:
                raise DuplicateName("a user with this email already exists")
        if values:
            async with self._unique_email(values.get("email")), self._engine.begin() as conn:
                table = schema.users
                await conn.execute(table.update().where(table.c.id == user_id).values(**values))
                await _bump_version(conn)
        return await self.get(user_id)

    async def set_password(self, user_id: str, password_hash: str) -> None:
        """A new password revokes every session of the user in the same transaction."""
        now = utcnow()
        async with self._engine.begin() as conn:
            await conn.execute(
                schema.users.update()
                .where(schema.users.c.id == user_id)
                .values(password_hash=password_hash, password_changed_at=now)
            )
            sessions = schema.sessions
            await conn.execute(
                sessions.update()
                .where(sessions.c.user_id == user_id, sessions.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )

    async def delete(self, user_id: str) -> bool:
        """The user, its memberships, sessions and keys go (usage records stay: they are the ledger)."""
        async with self._engine.begin() as conn:
            for table in (schema.api_keys, schema.sessions, schema.memberships, schema.one_time_tokens):
                await conn.execute(table.delete().where(table.c.user_id == user_id))
            result = await conn.execute(schema.users.delete().where(schema.users.c.id == user_id))
            await _bump_version(conn)
        return bool(result.rowcount)


def _membership(row: Any) -> MembershipRow:
    return MembershipRow(
        user_id=row.user_id,
        tenant_id=row.tenant_id,
        role=row.role,
        created_at=as_utc(row.created_at) or utcnow(),
        tenant_name=row.tenant_name,
        user_email=row.user_email,
    )


class MembershipRepo:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    def _query(self) -> sa.Select[Any]:
        members, tenants, users = schema.memberships, schema.tenants, schema.users
        return (
            sa.select(members, tenants.c.name.label("tenant_name"), users.c.email.label("user_email"))
            .join(tenants, tenants.c.id == members.c.tenant_id)
            .join(users, users.c.id == members.c.user_id)
        )

    async def of_user(self, user_id: str) -> list[MembershipRow]:
        query = self._query().where(schema.memberships.c.user_id == user_id).order_by(schema.memberships.c.created_at)
        async with self._engine.connect() as conn:
            return [_membership(row) for row in await conn.execute(query)]

    async def of_tenant(self, tenant_id: str) -> list[MembershipRow]:
        if not storable(tenant_id):
            return []
        members = schema.memberships
        query = self._query().where(members.c.tenant_id == tenant_id).order_by(members.c.created_at)
        async with self._engine.connect() as conn:
            return [_membership(row) for row in await conn.execute(query)]

    async def get(self, user_id: str, tenant_id: str) -> MembershipRow | None:
        if not (storable(user_id) and storable(tenant_id)):
            return None
        members = schema.memberships
        query = self._query().where(members.c.user_id == user_id, members.c.tenant_id == tenant_id)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return _membership(row) if row else None

    async def put(self, user_id: str, tenant_id: str, role: str) -> MembershipRow:
        """Add the membership or change its role."""
        members = schema.memberships
        async with self._engine.begin() as conn:
            updated = await conn.execute(
                members.update().where(members.c.user_id == user_id, members.c.tenant_id == tenant_id).values(role=role)
            )
            if not updated.rowcount:
                await conn.execute(
                    members.insert().values(user_id=user_id, tenant_id=tenant_id, role=role, created_at=utcnow())
                )
            await _bump_version(conn)
        found = await self.get(user_id, tenant_id)
        assert found is not None
        return found

    async def remove(self, user_id: str, tenant_id: str) -> bool:
        """Leave the tenant; the user's keys in it are revoked in the same transaction."""
        members, keys = schema.memberships, schema.api_keys
        async with self._engine.begin() as conn:
            result = await conn.execute(
                members.delete().where(members.c.user_id == user_id, members.c.tenant_id == tenant_id)
            )
            await conn.execute(
                keys.update()
                .where(keys.c.user_id == user_id, keys.c.tenant_id == tenant_id, keys.c.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
            await _bump_version(conn)
        return bool(result.rowcount)
