"""Idempotency records in the gateway database (SQLite or PostgreSQL): the one-process default, durable.

Atomicity comes from the primary key and from conditional writes, never from read-then-write:

- ``begin`` INSERTs the record; the loser of a race gets ``IntegrityError``, reads the winner's row and decides
  with :func:`~tenantgate.idempotency.model.decide`. A takeover (expired lease or expired record) is an UPDATE
  whose WHERE repeats the staleness condition and the old owner, so of several takers exactly one sees
  ``rowcount == 1``; the others loop and find the new owner's live lease.
- Owner writes (``append_event``, ``finish``, ``renew``, ``abandon``) are UPDATE/DELETE ``WHERE owner = me AND
  state = 'running'``; ``rowcount == 0`` means the lease was lost. ``append_event`` first locks the record row
  that way, so the event index (``max(seq) + 1``) cannot race a takeover.
- Every transaction touches the record row before its event rows, so PostgreSQL cannot deadlock on them.

Times come from the injected clock (not the database's ``now()``), so tests expire leases without sleeping.
A waiter in this process is woken at once by the writer; other processes are seen by polling.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tenantgate.idempotency.model import (
    DONE,
    ORPHAN_TTL_S,
    RUNNING,
    Claim,
    Clock,
    IdempotencyError,
    IdemScope,
    LeaseLost,
    RecordView,
    StoredResponse,
    check_lease,
    decide,
    follow_state,
    wall_clock,
)
from tenantgate.idempotency.waiting import Signals, WaitsForEvents
from tenantgate.storage.schema import idempotency_events as events_t
from tenantgate.storage.schema import idempotency_records as records_t

_MAX_ATTEMPTS = 16
"""Each failed attempt means another request changed the record in between; 16 in a row does not happen."""
_PURGE_CHUNK = 500


def _dt(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def _ts(value: datetime) -> float:
    """SQLite hands back naive datetimes; everything stored here is UTC."""
    return (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).timestamp()


def _view(row: Any) -> RecordView:
    return RecordView(row.fingerprint, row.state, _ts(row.lease_until), _ts(row.expires_at))


def _owned(key: str, owner: str) -> sa.ColumnElement[bool]:
    return sa.and_(records_t.c.scope_key == key, records_t.c.owner == owner, records_t.c.state == RUNNING)


class DatabaseIdempotencyStore(WaitsForEvents):
    """Records in ``idempotency_records``, stream events in ``idempotency_events`` (see ``storage/schema.py``).

    The engine belongs to the caller (the app factory disposes it); :meth:`close` releases nothing else.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        clock: Clock = wall_clock,
        orphan_ttl_seconds: float = ORPHAN_TTL_S,
        poll_interval: float = 0.02,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._orphan_ttl = orphan_ttl_seconds
        self._poll = poll_interval
        self._signals = Signals()

    def _running_values(
        self, scope: IdemScope, fingerprint: str, stream: bool, lease_seconds: float, owner: str, now: float
    ) -> dict[str, Any]:
        lease_until = now + lease_seconds
        return {
            "tenant_id": scope.tenant_id,
            "fingerprint": fingerprint,
            "state": RUNNING,
            "owner": owner,
            "lease_until": _dt(lease_until),
            "expires_at": _dt(lease_until + self._orphan_ttl),
            "is_stream": stream,
            "status": None,
            "headers": None,
            "body": None,
            "created_at": _dt(now),
        }

    async def begin(
        self, scope: IdemScope, fingerprint: str, *, stream: bool, lease_seconds: float, owner: str
    ) -> Claim:
        check_lease(lease_seconds)
        key = scope.storage_key()
        for _ in range(_MAX_ATTEMPTS):
            now = self._clock()
            values = self._running_values(scope, fingerprint, stream, lease_seconds, owner, now)
            if await self._insert(key, values):
                return Claim("new", is_stream=stream, owner=owner)
            async with self._engine.connect() as conn:
                row = (await conn.execute(sa.select(records_t).where(records_t.c.scope_key == key))).first()
                if row is None:
                    continue  # abandoned or purged since our INSERT failed: insert again
                decision = decide(_view(row), fingerprint, now)
                if decision == "mismatch":
                    return Claim("mismatch", is_stream=row.is_stream)
                if decision == "in_progress":
                    return Claim("in_progress", is_stream=row.is_stream, owner=row.owner)
                if decision == "replay":
                    return await self._replay(conn, key, row)
            if await self._take_over(key, row.owner, fingerprint, values, now):
                self._signals.notify(key)  # followers of the lost run must learn it is lost
                return Claim("new", is_stream=stream, owner=owner)
        raise IdempotencyError(f"could not claim idempotency record {key} after {_MAX_ATTEMPTS} attempts")

    async def _insert(self, key: str, values: dict[str, Any]) -> bool:
        try:
            async with self._engine.begin() as conn:
                await conn.execute(records_t.insert().values(scope_key=key, **values))
                # Only reachable when no record existed, so any rows here are orphans (e.g. foreign keys off).
                await conn.execute(events_t.delete().where(events_t.c.scope_key == key))
        except IntegrityError:
            return False
        return True

    async def _take_over(self, key: str, old_owner: str, fingerprint: str, values: dict[str, Any], now: float) -> bool:
        stale = sa.or_(
            records_t.c.expires_at <= _dt(now),
            sa.and_(
                records_t.c.state == RUNNING,
                records_t.c.lease_until <= _dt(now),
                records_t.c.fingerprint == fingerprint,
            ),
        )
        async with self._engine.begin() as conn:
            where = sa.and_(records_t.c.scope_key == key, records_t.c.owner == old_owner, stale)
            result = await conn.execute(records_t.update().where(where).values(**values))
            if result.rowcount != 1:
                return False
            await conn.execute(events_t.delete().where(events_t.c.scope_key == key))
        return True

    async def _replay(self, conn: AsyncConnection, key: str, row: Any) -> Claim:
        response = None
        if row.status is not None:
            response = StoredResponse(row.status, dict(row.headers or {}), bytes(row.body or b""))
        events = await self._events(conn, key, 0) if row.is_stream else None
        return Claim("replay", response=response, events=events, is_stream=row.is_stream)

    @staticmethod
    async def _events(conn: AsyncConnection, key: str, start: int) -> list[bytes]:
        query = (
            sa.select(events_t.c.data)
            .where(events_t.c.scope_key == key, events_t.c.seq >= start)
            .order_by(events_t.c.seq)
        )
        return [bytes(data) for data in (await conn.execute(query)).scalars()]

    async def append_event(self, scope: IdemScope, owner: str, event: bytes) -> None:
        key = scope.storage_key()
        async with self._engine.begin() as conn:
            # A no-op UPDATE: it checks ownership and locks the row until commit, so a takeover waits for us.
            locked = await conn.execute(records_t.update().where(_owned(key, owner)).values(owner=owner))
            if locked.rowcount != 1:
                raise LeaseLost(f"{owner} no longer owns the idempotency record")
            last = sa.select(sa.func.max(events_t.c.seq)).where(events_t.c.scope_key == key)
            seq = await conn.scalar(last)
            await conn.execute(events_t.insert().values(scope_key=key, seq=0 if seq is None else seq + 1, data=event))
        self._signals.notify(key)

    async def read_events(self, scope: IdemScope, start: int, *, owner: str | None = None) -> tuple[list[bytes], bool]:
        key = scope.storage_key()
        columns = (records_t.c.fingerprint, records_t.c.state, records_t.c.owner)
        async with self._engine.connect() as conn:
            # The record first: once it reads "done", every event was committed before it.
            query = sa.select(*columns, records_t.c.lease_until, records_t.c.expires_at)
            row = (await conn.execute(query.where(records_t.c.scope_key == key))).first()
            view = None if row is None else _view(row)
            finished = follow_state(view, owner, None if row is None else row.owner, self._clock())
            return await self._events(conn, key, max(start, 0)), finished

    async def finish(self, scope: IdemScope, owner: str, response: StoredResponse | None, ttl_seconds: float) -> None:
        key = scope.storage_key()
        values: dict[str, Any] = {"state": DONE, "expires_at": _dt(self._clock() + ttl_seconds)}
        if response is not None:
            values.update(status=response.status, headers=dict(response.headers), body=response.body)
        async with self._engine.begin() as conn:
            result = await conn.execute(records_t.update().where(_owned(key, owner)).values(**values))
            if result.rowcount != 1:
                raise LeaseLost(f"{owner} no longer owns the idempotency record")
        self._signals.notify(key)

    async def abandon(self, scope: IdemScope, owner: str) -> None:
        key = scope.storage_key()
        async with self._engine.begin() as conn:
            result = await conn.execute(records_t.delete().where(_owned(key, owner)))
            if result.rowcount == 1:
                await conn.execute(events_t.delete().where(events_t.c.scope_key == key))
        self._signals.notify(key)

    async def renew(self, scope: IdemScope, owner: str, lease_seconds: float) -> None:
        check_lease(lease_seconds)
        lease_until = self._clock() + lease_seconds
        values = {"lease_until": _dt(lease_until), "expires_at": _dt(lease_until + self._orphan_ttl)}
        async with self._engine.begin() as conn:
            result = await conn.execute(records_t.update().where(_owned(scope.storage_key(), owner)).values(**values))
            if result.rowcount != 1:
                raise LeaseLost(f"{owner} no longer owns the idempotency record")

    async def purge_expired(self) -> int:
        """Delete expired records and their events; returns the number of records deleted."""
        cutoff = _dt(self._clock())
        async with self._engine.begin() as conn:
            query = records_t.delete().where(records_t.c.expires_at <= cutoff).returning(records_t.c.scope_key)
            keys = list((await conn.execute(query)).scalars())
            for i in range(0, len(keys), _PURGE_CHUNK):  # foreign-key cascade already did this where enabled
                await conn.execute(events_t.delete().where(events_t.c.scope_key.in_(keys[i : i + _PURGE_CHUNK])))
        return len(keys)

    async def close(self) -> None:
        """Nothing to release: the engine is the caller's."""
