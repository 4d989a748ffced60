"""Turns a presented API key into a :class:`Principal`, without touching the database per request.

Keys are cached by public id for ``auth_cache_ttl`` seconds; unknown ids are cached negatively for a short time
so repeated bad keys do not hammer the database. Every cache is bounded (a flood of unique bogus keys costs a
fixed amount of memory and at most ``max_lookups`` concurrent database reads), and a key that is not even
well-formed (see :func:`tenantgate.auth.keys.is_well_formed`) is refused before any lookup.

Every admin change bumps the config version and the sync loop calls :meth:`Authenticator.invalidate`, so a
revoked key is refused within the sync interval.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from tenantgate.auth.keys import is_well_formed, lookup_parts
from tenantgate.core.errors import AuthenticationFailed
from tenantgate.core.secrets import same_secret, sha256_hex
from tenantgate.storage.repos import KeyOwners, KeyRepo
from tenantgate.storage.rows import LimitFields


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key, its tenant, its user (for a person's key), what it may use, and the limits of
    each level (key, user, tenant)."""

    key_id: str
    key_name: str | None
    tenant_id: str
    tenant_name: str
    models: frozenset[str] | None
    key_limits: LimitFields
    tenant_limits: LimitFields
    user_id: str | None = None
    user_limits: LimitFields = field(default_factory=LimitFields)

    def may_use(self, model: str) -> bool:
        return self.models is None or model in self.models


@dataclass(frozen=True, slots=True)
class _Entry:
    secret_hash: str
    principal: Principal
    expires_at: float | None
    revoked: bool
    user_disabled: bool
    cached_until: float


class Authenticator:
    """Every map here is keyed by client input, so every one is bounded: valid keys in an LRU of
    ``max_entries``, unknown ids in a separate LRU of ``max_negative_entries`` (a flood of unique bogus keys
    evicts only other bogus keys), in-flight lookups to ``max_lookups`` running database reads, and at most
    ``4 * max_lookups`` shared ones. A key that fails the syntax check is refused before any of them."""

    def __init__(
        self,
        keys: KeyRepo,
        *,
        ttl: float = 60.0,
        negative_ttl: float = 1.0,
        max_entries: int = 100_000,
        max_negative_entries: int = 10_000,
        max_lookups: int = 32,
    ) -> None:
        if max_entries < 1 or max_negative_entries < 0 or max_lookups < 1:
            raise ValueError("max_entries and max_lookups must be >= 1, max_negative_entries >= 0")
        self._keys = keys
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._max_entries = max_entries
        self._max_negative = max_negative_entries
        self._max_loading = 4 * max_lookups
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._negative: OrderedDict[str, float] = OrderedDict()  # public id -> refused until (monotonic)
        self._loading: dict[str, asyncio.Future[KeyOwners | None]] = {}
        self._lookups = asyncio.Semaphore(max_lookups)  # concurrent database reads for uncached ids
        self.lookups = 0  # database reads made, for tests and metrics

    def invalidate(self) -> None:
        self._cache.clear()
        self._negative.clear()

    @property
    def sizes(self) -> tuple[int, int, int]:
        """(cached keys, cached unknown ids, in-flight lookups): every one bounded."""
        return len(self._cache), len(self._negative), len(self._loading)

    async def authenticate(self, presented: str | None) -> Principal:
        if not presented:
            raise AuthenticationFailed(
                "Missing API key. Send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'.",
                code="missing_api_key",
            )
        if not is_well_formed(presented):  # no cache entry, no lookup: it cannot be a key
            raise AuthenticationFailed("Invalid API key.")
        public_id, secret = lookup_parts(presented)
        now = time.monotonic()
        entry = self._cache.get(public_id)
        if entry is not None and entry.cached_until >= now:
            self._cache.move_to_end(public_id)
        else:
            refused_until = self._negative.get(public_id)
            if refused_until is not None and refused_until >= now:
                raise AuthenticationFailed("Invalid API key.")
            entry = await self._load(public_id, now)
        if entry is None or not same_secret(entry.secret_hash, sha256_hex(secret)):
            raise AuthenticationFailed("Invalid API key.")
        if entry.revoked:
            raise AuthenticationFailed("This API key has been revoked.", code="revoked_api_key")
        if entry.expires_at is not None and entry.expires_at <= time.time():
            raise AuthenticationFailed("This API key has expired.", code="expired_api_key")
        if entry.user_disabled:
            raise AuthenticationFailed("The owner of this API key is disabled.", code="user_disabled")
        return entry.principal

    async def _find(self, public_id: str) -> KeyOwners | None:
        async with self._lookups:
            self.lookups += 1
            return await self._keys.find_by_public_id(public_id)

    async def _load(self, public_id: str, now: float) -> _Entry | None:
        pending = self._loading.get(public_id)
        if pending is not None:
            found = await pending
        elif len(self._loading) >= self._max_loading:  # no room to share this read: make it alone (still bounded)
            found = await self._find(public_id)
        else:  # one database read per id, however many requests wait for it
            pending = asyncio.get_running_loop().create_future()
            self._loading[public_id] = pending
            try:
                found = await self._find(public_id)
                pending.set_result(found)
            except BaseException as exc:
                pending.set_exception(exc)
                pending.exception()  # mark retrieved; the awaiting caller re-raises below
                raise
            finally:
                del self._loading[public_id]
        if found is None:
            self._cache.pop(public_id, None)
            if self._max_negative:
                self._negative[public_id] = now + self._negative_ttl
                self._negative.move_to_end(public_id)
                while len(self._negative) > self._max_negative:
                    self._negative.popitem(last=False)
            return None
        entry = _to_entry(found, cached_until=now + self._ttl)
        self._negative.pop(public_id, None)
        self._cache[public_id] = entry
        self._cache.move_to_end(public_id)
        while len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)
        return entry


def _to_entry(found: KeyOwners, *, cached_until: float) -> _Entry:
    key, tenant, user = found.key, found.tenant, found.user
    principal = Principal(
        key_id=key.id,
        key_name=key.name,
        tenant_id=tenant.id,
        tenant_name=tenant.name,
        models=frozenset(key.models) if key.models is not None else None,
        key_limits=key.limits,
        tenant_limits=tenant.limits,
        user_id=user.id if user else None,
        user_limits=user.limits if user else LimitFields(),
    )
    return _Entry(
        secret_hash=key.secret_hash,
        principal=principal,
        expires_at=key.expires_at.timestamp() if key.expires_at else None,
        revoked=key.revoked_at is not None,
        user_disabled=user is not None and not user.active,
        cached_until=cached_until,
    )
