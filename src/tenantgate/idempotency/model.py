"""The shared vocabulary of idempotent requests: scopes, fingerprints, claims, the store protocol.

A request carrying an ``Idempotency-Key`` header is identified by its :class:`IdemScope` (who sent it, to which
endpoint, under which key) and bound to its :func:`fingerprint` (the canonical request body). Every store keeps
one record per scope and answers :meth:`IdempotencyStore.begin` with a :class:`Claim` that tells the request
path what to do: run the request (``new``), replay a stored result (``replay``), refuse or attach to the run
in flight (``in_progress``), or refuse a reused key with a different body (``mismatch``).

The decision itself is the pure function :func:`decide`, shared by the memory and database stores and
mirrored line by line by the Redis Lua script, so the three implementations cannot drift apart.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import orjson

from tenantgate.core.errors import ServiceUnavailable

Clock = Callable[[], float]
"""Seconds since the epoch; :func:`time.time` in production, a controllable fake in tests."""

ClaimKind = Literal["new", "replay", "in_progress", "mismatch"]
Decision = Literal["new", "takeover", "replay", "in_progress", "mismatch"]

DEFAULT_TTL_S = 86_400.0
"""How long a finished result is replayed (Stripe keeps keys for 24 hours)."""
ORPHAN_TTL_S = 86_400.0
"""How long an unfinished record outlives its lease. A dead owner never wedges the key (its lease expires and
the next ``begin`` takes over), but the key stays bound to its body for this long, and then purging frees it."""

RUNNING = "running"
DONE = "done"


def wall_clock() -> float:
    return time.time()


def fingerprint(body: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON body: key order and whitespace do not change it, any value does."""
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def new_owner() -> str:
    """A fresh lease owner id: one per request attempt, so a takeover can never be confused with its victim."""
    return secrets.token_hex(12)


@dataclass(frozen=True, slots=True)
class IdemScope:
    """Where an idempotency key is valid: the same key from another tenant, API key or endpoint is unrelated."""

    tenant_id: str
    key_id: str
    endpoint: str
    key: str

    def storage_key(self) -> str:
        """A fixed-length id for storage: keys may be long, and hashing the encoded tuple keeps the four fields
        unambiguous (``("a:b", "c")`` and ``("a", "b:c")`` never collide)."""
        encoded = orjson.dumps([self.tenant_id, self.key_id, self.endpoint, self.key])
        return hashlib.sha256(encoded).hexdigest()


@dataclass(slots=True)
class StoredResponse:
    """A finished non-stream result, replayed byte for byte."""

    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Claim:
    """The answer of :meth:`IdempotencyStore.begin`.

    - ``new``: the caller owns the record (``owner`` is its own id) and must ``finish`` or ``abandon`` it.
    - ``replay``: the result is stored; ``response`` (non-stream, or a stream's status/headers if the owner
      stored them) and ``events`` (every SSE event of a finished stream) are returned without an upstream call.
    - ``in_progress``: another request holds a live lease; ``owner`` is that request's id (pass it to
      ``read_events``/``wait_events`` to follow exactly that run).
    - ``mismatch``: the key was used with a different body.
    """

    kind: ClaimKind
    response: StoredResponse | None = None
    events: list[bytes] | None = None
    is_stream: bool = False
    owner: str | None = None


class IdempotencyError(Exception):
    """Base class of the store's own errors (never shown to a client as such)."""


class LeaseLost(IdempotencyError):
    """A write by a request that no longer owns the record: it was taken over after its lease expired,
    finished, abandoned or purged. The caller keeps serving its own client but must stop recording."""


class StreamLost(IdempotencyError):
    """The stream being followed will never complete: its record is gone (abandoned, expired, purged), was
    taken over by another owner, or its owner's lease expired. Ending the attached response is the only option;
    returning "finished" instead would pass a truncated stream off as a complete one."""


