"""Build the limit store the settings ask for; the app factory calls this once at start-up."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from tenantgate.limits.breaker import CircuitBreaker
from tenantgate.limits.memory import MemoryLimitStore
from tenantgate.limits.model import LimitStore
from tenantgate.limits.redis_store import RedisLimitStore
from tenantgate.limits.resilient import FailMode, ResilientLimitStore


def build_limit_store(
    redis_url: str | None,
    *,
    fail_mode: FailMode = "closed",
    timeout_s: float = 0.25,
    lease_seconds: float = 600.0,
    key_prefix: str = "tg:lim:",
    breaker_threshold: int = 5,
    breaker_cooldown_s: float = 1.0,
    max_connections: int = 64,
) -> LimitStore:
    """Memory store without a URL; otherwise Redis wrapped in timeouts, a breaker and the fail mode.

    The client does not retry (redis-py's default would retry with back-off and blow the time budget; the
    breaker decides instead). The pool is bounded so a burst cannot open thousands of connections; the store
    admits as many calls at once as there are connections, so calls never wait inside the pool and
    ``timeout_s`` measures Redis, not the burst. Nothing connects until first use.
    """
    if redis_url is None:
        return MemoryLimitStore(lease_seconds=lease_seconds)
    pool = BlockingConnectionPool.from_url(
        redis_url,
        max_connections=max_connections,
        timeout=timeout_s,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
        protocol=2,  # no HELLO round trip per new connection
        driver_info=None,  # no CLIENT SETINFO round trip either: a cold burst opens dozens at once
    )
    client = Redis.from_pool(pool)
    primary = RedisLimitStore(client, lease_seconds=lease_seconds, key_prefix=key_prefix)
    breaker = CircuitBreaker(threshold=breaker_threshold, cooldown_s=breaker_cooldown_s)
    fallback = MemoryLimitStore(lease_seconds=lease_seconds) if fail_mode == "local" else None
    return ResilientLimitStore(
        primary,
        fail_mode=fail_mode,
        timeout_s=timeout_s,
        breaker=breaker,
        fallback=fallback,
        max_in_flight=max_connections,
    )
