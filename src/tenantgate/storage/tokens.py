"""Sessions and single-use tokens (invites, password resets, login links).

Both are stored by the SHA-256 of a random token, never the token: whoever reads the database cannot log in or
sign up with what they read. Consuming a single-use token is one conditional ``UPDATE`` (unused and unexpired),
so two concurrent attempts cannot both succeed, on SQLite or PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from tenantgate.storage import schema
from tenantgate.storage.repos import new_id
from tenantgate.storage.rows import SessionRow, TokenRow, as_utc, storable, utcnow


def _session(row: Any) -> SessionRow:
    return SessionRow(
        id=row.id,
        user_id=row.user_id,
        created_at=as_utc(row.created_at) or utcnow(),
        expires_at=as_utc(row.expires_at) or utcnow(),
        last_seen_at=as_utc(row.last_seen_at) or utcnow(),
        revoked_at=as_utc(row.revoked_at),
        client=row.client,
    )


class SessionRepo:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create(self, session_hash: str, user_id: str, expires_at: datetime, client: str | None) -> None:
        now = utcnow()
        async with self._engine.begin() as conn:
            await conn.execute(
                schema.sessions.insert().values(
                    id=session_hash,
                    user_id=user_id,
                    created_at=now,
                    expires_at=expires_at,
                    last_seen_at=now,
                    client=client,
                )
            )

    async def get(self, session_hash: str) -> SessionRow | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(schema.sessions.select().where(schema.sessions.c.id == session_hash))).first()
        return _session(row) if row else None

    async def of_user(self, user_id: str) -> list[SessionRow]:
        table = schema.sessions
        query = (
            table.select()
            .where(table.c.user_id == user_id, table.c.revoked_at.is_(None), table.c.expires_at > utcnow())
            .order_by(table.c.last_seen_at.desc())
        )
        async with self._engine.connect() as conn:
            return [_session(row) for row in await conn.execute(query)]

    async def touch(self, session_hash: str) -> None:
        table = schema.sessions
        async with self._engine.begin() as conn:
            await conn.execute(table.update().where(table.c.id == session_hash).values(last_seen_at=utcnow()))

    async def revoke(self, session_hash: str) -> None:
        table = schema.sessions
        async with self._engine.begin() as conn:
            await conn.execute(
                table.update()
                .where(table.c.id == session_hash, table.c.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )

    async def revoke_user(self, user_id: str) -> int:
        table = schema.sessions
        async with self._engine.begin() as conn:
            result = await conn.execute(
                table.update()
                .where(table.c.user_id == user_id, table.c.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
        return int(result.rowcount or 0)

    async def purge_expired(self, before: datetime) -> int:
        table = schema.sessions
        async with self._engine.begin() as conn:
            result = await conn.execute(table.delete().where(table.c.expires_at < before))
        return int(result.rowcount or 0)


def _token(row: Any) -> TokenRow:
    return TokenRow(
        id=row.id,
        purpose=row.purpose,
        user_id=row.user_id,
        email=row.email,
        tenant_id=row.tenant_id,
        role=row.role,
        created_by=row.created_by,
        created_at=as_utc(row.created_at) or utcnow(),
        expires_at=as_utc(row.expires_at) or utcnow(),
        used_at=as_utc(row.used_at),
        used_by=row.used_by,
    )


class OneTimeTokenRepo:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create(
        self,
        token_hash: str,
        *,
        purpose: str,
        created_by: str,
        expires_at: datetime,
        user_id: str | None = None,
        email: str | None = None,
        tenant_id: str | None = None,
        role: str | None = None,
    ) -> TokenRow:
        token_id = new_id(purpose[:3])
        async with self._engine.begin() as conn:
            await conn.execute(
                schema.one_time_tokens.insert().values(
                    id=token_id,
                    token_hash=token_hash,
                    purpose=purpose,
                    user_id=user_id,
                    email=email,
                    tenant_id=tenant_id,
                    role=role,
                    created_by=created_by,
                    created_at=utcnow(),
                    expires_at=expires_at,
                )
            )
        found = await self.find(token_hash, purpose)
        assert found is not None
        return found

    async def find(self, token_hash: str, purpose: str) -> TokenRow | None:
        """The token if it exists for this purpose (used or not: callers tell the person which)."""
        table = schema.one_time_tokens
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(table.select().where(table.c.token_hash == token_hash, table.c.purpose == purpose))
            ).first()
        return _token(row) if row else None

    async def consume(self, token_hash: str, purpose: str, used_by: str | None = None) -> TokenRow | None:
        """Mark the token used, only if it is unused and unexpired; the token, or None when that failed."""
        table = schema.one_time_tokens
        now = utcnow()
        async with self._engine.begin() as conn:
            result = await conn.execute(
                table.update()
                .where(
                    table.c.token_hash == token_hash,
                    table.c.purpose == purpose,
                    table.c.used_at.is_(None),
                    table.c.expires_at > now,
                )
                .values(used_at=now, used_by=used_by)
            )
            if result.rowcount != 1:
                return None
        return await self.find(token_hash, purpose)

    async def release(self, token_hash: str, purpose: str) -> None:
        """Make a consumed token usable again (the sign-up it was consumed for failed)."""
        table = schema.one_time_tokens
        async with self._engine.begin() as conn:
            await conn.execute(
                table.update()
                .where(table.c.token_hash == token_hash, table.c.purpose == purpose)
                .values(used_at=None, used_by=None)
            )

    async def list(self, purpose: str, tenant_id: str | None = None) -> list[TokenRow]:
        table = schema.one_time_tokens
        query = table.select().where(table.c.purpose == purpose).order_by(table.c.created_at.desc())
        if tenant_id is not None:
            if not storable(tenant_id):
                return []
            query = query.where(table.c.tenant_id == tenant_id)
        async with self._engine.connect() as conn:
            return [_token(row) for row in await conn.execute(query)]

    async def purge_expired(self, before: datetime) -> int:
        table = schema.one_time_tokens
        async with self._engine.begin() as conn:
            result = await conn.execute(table.delete().where(table.c.expires_at < before))
        return int(result.rowcount or 0)

    async def revoke(self, token_id: str) -> bool:
        """Expire an unused token now."""
        table = schema.one_time_tokens
        async with self._engine.begin() as conn:
            result = await conn.execute(
                table.update().where(table.c.id == token_id, table.c.used_at.is_(None)).values(expires_at=utcnow())
            )
        return bool(result.rowcount)
