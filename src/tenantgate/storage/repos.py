"""Repositories for tenants, keys, backends and the config version: the only code that writes those tables.

Every write that changes what the hot path sees also bumps ``config_version`` in the same transaction, so
replicas polling that row drop their caches (see :mod:`tenantgate.edge.sync`).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tenantgate.storage import schema
from tenantgate.storage.rows import (
    MAX_PRICE_PER_MTOK,
    BackendModel,
    BackendRow,
    KeyRow,
    LimitFields,
    TenantRow,
    UserRow,
    as_utc,
    bounded,
    storable,
    utcnow,
)

CONFIG_VERSION = "config_version"


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


class DuplicateName(Exception):
    """A unique name is already taken."""


@dataclass(frozen=True, slots=True)
class KeyOwners:
    """A key with the tenant and (for a person's key) the user whose limits it also counts against."""

    key: KeyRow
    tenant: TenantRow
    user: UserRow | None = None


async def _bump_version(conn: AsyncConnection) -> None:
    table = schema.gateway_state
    result = await conn.execute(table.update().where(table.c.name == CONFIG_VERSION).values(value=table.c.value + 1))
    if result.rowcount == 0:
        await conn.execute(table.insert().values(name=CONFIG_VERSION, value=1))


def _tenant(row: Any) -> TenantRow:
    return TenantRow(row.id, row.name, as_utc(row.created_at) or utcnow(), LimitFields.from_row(row))


def _key(row: Any) -> KeyRow:
    return KeyRow(
        id=row.id,
        public_id=row.public_id,
        secret_hash=row.secret_hash,
        tenant_id=row.tenant_id,
        name=row.name,
        models=list(row.models) if row.models is not None else None,
        expires_at=as_utc(row.expires_at),
        revoked_at=as_utc(row.revoked_at),
        created_at=as_utc(row.created_at) or utcnow(),
        limits=LimitFields.from_row(row),
        user_id=row.user_id,
    )


def _model(entry: dict[str, Any]) -> BackendModel:
    """A stored model; a price outside ``[0, MAX_PRICE_PER_MTOK]`` (stored before prices were bounded) is read as
    the nearest bound, NaN as the maximum: an unknown price must not make requests free."""
    values = dict(entry)
    for name in ("input_price_per_mtok", "output_price_per_mtok"):
        if name in values:
            values[name] = bounded(float(values[name]), MAX_PRICE_PER_MTOK, nan=MAX_PRICE_PER_MTOK)
    return BackendModel(**values)


def _finite(value: Any) -> Any:
    """JSON options with non-finite floats (a timeout of ``1e999``) read as null (the default)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    return value


def _backend(row: Any) -> BackendRow:
    models = tuple(_model(entry) for entry in row.models)
    return BackendRow(
        row.id,
        row.name,
        row.base_url,
        row.api_key_encrypted,
        models,
        bool(row.enabled),
        as_utc(row.created_at) or utcnow(),
        options=_finite(dict(row.options or {})),
    )


async def budget_scopes(engine: AsyncEngine) -> list[tuple[str, LimitFields]]:
    """Every tenant, user and key that has a budget, as ``("tenant:<id>" | "user:<id>" | "key:<id>", limits)``."""
    found: list[tuple[str, LimitFields]] = []
    async with engine.connect() as conn:
        for prefix, table in (("tenant", schema.tenants), ("user", schema.users), ("key", schema.api_keys)):
            rows = await conn.execute(table.select().where(table.c.budget_usd.is_not(None)))
            found.extend((f"{prefix}:{row.id}", LimitFields.from_row(row)) for row in rows)
    return found


class StateRepo:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def config_version(self) -> int:
        table = schema.gateway_state
        async with self._engine.connect() as conn:
            value = await conn.scalar(sa.select(table.c.value).where(table.c.name == CONFIG_VERSION))
        return int(value or 0)

    async def bump(self) -> None:
        async with self._engine.begin() as conn:
            await _bump_version(conn)


class TenantRepo:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create(self, name: str, limits: LimitFields | None = None) -> TenantRow:
        row_id = new_id("ten")
        values = {"id": row_id, "name": name, "created_at": utcnow(), **(limits or LimitFields()).as_dict()}
        async with self._engine.begin() as conn:
            exists = await conn.scalar(sa.select(schema.tenants.c.id).where(schema.tenants.c.name == name))
            if exists:
                raise DuplicateName(f"a tenant named {name!r} already exists")
            await conn.execute(schema.tenants.insert().values(**values))
            await _bump_version(conn)
        found = await self.get(row_id)
        assert found is not None
        return found

    async def get(self, tenant_id: str) -> TenantRow | None:
        if not storable(tenant_id):  # nothing stored can match, and PostgreSQL would refuse the query
            return None
        async with self._engine.connect() as conn:
            row = (await conn.execute(schema.tenants.select().where(schema.tenants.c.id == tenant_id))).first()
        return _tenant(row) if row else None

    async def get_by_name(self, name: str) -> TenantRow | None:
        if not storable(name):
            return None
        async with self._engine.connect() as conn:
            row = (await conn.execute(schema.tenants.select().where(schema.tenants.c.name == name))).first()
        return _tenant(row) if row else None

    async def list(self) -> list[TenantRow]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(schema.tenants.select().order_by(schema.tenants.c.created_at))
        return [_tenant(row) for row in rows]

    async def update(self, tenant_id: str, changes: Mapping[str, Any]) -> TenantRow | None:
        if changes:
            async with self._engine.begin() as conn:
                if "name" in changes:
                    clash = await conn.scalar(
                        sa.select(schema.tenants.c.id).where(
                            schema.tenants.c.name == changes["name"], schema.tenants.c.id != tenant_id
                        )
                    )
                    if clash:
                        raise DuplicateName(f"a tenant named {changes['name']!r} already exists")
                table = schema.tenants
                await conn.execute(table.update().where(table.c.id == tenant_id).values(**changes))
                await _bump_version(conn)
        return await self.get(tenant_id)

    async def delete(self, tenant_id: str) -> bool:
        async with self._engine.begin() as conn:
            await conn.execute(schema.api_keys.delete().where(schema.api_keys.c.tenant_id == tenant_id))
            result = await conn.execute(schema.tenants.delete().where(schema.tenants.c.id == tenant_id))
            await _bump_version(conn)
        return bool(result.rowcount)


class KeyRepo:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create(
        self,
        *,
        tenant_id: str,
        public_id: str,
        secret_hash: str,
        name: str | None = None,
        models: list[str] | None = None,
        expires_at: datetime | None = None,
        limits: LimitFields | None = None,
        user_id: str | None = None,
    ) -> KeyRow:
        values = {
            "id": new_id("key"),
            "public_id": public_id,
            "secret_hash": secret_hash,
            "tenant_id": tenant_id,
            "name": name,
            "models": models,
            "expires_at": expires_at,
            "created_at": utcnow(),
            "user_id": user_id,
            **(limits or LimitFields()).as_dict(),
        }
        async with self._engine.begin() as conn:
            await conn.execute(schema.api_keys.insert().values(**values))
            await _bump_version(conn)
        found = await self.get(str(values["id"]))
        assert found is not None
        return found

    async def get(self, key_id: str) -> KeyRow | None:
        if not storable(key_id):
            return None
        async with self._engine.connect() as conn:
            row = (await conn.execute(schema.api_keys.select().where(schema.api_keys.c.id == key_id))).first()
        return _key(row) if row else None

    async def find_by_public_id(self, public_id: str) -> KeyOwners | None:
        """One query for the auth cache: the key, its tenant and its user (for their limits and state)."""
        if not storable(public_id):
            return None
        keys, tenants, users = schema.api_keys, schema.tenants, schema.users
        query = (
            sa.select(
                keys,
                *[col.label(f"t__{col.name}") for col in tenants.c],
                *[col.label(f"u__{col.name}") for col in users.c],
            )
            .join(tenants, tenants.c.id == keys.c.tenant_id)
            .outerjoin(users, users.c.id == keys.c.user_id)
            .where(keys.c.public_id == public_id)
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        mapping = row._mapping
        tenant_values = {col.name: mapping[f"t__{col.name}"] for col in tenants.c}
        user_values = {col.name: mapping[f"u__{col.name}"] for col in users.c}
        user = None
        if user_values["id"] is not None:
            from tenantgate.storage.people import user_from  # people builds on this module

            user = user_from(_Obj(user_values))
        return KeyOwners(_key(row), _tenant(_Obj(tenant_values)), user)

    async def list(self, tenant_id: str | None = None, user_id: str | None = None) -> list[KeyRow]:
        query = schema.api_keys.select().order_by(schema.api_keys.c.created_at)
        for column, value in (("tenant_id", tenant_id), ("user_id", user_id)):
            if value is not None:
                if not storable(value):
                    return []
                query = query.where(schema.api_keys.c[column] == value)
        async with self._engine.connect() as conn:
            rows = await conn.execute(query)
        return [_key(row) for row in rows]

    async def update(self, key_id: str, changes: Mapping[str, Any]) -> KeyRow | None:
        if changes:
            async with self._engine.begin() as conn:
                table = schema.api_keys
                await conn.execute(table.update().where(table.c.id == key_id).values(**changes))
                await _bump_version(conn)
        return await self.get(key_id)

    async def revoke(self, key_id: str) -> KeyRow | None:
        table = schema.api_keys
        async with self._engine.begin() as conn:
            await conn.execute(
                table.update().where(table.c.id == key_id, table.c.revoked_at.is_(None)).values(revoked_at=utcnow())
            )
            await _bump_version(conn)
        return await self.get(key_id)


class _Obj:
    """Attribute access over a dict, so joined tenant columns reuse the row converter."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


class BackendRepo:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    async def create(
        self,
        *,
        name: str,
        base_url: str,
        api_key_encrypted: str | None,
        models: list[BackendModel],
        options: dict[str, Any] | None = None,
    ) -> BackendRow:
        row_id = new_id("bk")
        values = {
            "id": row_id,
            "name": name,
            "base_url": base_url,
            "api_key_encrypted": api_key_encrypted,
            "models": [model.as_dict() for model in models],
            "options": options or {},
            "enabled": True,
            "created_at": utcnow(),
        }
        async with self._engine.begin() as conn:
            exists = await conn.scalar(sa.select(schema.backends.c.id).where(schema.backends.c.name == name))
            if exists:
                raise DuplicateName(f"a backend named {name!r} already exists")
            await conn.execute(schema.backends.insert().values(**values))
            await _bump_version(conn)
        found = await self.get(row_id)
        assert found is not None
        return found

    async def get(self, backend_id: str) -> BackendRow | None:
        if not storable(backend_id):
            return None
        table = schema.backends
        async with self._engine.connect() as conn:
            row = (await conn.execute(table.select().where(table.c.id == backend_id))).first()
        return _backend(row) if row else None

    async def list(self) -> list[BackendRow]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(schema.backends.select().order_by(schema.backends.c.created_at))
        return [_backend(row) for row in rows]

    async def update(self, backend_id: str, changes: Mapping[str, Any]) -> BackendRow | None:
        values = dict(changes)
        if "models" in values:
            values["models"] = [model.as_dict() for model in values["models"]]
        if values:
            table = schema.backends
            async with self._engine.begin() as conn:
                await conn.execute(table.update().where(table.c.id == backend_id).values(**values))
                await _bump_version(conn)
        return await self.get(backend_id)

    async def delete(self, backend_id: str) -> bool:
        table = schema.backends
        async with self._engine.begin() as conn:
            result = await conn.execute(table.delete().where(table.c.id == backend_id))
            await _bump_version(conn)
        return bool(result.rowcount)
