"""Idempotent and resumable requests (``Idempotency-Key``, Stripe / IETF draft semantics): the storage side.

The request path computes an :class:`IdemScope` and a :func:`fingerprint`, calls
:meth:`IdempotencyStore.begin`, and then runs the request (recording its result with ``append_event`` /
``finish``, or ``abandon`` if it fails before reaching the upstream), replays a stored result, follows the
running stream with ``wait_events``, or refuses. Three stores keep one contract: memory (tests, one process),
the database (the one-process default, durable) and Redis (several replicas).
"""

from tenantgate.idempotency.database import DatabaseIdempotencyStore
from tenantgate.idempotency.guarded import GuardedIdempotencyStore
from tenantgate.idempotency.memory import MemoryIdempotencyStore
from tenantgate.idempotency.model import (
    DEFAULT_TTL_S,
    ORPHAN_TTL_S,
    Claim,
    ClaimKind,
    Clock,
    IdempotencyError,
    IdempotencyStore,
    IdempotencyUnavailable,
    IdemScope,
    LeaseLost,
    StoredResponse,
    StreamLost,
    fingerprint,
    new_owner,
)
from tenantgate.idempotency.redis_store import RedisIdempotencyStore

__all__ = [
    "DEFAULT_TTL_S",
    "ORPHAN_TTL_S",
    "Claim",
    "ClaimKind",
    "Clock",
    "DatabaseIdempotencyStore",
    "GuardedIdempotencyStore",
    "IdemScope",
    "IdempotencyError",
    "IdempotencyStore",
    "IdempotencyUnavailable",
    "LeaseLost",
    "MemoryIdempotencyStore",
    "RedisIdempotencyStore",
    "StoredResponse",
    "StreamLost",
    "fingerprint",
    "new_owner",
]
