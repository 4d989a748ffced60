"""Micro-benchmark: mean cost of one reserve + settle pair on each limit store.

Two scopes (key and tenant), all four limits set high enough that nothing is refused, so every pair takes the
full admit path: sweep, check, commit, then settle. Redis numbers include the loopback round trips (one per
reserve, one per settle). Not a test; run ``.venv/bin/python bench/limits_micro.py [redis_url]``.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import sys
import time

from redis.asyncio import Redis

from tenantgate.limits import Demand, Limits, LimitStore, Scope, build_limit_store

BIG = Limits(rpm=10**9, tpm=10**12, max_concurrency=10**6, budget_usd=10**6, budget_period="monthly")
SCOPES = [Scope("key:bench_key", BIG), Scope("tenant:bench_tenant", BIG)]
DEMAND = Demand(tokens=1200, cost_usd=0.0042)


async def _sequential(store: LimitStore, pairs: int) -> list[float]:
    samples = []
    for _ in range(pairs):
        started = time.perf_counter()
        ticket = await store.reserve(SCOPES, DEMAND)
        await store.settle(ticket, 900, 0.003)
        samples.append((time.perf_counter() - started) * 1e6)
    return samples


async def _concurrent(store: LimitStore, pairs: int, workers: int) -> float:
    """Pairs per second with ``workers`` requests in flight, as a loaded gateway sees it."""

    async def worker(n: int) -> None:
        for _ in range(n):
            ticket = await store.reserve(SCOPES, DEMAND)
            await store.settle(ticket, 900, 0.003)

    started = time.perf_counter()
    await asyncio.gather(*(worker(pairs // workers) for _ in range(workers)))
    return (pairs // workers * workers) / (time.perf_counter() - started)


async def _measure(name: str, store: LimitStore, pairs: int) -> tuple[str, int, float, float, float, float]:
    await _sequential(store, min(pairs // 10, 500))  # warm-up: connections, script load, allocations
    samples = await _sequential(store, pairs)
    rate = await _concurrent(store, pairs, workers=32)
    q = statistics.quantiles(samples, n=100)
    return name, pairs, statistics.fmean(samples), q[49], q[98], rate


async def _cleanup(url: str, prefix: str) -> None:
    client = Redis.from_url(url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def main(redis_url: str) -> None:
    rows = []
    memory = build_limit_store(None)
    rows.append(await _measure("memory", memory, 20_000))
    await memory.close()
    prefix = f"tg:bench:{secrets.token_hex(4)}:"
    redis_store = build_limit_store(redis_url, key_prefix=prefix, timeout_s=1.0)
    try:
        rows.append(await _measure("redis", redis_store, 5_000))
    finally:
        await redis_store.close()
        await _cleanup(redis_url, prefix)
    print(f"{'store':<8} {'pairs':>7} {'mean µs':>9} {'p50 µs':>8} {'p99 µs':>8} {'pairs/s @32':>12}")
    for name, pairs, mean, p50, p99, rate in rows:
        print(f"{name:<8} {pairs:>7} {mean:>9.1f} {p50:>8.1f} {p99:>8.1f} {rate:>12.0f}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "redis://127.0.0.1:6379/0"))
