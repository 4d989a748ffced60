"""Redis trouble must never hang a request: kill, freeze and restart a private redis-server.

Each test starts its own ``redis-server`` (on a Unix socket, see tests/redis_server.py), so the shared Redis
is never disturbed. The wall-time assertions are hang guards (a request must not wait for socket defaults),
not benchmarks.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import time
from collections.abc import Iterator

import pytest

from tenantgate.core.errors import RateLimited, ServiceUnavailable
from tenantgate.limits import Demand, FailMode, Limits, LimitStore, Scope, Ticket, build_limit_store
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.redis]

SCOPES = [Scope("key:key_o", Limits(rpm=1000)), Scope("tenant:ten_o", Limits(budget_usd=100.0))]
DEMAND = Demand(tokens=10, cost_usd=0.01)
HANG_GUARD_S = 1.0
SETTLE_RETRY_GUARD_S = 5.0  # settles retry with back-off (0.1 s doubling, 5 attempts) before giving up


class RedisProcess(RedisServer):
    """A throw-away redis-server without persistence, restartable on the same (Unix socket) address."""

    def kill(self) -> None:
        self.stop()

    def freeze(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)


@pytest.fixture
def redis_proc() -> Iterator[RedisProcess]:
    server = RedisProcess()
    server.start()
    yield server
    if server.proc is not None:
        server.thaw()
    server.kill()


def _store(server: RedisProcess, fail_mode: FailMode) -> LimitStore:
    return build_limit_store(
        server.url,
        fail_mode=fail_mode,
        timeout_s=0.05,
        breaker_threshold=3,
        breaker_cooldown_s=0.2,
    )


async def _timed_reserve(store: LimitStore, scopes: list[Scope] = SCOPES) -> Ticket | Exception:
    started = time.perf_counter()
    try:
        return await store.reserve(scopes, DEMAND)
    except (ServiceUnavailable, RateLimited) as exc:
        return exc
    finally:
        assert time.perf_counter() - started < HANG_GUARD_S


async def _wait_until_ok(store: LimitStore) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if (await store.check())["state"] == "ok":
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"limit store did not recover: {store.status()}")


async def test_fail_closed_answers_503_fast_and_recovers(redis_proc: RedisProcess) -> None:
    store = _store(redis_proc, "closed")
    try:
        ticket = await store.reserve(SCOPES, DEMAND)
        assert ticket.id.startswith("r_") and store.status()["state"] == "ok"
        pending = await store.reserve(SCOPES, DEMAND)
        redis_proc.kill()
        for _ in range(8):  # first through the failing client, then through the open breaker
            result = await _timed_reserve(store)
            assert isinstance(result, ServiceUnavailable), result
            assert result.status == 503 and result.code == "limiter_unavailable"
        assert store.status() | {"consecutive_failures": 0} == {
            "backend": "redis",
            "state": "down",
            "fail_mode": "closed",
            "breaker": "open",
            "consecutive_failures": 0,
        }
        started = time.perf_counter()
        await store.settle(pending, 10, 0.01)  # retried with back-off (~3 s), then dropped: never raises or hangs
        assert time.perf_counter() - started < SETTLE_RETRY_GUARD_S
        redis_proc.start()  # same port, empty data, scripts gone (NOSCRIPT must be handled)
        await _wait_until_ok(store)
        again = await store.reserve(SCOPES, DEMAND)
        assert again.id.startswith("r_")
        await store.settle(again, 10, 0.01)
        assert (await store.snapshot(SCOPES[1])).spent_usd == pytest.approx(0.01)
    finally:
        await store.close()


async def test_frozen_redis_times_out_instead_of_hanging(redis_proc: RedisProcess) -> None:
    store = _store(redis_proc, "closed")
    try:
        await store.reserve(SCOPES, DEMAND)
        redis_proc.freeze()  # accepts TCP, never answers: the dangerous kind of outage
        for _ in range(5):
            assert isinstance(await _timed_reserve(store), ServiceUnavailable)
        # A crowd arriving during the freeze is answered quickly too, not queued behind hung calls.
        crowd = await asyncio.gather(*(_timed_reserve(store) for _ in range(200)))
        assert all(isinstance(result, ServiceUnavailable) for result in crowd)
        assert store.status()["state"] == "down"
        redis_proc.thaw()
        await _wait_until_ok(store)
        assert (await store.reserve(SCOPES, DEMAND)).id.startswith("r_")
    finally:
        await store.close()


async def test_fail_local_keeps_serving_with_local_limits(redis_proc: RedisProcess) -> None:
    store = _store(redis_proc, "local")
    scopes = [Scope("key:key_l", Limits(rpm=3))]
    try:
        shared = await store.reserve(scopes, DEMAND)
        assert shared.id.startswith("r_")
        redis_proc.kill()
        local = [await _timed_reserve(store, scopes) for _ in range(4)]
        assert all(isinstance(t, Ticket) and t.id.startswith("m_") for t in local[:3])
        assert isinstance(local[3], RateLimited)  # the local store enforces the limits per process
        assert store.status()["state"] == "degraded" and store.status()["fail_mode"] == "local"
        started = time.perf_counter()
        await store.settle(shared, 10, 0.01)  # made in Redis, Redis is gone: dropped, not raised
        for ticket in local[:3]:
            assert isinstance(ticket, Ticket)
            await store.settle(ticket, 10, 0.01)  # made locally: settles locally
        assert time.perf_counter() - started < SETTLE_RETRY_GUARD_S
        redis_proc.start()
        await _wait_until_ok(store)
        back = await store.reserve(scopes, DEMAND)
        assert back.id.startswith("r_") and store.status()["state"] == "ok"
    finally:
        await store.close()


async def test_a_burst_is_not_mistaken_for_an_outage(redis_proc: RedisProcess) -> None:
    """With the production timeout (250 ms), hundreds of simultaneous reserves queue for a connection
    instead of timing out and tripping the breaker: local load is not a Redis failure."""
    store = build_limit_store(redis_proc.url)
    scopes = [Scope("key:key_b", Limits(rpm=10_000)), Scope("tenant:ten_b", Limits(budget_usd=1000.0))]
    try:
        await store.reserve(scopes, DEMAND)
        # The test runner's own heap (every module and fixture of the session) is no part of the gateway: a full
        # collection of it mid-burst would stall this loop past the timeout. `tenantgate serve` freezes its heap too.
        gc.collect()
        gc.freeze()
        try:
            results = await asyncio.gather(*(store.reserve(scopes, DEMAND) for _ in range(600)), return_exceptions=True)
        finally:
            gc.unfreeze()
        assert all(isinstance(result, Ticket) for result in results), {type(r).__name__ for r in results}
        assert store.status()["state"] == "ok" and store.status()["consecutive_failures"] == 0
    finally:
        await store.close()
