"""Turns a presented API key into a :class:`Principal`, without touching the database per request.

Keys are cached by public id for ``auth_cache_ttl`` seconds; unknown ids are cached negatively for a short time
so a flood of bad keys cannot hammer the database. Every admin change bumps the config version and the sync
loop calls :meth:`Authenticator.invalidate`, so a revoked key is refused within the sync interval.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from tenantgate.auth.keys import lookup_parts
from tenantgate.core.errors import AuthenticationFailed, PermissionDenied
from tenantgate.core.secrets import same_secret, sha256_hex
from tenantgate.storage.repos import KeyRepo
from tenantgate.storage.rows import KeyRow, LimitFields, TenantRow


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key, its tenant, what it may use, and the limits of each level."""

    key_id: str
    key_name: str | None
    tenant_id: str
    tenant_name: str
    models: frozenset[str] | None
    key_limits: LimitFields
    tenant_limits: LimitFields

    def may_use(self, model: str) -> bool:
        return self.models is None or model in self.models

    def check_model(self, model: str) -> None:
        if not self.may_use(model):
            raise PermissionDenied(f"This API key is not allowed to use the model '{model}'.", param="model")


@dataclass(frozen=True, slots=True)
class _Entry:
    secret_hash: str
    principal: Principal
    expires_at: float | None
    revoked: bool
    cached_until: float


_MISSING = object()


class Authenticator:
    def __init__(self, keys: KeyRepo, *, ttl: float = 60.0, negative_ttl: float = 1.0) -> None:
        self._keys = keys
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._cache: dict[str, _Entry | float] = {}
        self._loading: dict[str, asyncio.Future[tuple[KeyRow, TenantRow] | None]] = {}

    def invalidate(self) -> None:
        self._cache.clear()

    async def authenticate(self, presented: str | None) -> Principal:
        if not presented:
            raise AuthenticationFailed(
                "Missing API key. Send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'.",
                code="missing_api_key",
            )
        public_id, secret = lookup_parts(presented)
        now = time.monotonic()
        entry = self._cache.get(public_id)
        if (
            entry is None
            or (isinstance(entry, float) and entry < now)
            or (isinstance(entry, _Entry) and entry.cached_until < now)
        ):
            entry = await self._load(public_id, now)
        if isinstance(entry, float) or not same_secret(entry.secret_hash, sha256_hex(secret)):
            raise AuthenticationFailed("Invalid API key.")
        if entry.revoked:
            raise AuthenticationFailed("This API key has been revoked.", code="revoked_api_key")
        if entry.expires_at is not None and entry.expires_at <= time.time():
            raise AuthenticationFailed("This API key has expired.", code="expired_api_key")
        return entry.principal

    async def _load(self, public_id: str, now: float) -> _Entry | float:
        pending = self._loading.get(public_id)
        if pending is None:  # one database read per id, however many requests wait for it
            pending = asyncio.get_running_loop().create_future()
            self._loading[public_id] = pending
            try:
                pending.set_result(await self._keys.find_by_public_id(public_id))
            except BaseException as exc:
                pending.set_exception(exc)
                pending.exception()  # mark retrieved; the awaiting caller re-raises below
                raise
            finally:
                del self._loading[public_id]
        found = await pending
        entry = now + self._negative_ttl if found is None else _to_entry(*found, cached_until=now + self._ttl)
        self._cache[public_id] = entry
        return entry


def _to_entry(key: KeyRow, tenant: TenantRow, *, cached_until: float) -> _Entry:
    principal = Principal(
        key_id=key.id,
        key_name=key.name,
        tenant_id=tenant.id,
        tenant_name=tenant.name,
        models=frozenset(key.models) if key.models is not None else None,
        key_limits=key.limits,
        tenant_limits=tenant.limits,
    )
    return _Entry(
        secret_hash=key.secret_hash,
        principal=principal,
        expires_at=key.expires_at.timestamp() if key.expires_at else None,
        revoked=key.revoked_at is not None,
        cached_until=cached_until,
    )
