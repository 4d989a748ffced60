"""In-process idempotency store: tests, and one gateway process that does not need records to survive it.

Every method runs without an ``await`` between reading and writing a record, so on one event loop each call is
atomic; that is the whole concurrency story. Waiters are woken in-process, never by polling.
"""

from __future__ import annotations

from tenantgate.idempotency.model import (
    DONE,
    ORPHAN_TTL_S,
    RUNNING,
    Claim,
    Clock,
    IdemScope,
    LeaseLost,
    Record,
    StoredResponse,
    StreamLost,
    check_lease,
    decide,
    follow_state,
    wall_clock,
)
from tenantgate.idempotency.waiting import Signals, WaitsForEvents


def _copy(response: StoredResponse | None) -> StoredResponse | None:
    """Callers may mutate what they get; the stored result must stay as it was finished."""
    if response is None:
        return None
    return StoredResponse(response.status, dict(response.headers), response.body)


class MemoryIdempotencyStore(WaitsForEvents):
    """Records in a dict keyed by :meth:`IdemScope.storage_key`; call :meth:`purge_expired` periodically."""

    def __init__(self, *, clock: Clock = wall_clock, orphan_ttl_seconds: float = ORPHAN_TTL_S) -> None:
        self._clock = clock
        self._orphan_ttl = orphan_ttl_seconds
        self._records: dict[str, Record] = {}
        self._signals = Signals()

    def __len__(self) -> int:
        return len(self._records)

    async def begin(
        self, scope: IdemScope, fingerprint: str, *, stream: bool, lease_seconds: float, owner: str
    ) -> Claim:
        check_lease(lease_seconds)
        key, now = scope.storage_key(), self._clock()
        record = self._records.get(key)
        if record is not None:
            decision = decide(record.view(), fingerprint, now)
            if decision == "mismatch":
                return Claim("mismatch", is_stream=record.is_stream)
            if decision == "replay":
                events = list(record.events) if record.is_stream else None
                return Claim("replay", response=_copy(record.response), events=events, is_stream=record.is_stream)
            if decision == "in_progress":
                return Claim("in_progress", is_stream=record.is_stream, owner=record.owner)
        lease_until = now + lease_seconds
        self._records[key] = Record(
            tenant_id=scope.tenant_id,
            fingerprint=fingerprint,
            state=RUNNING,
            owner=owner,
            lease_until=lease_until,
            expires_at=lease_until + self._orphan_ttl,
            is_stream=stream,
            created_at=now,
        )
        if record is not None:
            self._signals.notify(key)  # followers of the taken-over run must learn it is lost
        return Claim("new", is_stream=stream, owner=owner)

    def _owned(self, scope: IdemScope, owner: str) -> Record:
        record = self._records.get(scope.storage_key())
        if record is None or record.state != RUNNING or record.owner != owner:
            raise LeaseLost(f"{owner} no longer owns the idempotency record")
        return record

    async def append_event(self, scope: IdemScope, owner: str, event: bytes) -> None:
        self._owned(scope, owner).events.append(bytes(event))
        self._signals.notify(scope.storage_key())

    async def read_events(self, scope: IdemScope, start: int, *, owner: str | None = None) -> tuple[list[bytes], bool]:
        record = self._records.get(scope.storage_key())
        if record is None:
            raise StreamLost("the idempotency record is gone")
        finished = follow_state(record.view(), owner, record.owner, self._clock())
        return record.events[max(start, 0) :], finished

    async def finish(self, scope: IdemScope, owner: str, response: StoredResponse | None, ttl_seconds: float) -> None:
        record = self._owned(scope, owner)
        record.state = DONE
        record.response = _copy(response)
        record.expires_at = self._clock() + ttl_seconds
        self._signals.notify(scope.storage_key())

    async def abandon(self, scope: IdemScope, owner: str) -> None:
        key = scope.storage_key()
        record = self._records.get(key)
        if record is not None and record.state == RUNNING and record.owner == owner:
            del self._records[key]
            self._signals.notify(key)

    async def renew(self, scope: IdemScope, owner: str, lease_seconds: float) -> None:
        check_lease(lease_seconds)
        record = self._owned(scope, owner)
        record.lease_until = self._clock() + lease_seconds
        record.expires_at = record.lease_until + self._orphan_ttl

    async def purge_expired(self) -> int:
        now = self._clock()
        expired = [key for key, record in self._records.items() if record.expires_at <= now]
        for key in expired:
            del self._records[key]
        return len(expired)

    async def close(self) -> None:
        self._records.clear()
