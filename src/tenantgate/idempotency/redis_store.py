"""Redis idempotency store: one set of records shared by every gateway replica.

Every write is a single script from :mod:`tenantgate.idempotency.lua`, so ``begin`` is atomic across
replicas. Reads are one ``MULTI`` (record state and events together), so a reader never sees "done" without
the events that preceded it. Followers on another replica poll every ``poll_interval``; followers on the
owner's replica are woken at once. Redis expires the keys itself, so :meth:`purge_expired` has nothing to do.
"""

from __future__ import annotations

from typing import Any

import orjson
from redis.asyncio import Redis

from tenantgate.idempotency import lua
from tenantgate.idempotency.model import (
    ORPHAN_TTL_S,
    Claim,
    ClaimKind,
    Clock,
    IdemScope,
    LeaseLost,
    RecordView,
    StoredResponse,
    check_lease,
    follow_state,
    wall_clock,
)
from tenantgate.idempotency.waiting import Signals, WaitsForEvents


def _ms(seconds: float) -> str:
    """A relative TTL in whole milliseconds (Redis expires on its own clock; only durations are portable)."""
    return str(max(int(seconds * 1000), 1))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _claim(raw: list[Any]) -> Claim:
    kind: ClaimKind = _text(raw[0])  # type: ignore[assignment]
    is_stream = _text(raw[1]) == "1"
    if kind == "replay":
        has_response, status, headers, body, events = raw[2:7]
        response = None
        if _text(has_response) == "1":
            response = StoredResponse(int(status), orjson.loads(headers), bytes(body))
        return Claim("replay", response=response, events=list(events) if is_stream else None, is_stream=is_stream)
    if kind == "in_progress":
        return Claim("in_progress", is_stream=is_stream, owner=_text(raw[2]))
    return Claim(kind, is_stream=is_stream)


class RedisIdempotencyStore(WaitsForEvents):
    """Records as Redis hashes, stream events as Redis lists, under ``key_prefix``."""

    def __init__(
        self,
        redis_url: str,
        key_prefix: str = "tg:idem:",
        *,
        clock: Clock = wall_clock,
        orphan_ttl_seconds: float = ORPHAN_TTL_S,
        poll_interval: float = 0.02,
        socket_timeout: float | None = 5.0,
        socket_connect_timeout: float | None = 2.0,
    ) -> None:
        # Bounded connects too: an unreachable Redis must answer 503 soon, not after the OS's TCP timeout.
        self._client: Redis = Redis.from_url(
            redis_url, socket_timeout=socket_timeout, socket_connect_timeout=socket_connect_timeout
        )
        self._prefix = key_prefix
        self._clock = clock
        self._orphan_ttl = orphan_ttl_seconds
        self._poll = poll_interval
        self._signals = Signals()
        self._begin = self._client.register_script(lua.BEGIN)
        self._append = self._client.register_script(lua.APPEND)
        self._finish = self._client.register_script(lua.FINISH)
        self._renew = self._client.register_script(lua.RENEW)
        self._abandon = self._client.register_script(lua.ABANDON)

    @property
    def client(self) -> Redis:
        return self._client

    def keys(self, scope: IdemScope) -> list[str]:
        """The record hash and the event list of a scope (one hash tag: one cluster slot)."""
        base = f"{self._prefix}{{{scope.storage_key()}}}"
        return [f"{base}:r", f"{base}:e"]

    async def begin(
        self, scope: IdemScope, fingerprint: str, *, stream: bool, lease_seconds: float, owner: str
    ) -> Claim:
        check_lease(lease_seconds)
        now = self._clock()
        lease_until = now + lease_seconds
        args = [
            repr(now),
            fingerprint,
            owner,
            repr(lease_until),
            repr(lease_until + self._orphan_ttl),
            "1" if stream else "0",
            scope.tenant_id,
            _ms(lease_seconds + self._orphan_ttl),
        ]
        raw = await self._begin(keys=self.keys(scope), args=args)
        claim = _claim(raw)
        if claim.kind == "new":
            self._signals.notify(scope.storage_key())  # a takeover: local followers of the lost run wake up
            return Claim("new", is_stream=stream, owner=owner)
        return claim

    async def append_event(self, scope: IdemScope, owner: str, event: bytes) -> None:
        if int(await self._append(keys=self.keys(scope), args=[owner, event])) < 0:
            raise LeaseLost(f"{owner} no longer owns the idempotency record")
        self._signals.notify(scope.storage_key())

    async def read_events(self, scope: IdemScope, start: int, *, owner: str | None = None) -> tuple[list[bytes], bool]:
        record, events = self.keys(scope)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hmget(record, ["state", "fp", "owner", "lease", "exp"])
            pipe.lrange(events, max(start, 0), -1)
            (state, fp, record_owner, lease, exp), data = await pipe.execute()
        view = None
        if state is not None:
            view = RecordView(_text(fp), _text(state), float(lease), float(exp))
        current_owner = None if record_owner is None else _text(record_owner)
        finished = follow_state(view, owner, current_owner, self._clock())
        return list(data), finished

    async def finish(self, scope: IdemScope, owner: str, response: StoredResponse | None, ttl_seconds: float) -> None:
        now = self._clock()
        args: list[Any] = [owner, repr(now + ttl_seconds), _ms(ttl_seconds)]
        if response is None:
            args += ["0", "", "", b""]
        else:
            args += ["1", str(response.status), orjson.dumps(response.headers), response.body]
        if not int(await self._finish(keys=self.keys(scope), args=args)):
            raise LeaseLost(f"{owner} no longer owns the idempotency record")
        self._signals.notify(scope.storage_key())

    async def abandon(self, scope: IdemScope, owner: str) -> None:
        await self._abandon(keys=self.keys(scope), args=[owner])
        self._signals.notify(scope.storage_key())

    async def renew(self, scope: IdemScope, owner: str, lease_seconds: float) -> None:
        check_lease(lease_seconds)
        lease_until = self._clock() + lease_seconds
        args = [owner, repr(lease_until), repr(lease_until + self._orphan_ttl), _ms(lease_seconds + self._orphan_ttl)]
        if not int(await self._renew(keys=self.keys(scope), args=args)):
            raise LeaseLost(f"{owner} no longer owns the idempotency record")

    async def purge_expired(self) -> int:
        """Redis drops expired keys on its own (``PEXPIRE``); nothing to purge."""
        return 0

    async def close(self) -> None:
        await self._client.aclose()