class IdempotencyUnavailable(ServiceUnavailable):
    """The idempotency store could not be reached or failed (Redis down or timing out, a database error).

    A request that asked for idempotency cannot be run safely without its record, so the client gets the
    documented fail mode: 503 ``idempotency_unavailable`` with ``retry-after``, never a 500. Deliberately not
    an :class:`IdempotencyError`, so code that expects a lost lease cannot swallow an outage by accident.
    """

    code = "idempotency_unavailable"

    def __init__(self, message: str = "Idempotency-Key requests are unavailable right now; retry shortly.") -> None:
        super().__init__(message, param="Idempotency-Key", headers={"retry-after": "1"})


@dataclass(frozen=True, slots=True)
class RecordView:
    """What :func:`decide` needs to know about an existing record."""

    fingerprint: str
    state: str
    lease_until: float
    expires_at: float


def decide(existing: RecordView | None, fingerprint: str, now: float) -> Decision:
    """The whole begin rule. An expired record counts as absent; a live one is bound to its body; a finished
    one replays; a running one blocks while its lease lives and is taken over once it has expired."""
    if existing is None or existing.expires_at <= now:
        return "new" if existing is None else "takeover"
    if existing.fingerprint != fingerprint:
        return "mismatch"
    if existing.state == DONE:
        return "replay"
    if existing.lease_until > now:
        return "in_progress"
    return "takeover"


def follow_state(view: RecordView | None, owner: str | None, record_owner: str | None, now: float) -> bool:
    """Whether a followed stream is finished; raises :class:`StreamLost` if it never will be."""
    if view is None or view.expires_at <= now:
        raise StreamLost("the idempotency record is gone")
    if owner is not None and record_owner != owner:
        raise StreamLost("the idempotency record was taken over by another request")
    if view.state == DONE:
        return True
    if view.lease_until <= now:
        raise StreamLost("the owner of the idempotency record stopped renewing its lease")
    return False


def check_lease(lease_seconds: float) -> None:
    if not lease_seconds > 0:
        raise ValueError(f"lease_seconds must be positive, got {lease_seconds!r}")


@dataclass(slots=True)
class Record:
    """One record as the memory store keeps it (the other stores keep the same fields in rows or hashes)."""

    tenant_id: str
    fingerprint: str
    state: str
    owner: str
    lease_until: float
    expires_at: float
    is_stream: bool
    created_at: float
    response: StoredResponse | None = None
    events: list[bytes] = field(default_factory=list)

    def view(self) -> RecordView:
        return RecordView(self.fingerprint, self.state, self.lease_until, self.expires_at)


class IdempotencyStore(Protocol):
    """Storage of idempotency records; memory (one process), database (one process, durable), Redis (replicas).

    Writes (``append_event``, ``finish``, ``renew``) raise :class:`LeaseLost` unless ``owner`` still owns a
    running record; ``abandon`` by a non-owner does nothing (it is a best-effort cleanup on an error path).
    """

    async def begin(
        self, scope: IdemScope, fingerprint: str, *, stream: bool, lease_seconds: float, owner: str
    ) -> Claim: ...

    async def append_event(self, scope: IdemScope, owner: str, event: bytes) -> None: ...

    async def read_events(
        self, scope: IdemScope, start: int, *, owner: str | None = None
    ) -> tuple[list[bytes], bool]: ...

    async def wait_events(
        self,
        scope: IdemScope,
        start: int,
        timeout: float,  # noqa: ASYNC109 - a long-poll wait, not a deadline
        *,
        owner: str | None = None,
    ) -> tuple[list[bytes], bool]: ...

    async def finish(
        self, scope: IdemScope, owner: str, response: StoredResponse | None, ttl_seconds: float
    ) -> None: ...

    async def abandon(self, scope: IdemScope, owner: str) -> None: ...

    async def renew(self, scope: IdemScope, owner: str, lease_seconds: float) -> None: ...

    async def purge_expired(self) -> int: ...

    async def close(self) -> None: ...
