"""One contract for every limit store: memory (one process) and Redis (shared by replicas).

Every test runs against both stores with a controllable clock (``now=``), so the two implementations cannot
drift apart. Redis tests use a random key prefix per test and delete their keys afterwards.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from redis.asyncio import Redis

from tenantgate.core.errors import RateLimited
from tenantgate.limits import (
    BudgetPeriod,
    Demand,
    Limits,
    LimitStore,
    Scope,
    Ticket,
    build_limit_store,
    period_bounds,
)
from tenantgate.limits import algorithms as alg
from tests.support import require_redis

REDIS_URL = os.environ.get("TENANTGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
T0 = datetime(2025, 3, 12, 10, 0, tzinfo=UTC).timestamp()  # a Wednesday, mid-month


def ts(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


async def _delete_prefix(prefix: str) -> None:
    client = Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


class StoreMaker:
    """Builds stores that share one key prefix (= one Redis namespace), and closes and cleans them up."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.prefix = f"tg:test:{secrets.token_hex(6)}:"
        self.stores: list[LimitStore] = []

    def __call__(self, **options: Any) -> LimitStore:
        url = REDIS_URL if self.kind == "redis" else None
        # A generous timeout: this suite checks semantics, the outage suite checks the timeouts.
        store = build_limit_store(url, key_prefix=self.prefix, timeout_s=2.0, **options)
        self.stores.append(store)
        return store


async def _factory(kind: str) -> AsyncIterator[StoreMaker]:
    if kind == "redis":
        await require_redis()
    make = StoreMaker(kind)
    yield make
    for store in make.stores:
        await store.close()
    if kind == "redis":
        await _delete_prefix(make.prefix)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def make_store(request: pytest.FixtureRequest) -> AsyncIterator[StoreMaker]:
    async for make in _factory(request.param):
        yield make


@pytest.fixture
async def make_redis_store() -> AsyncIterator[StoreMaker]:
    async for make in _factory("redis"):
        yield make


def key(**limits: Any) -> Scope:
    return Scope("key:key_x", Limits(**limits))


def tenant(**limits: Any) -> Scope:
    return Scope("tenant:ten_a", Limits(**limits))


async def burst(
    store: LimitStore, scopes: Sequence[Scope], n: int, demand: Demand, now: float
) -> tuple[list[Ticket], list[RateLimited]]:
    """``n`` concurrent reserves; anything but a ticket or a refusal fails the test."""
    results = await asyncio.gather(*(store.reserve(scopes, demand, now=now) for _ in range(n)), return_exceptions=True)
    tickets = [r for r in results if isinstance(r, Ticket)]
    refused = [r for r in results if isinstance(r, RateLimited)]
    assert len(tickets) + len(refused) == n, [r for r in results if not isinstance(r, Ticket | RateLimited)]
    return tickets, refused


async def admitted(store: LimitStore, scopes: Sequence[Scope], demand: Demand, now: float) -> bool:
    try:
        await store.reserve(scopes, demand, now=now)
    except RateLimited:
        return False
    return True


SMALL = Demand(tokens=10, cost_usd=0.0)


# --- requests per minute -------------------------------------------------------------------------------------


async def test_rpm_is_exact_under_concurrency(make_store: StoreMaker) -> None:
    store = make_store()
    tickets, refused = await burst(store, [key(rpm=20)], 60, SMALL, T0)
    assert len(tickets) == 20 and len(refused) == 40
    assert sorted(int(t.headers["x-ratelimit-remaining-requests"]) for t in tickets) == list(range(20))
    for exc in refused:
        assert exc.status == 429 and exc.code == "rate_limit_exceeded" and exc.type == "rate_limit_error"
        assert "key:key_x" in exc.message and "20 requests per minute" in exc.message
        assert exc.headers["x-ratelimit-limit-requests"] == "20"
        assert exc.headers["x-ratelimit-remaining-requests"] == "0"
        assert exc.headers["retry-after"] == "60" and exc.headers["retry-after-ms"] == "60000"
        assert "x-should-retry" not in exc.headers


async def test_sliding_window_expires_entries_after_sixty_seconds(make_store: StoreMaker) -> None:
    store, scopes = make_store(), [key(rpm=3)]
    for offset in (0, 10, 20):
        assert await admitted(store, scopes, SMALL, T0 + offset)
    with pytest.raises(RateLimited) as info:
        await store.reserve(scopes, SMALL, now=T0 + 30)
    assert info.value.headers["retry-after"] == "30"
    assert info.value.headers["x-ratelimit-reset-requests"] == "30s"
    # Refused attempts must not occupy the window: many of them now, and the slots still free on time.
    for _ in range(10):
        assert not await admitted(store, scopes, SMALL, T0 + 59.9)
    assert await admitted(store, scopes, SMALL, T0 + 60)  # the T0 entry left
    assert not await admitted(store, scopes, SMALL, T0 + 60.5)
    assert await admitted(store, scopes, SMALL, T0 + 70)
    assert (await store.snapshot(scopes[0], now=T0 + 70)).requests == 3


async def test_window_edges_are_exact_to_the_microsecond(make_store: StoreMaker) -> None:
    """Wall-clock timestamps carry microseconds; no store may round them (e.g. to 0.1 ms in Lua)."""
    store, scopes = make_store(lease_seconds=30.0), [key(rpm=1, max_concurrency=1)]
    start = T0 + 0.123456
    await store.reserve(scopes, SMALL, now=start)
    assert (await store.snapshot(scopes[0], now=start + 30 - 0.000002)).in_flight == 1
    assert (await store.snapshot(scopes[0], now=start + 30)).in_flight == 0
    assert not await admitted(store, [key(rpm=1)], SMALL, start + 60 - 0.000002)
    assert await admitted(store, [key(rpm=1)], SMALL, start + 60)


async def test_default_clock_is_wall_time(make_store: StoreMaker) -> None:
    store = make_store()
    before = time.time()
    ticket = await store.reserve([key(rpm=1)], SMALL)
    assert before <= ticket.reserved_at <= time.time()
    with pytest.raises(RateLimited):
        await store.reserve([key(rpm=1)], SMALL)


# --- tokens per minute ---------------------------------------------------------------------------------------


async def test_tpm_stays_within_five_percent_over_each_minute(make_store: StoreMaker) -> None:
    store, scope, limit = make_store(), key(tpm=10_000), 10_000
    rng = random.Random(7)
    admitted_log: list[tuple[float, int]] = []
    for step in range(int(180 / 0.25)):  # three simulated minutes, demand far above the limit
        now = T0 + step * 0.25
        try:
            ticket = await store.reserve([scope], Demand(tokens=400, cost_usd=0.0), now=now)
        except RateLimited:
            continue
        actual = rng.randint(200, 400)
        await store.settle(ticket, actual, 0.0, now=now)
        admitted_log.append((now, actual))
    for minute in range(3):
        start = T0 + 60 * minute
        total = sum(tokens for at, tokens in admitted_log if start <= at < start + 60)
        assert 0.95 * limit <= total <= 1.05 * limit, (minute, total)
    for end, _ in admitted_log:  # and no sliding 60 s window ever exceeds the limit
        assert sum(tokens for at, tokens in admitted_log if end - 60 < at <= end) <= limit


async def test_tpm_settle_replaces_the_estimate(make_store: StoreMaker) -> None:
    store, scopes = make_store(), [key(tpm=1000)]
    first = await store.reserve(scopes, Demand(tokens=800, cost_usd=0.0), now=T0)
    with pytest.raises(RateLimited) as info:
        await store.reserve(scopes, Demand(tokens=300, cost_usd=0.0), now=T0 + 1)
    assert "1000 tokens per minute" in info.value.message
    assert info.value.headers["x-ratelimit-remaining-tokens"] == "200"
    await store.settle(first, 200, 0.0, now=T0 + 2)
    assert (await store.snapshot(scopes[0], now=T0 + 2)).tokens == 200
    await store.reserve(scopes, Demand(tokens=300, cost_usd=0.0), now=T0 + 3)
    # The settled tokens stay at the reservation's timestamp: they leave the window at T0 + 60.
    assert (await store.snapshot(scopes[0], now=T0 + 59)).tokens == 500
    assert (await store.snapshot(scopes[0], now=T0 + 60)).tokens == 300


async def test_estimate_above_tpm_is_refused_for_good(make_store: StoreMaker) -> None:
    store = make_store()
    with pytest.raises(RateLimited) as info:
        await store.reserve([key(tpm=1000)], Demand(tokens=1500, cost_usd=0.0), now=T0)
    exc = info.value
    assert exc.code == "rate_limit_exceeded" and exc.status == 429
    assert exc.headers["retry-after"] == "60" and exc.headers["x-should-retry"] == "false"
    assert (await store.snapshot(key(tpm=1000), now=T0)).requests == 0


# --- concurrency ---------------------------------------------------------------------------------------------


async def test_concurrency_slots_and_release(make_store: StoreMaker) -> None:
    store, scopes = make_store(), [key(max_concurrency=3)]
    tickets, refused = await burst(store, scopes, 10, SMALL, T0)
    assert len(tickets) == 3 and len(refused) == 7
    assert all(exc.headers["retry-after"] == "1" and "3 requests in flight" in exc.message for exc in refused)
    assert (await store.snapshot(scopes[0], now=T0)).in_flight == 3
    await store.settle(tickets[0], 5, 0.0, now=T0 + 1)
    more, _ = await burst(store, scopes, 5, SMALL, T0 + 1)
    assert len(more) == 1


async def test_leases_expire_and_free_slots_and_reserved_money(make_store: StoreMaker) -> None:
    store = make_store(lease_seconds=30.0)
    scopes = [key(max_concurrency=3, budget_usd=0.03)]
    demand = Demand(tokens=10, cost_usd=0.01)
    tickets, _ = await burst(store, scopes, 3, demand, T0)  # then the caller "crashes": no settle
    assert len(tickets) == 3
    assert not await admitted(store, scopes, demand, T0 + 29.9)
    usage = await store.snapshot(scopes[0], now=T0 + 30)
    assert usage.in_flight == 0 and usage.reserved_usd == 0.0 and usage.remaining_usd == pytest.approx(0.03)
    again, _ = await burst(store, scopes, 5, demand, T0 + 30)
    assert len(again) == 3
    # A late settle of an expired ticket still records its spend, once.
    await store.settle(tickets[0], 10, 0.01, now=T0 + 40)
    usage = await store.snapshot(scopes[0], now=T0 + 40)
    assert usage.spent_usd == pytest.approx(0.01) and usage.in_flight == 3


# --- budgets -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("actual_cost", [0.01, 0.004])
async def test_budget_race_never_overspends(make_store: StoreMaker, actual_cost: float) -> None:
    store, scope = make_store(), tenant(budget_usd=1.00)
    demand = Demand(tokens=100, cost_usd=0.01)
    tickets, refused = await burst(store, [scope], 200, demand, T0)
    assert len(tickets) == 100  # floor(1.00 / 0.01) while nothing settles
    assert all(exc.code == "insufficient_quota" and exc.type == "insufficient_quota" for exc in refused)
    usage = await store.snapshot(scope, now=T0)
    assert usage.reserved_usd == pytest.approx(1.0) and usage.remaining_usd == 0.0
    await asyncio.gather(*(store.settle(t, 50, actual_cost, now=T0 + 1) for t in tickets))
    usage = await store.snapshot(scope, now=T0 + 1)
    assert usage.spent_usd == pytest.approx(100 * actual_cost) and usage.reserved_usd == 0.0
    second, _ = await burst(store, [scope], 200, demand, T0 + 2)
    assert len(second) == math.floor(round((1.0 - 100 * actual_cost) / 0.01, 6))
    await asyncio.gather(*(store.settle(t, 50, 0.01, now=T0 + 3) for t in second))
    assert (await store.snapshot(scope, now=T0 + 3)).spent_usd <= 1.0 + 1e-12


async def test_budget_refusals_say_whether_retrying_helps(make_store: StoreMaker) -> None:
    store, scope = make_store(), tenant(budget_usd=1.00)
    big = Demand(tokens=100, cost_usd=0.3)
    tickets, _ = await burst(store, [scope], 5, big, T0)
    assert len(tickets) == 3
    with pytest.raises(RateLimited) as held:  # blocked only by in-flight worst cases: retry soon
        await store.reserve([scope], big, now=T0)
    assert held.value.headers["retry-after"] == "1" and "x-should-retry" not in held.value.headers
    for ticket in tickets:
        await store.settle(ticket, 100, 0.3, now=T0 + 1)
    with pytest.raises(RateLimited) as spent:  # spent for good until the month ends
        await store.reserve([scope], big, now=T0 + 2)
    exc = spent.value
    assert exc.code == "insufficient_quota" and exc.type == "insufficient_quota" and exc.status == 429
    assert exc.headers["x-should-retry"] == "false" and "tenant:ten_a" in exc.message
    assert exc.headers["retry-after"] == str(math.ceil(ts(2025, 4, 1) - (T0 + 2)))
    assert await admitted(store, [scope], Demand(tokens=1, cost_usd=0.1), T0 + 3)  # exactly fits


async def test_settle_is_idempotent(make_store: StoreMaker) -> None:
    store, scope = make_store(), key(tpm=10_000, max_concurrency=5, budget_usd=1.0)
    ticket = await store.reserve([scope], Demand(tokens=500, cost_usd=0.02), now=T0)
    await asyncio.gather(*(store.settle(ticket, 300, 0.01, now=T0 + 1) for _ in range(3)))
    await store.settle(ticket, 300, 0.01, now=T0 + 2)
    usage = await store.snapshot(scope, now=T0 + 2)
    assert (usage.tokens, usage.in_flight, usage.reserved_usd) == (300, 0, 0.0)
    assert usage.spent_usd == pytest.approx(0.01)


PERIOD_CASES = [
    ("daily", ts(2025, 3, 12, 23, 59, 30), ts(2025, 3, 13)),
    ("weekly", ts(2025, 3, 16, 23, 59), ts(2025, 3, 17)),  # Sunday night -> Monday 00:00 UTC
    ("monthly", ts(2025, 3, 31, 23), ts(2025, 4, 1)),
]


@pytest.mark.parametrize(("period", "before", "boundary"), PERIOD_CASES)
async def test_budget_resets_on_the_calendar(
    make_store: StoreMaker, period: BudgetPeriod, before: float, boundary: float
) -> None:
    store, scope = make_store(), tenant(budget_usd=1.0, budget_period=period)
    ticket = await store.reserve([scope], Demand(tokens=1, cost_usd=1.0), now=before - 100)
    await store.settle(ticket, 1, 1.0, now=before - 50)
    with pytest.raises(RateLimited) as info:
        await store.reserve([scope], Demand(tokens=1, cost_usd=0.01), now=before)
    assert info.value.headers["retry-after"] == str(math.ceil(boundary - before))
    usage = await store.snapshot(scope, now=boundary)
    assert usage.spent_usd == 0.0 and usage.period_start.startswith(
        datetime.fromtimestamp(boundary, UTC).date().isoformat()
    )
    assert await admitted(store, [scope], Demand(tokens=1, cost_usd=1.0), boundary)


async def test_total_budget_never_resets(make_store: StoreMaker) -> None:
    store, scope = make_store(), tenant(budget_usd=1.0, budget_period="total")
    ticket = await store.reserve([scope], Demand(tokens=1, cost_usd=0.6), now=T0)
    await store.settle(ticket, 1, 0.6, now=T0)
    with pytest.raises(RateLimited) as info:
        await store.reserve([scope], Demand(tokens=1, cost_usd=0.5), now=T0 + 400 * 86_400)
    assert info.value.headers["x-should-retry"] == "false"
    usage = await store.snapshot(scope, now=T0 + 400 * 86_400)
    assert usage.spent_usd == pytest.approx(0.6) and usage.period_end is None


async def test_settle_after_rollover_charges_the_reservation_period(make_store: StoreMaker) -> None:
    store, scope = make_store(), tenant(budget_usd=1.0, budget_period="daily")
    late = ts(2025, 3, 12, 23, 59, 50)
    ticket = await store.reserve([scope], Demand(tokens=1, cost_usd=0.6), now=late)
    await store.settle(ticket, 1, 0.5, now=late + 20)  # settles after midnight
    fresh = await store.snapshot(scope, now=late + 30)
    assert (fresh.spent_usd, fresh.reserved_usd, fresh.remaining_usd) == (0.0, 0.0, 1.0)
    assert await admitted(store, [scope], Demand(tokens=1, cost_usd=1.0), late + 30)
    old = await store.snapshot(scope, now=late + 5)
    assert old.spent_usd == pytest.approx(0.5)


async def test_seed_spend_counts_and_never_overwrites(make_store: StoreMaker) -> None:
    store, scope = make_store(), tenant(budget_usd=1.0)
    start, _ = period_bounds("monthly", T0)
    await store.seed_spend(scope.name, start, 0.95)
    await store.seed_spend(scope.name, start, 0.0)  # a second replica starting later changes nothing
    await store.seed_spend(scope.name, period_bounds("monthly", T0 - 40 * 86_400)[0], 0.5)  # other period
    assert not await admitted(store, [scope], Demand(tokens=1, cost_usd=0.10), T0)
    ticket = await store.reserve([scope], Demand(tokens=1, cost_usd=0.05), now=T0)
    await store.settle(ticket, 1, 0.05, now=T0)
    assert (await store.snapshot(scope, now=T0)).spent_usd == pytest.approx(1.0)
    other = Scope("tenant:ten_b", Limits(budget_usd=1.0))
    ticket = await store.reserve([other], Demand(tokens=1, cost_usd=0.2), now=T0)
    await store.settle(ticket, 1, 0.2, now=T0)
    await store.seed_spend(other.name, start, 0.9)  # the store already has spend for this period
    assert (await store.snapshot(other, now=T0)).spent_usd == pytest.approx(0.2)


# --- several levels ------------------------------------------------------------------------------------------


async def test_tenant_limit_binds_every_key(make_store: StoreMaker) -> None:
    store, shared = make_store(), tenant(rpm=5)
    tickets, refused = await burst(store, [key(), shared], 10, SMALL, T0)
    assert len(tickets) == 5
    assert all("tenant:ten_a" in exc.message for exc in refused)
    other_key = Scope("key:key_y", Limits())
    assert not await admitted(store, [other_key, shared], SMALL, T0 + 1)


async def test_refusal_at_one_level_consumes_nothing_at_another(make_store: StoreMaker) -> None:
    store = make_store()
    k = key(rpm=10, tpm=10_000, max_concurrency=10, budget_usd=1.0)
    t = tenant(rpm=5)
    tickets, refused = await burst(store, [k, t], 10, Demand(tokens=100, cost_usd=0.01), T0)
    assert (len(tickets), len(refused)) == (5, 5)
    usage = await store.snapshot(k, now=T0)
    assert (usage.requests, usage.tokens, usage.in_flight) == (5, 500, 5)
    assert usage.reserved_usd == pytest.approx(0.05)
    # And the other way round: a key refusal leaves the tenant untouched.
    small_key = Scope("key:key_z", Limits(rpm=1))
    roomy = Scope("tenant:ten_c", Limits(rpm=100))
    await store.reserve([small_key, roomy], SMALL, now=T0)
    assert not await admitted(store, [small_key, roomy], SMALL, T0)
    assert (await store.snapshot(roomy, now=T0)).requests == 1


async def test_headers_come_from_the_most_constraining_scope(make_store: StoreMaker) -> None:
    store = make_store()
    k, t = key(rpm=10, tpm=1000), tenant(rpm=5, tpm=100_000)
    first = await store.reserve([k, t], Demand(tokens=100, cost_usd=0.0), now=T0)
    assert first.headers == {
        "x-ratelimit-limit-requests": "5",
        "x-ratelimit-remaining-requests": "4",
        "x-ratelimit-reset-requests": "60s",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "900",
        "x-ratelimit-reset-tokens": "60s",
    }
    second = await store.reserve([k, t], Demand(tokens=100, cost_usd=0.0), now=T0 + 15.5)
    assert second.headers["x-ratelimit-reset-requests"] == "44.5s"
    only_rpm = await store.reserve([Scope("key:q", Limits(rpm=3))], SMALL, now=T0)
    assert set(only_rpm.headers) == {f"x-ratelimit-{h}-requests" for h in ("limit", "remaining", "reset")}
    assert (await store.reserve([Scope("key:free", Limits())], SMALL, now=T0)).headers == {}


# --- replicas (Redis only) -----------------------------------------------------------------------------------


@pytest.mark.redis
async def test_two_replicas_share_one_set_of_limits(make_redis_store: StoreMaker) -> None:
    replica_a, replica_b = make_redis_store(), make_redis_store()
    scopes = [key(rpm=20), tenant(budget_usd=1.0)]
    demand = Demand(tokens=10, cost_usd=0.04)
    first, _ = await burst(replica_a, scopes, 15, demand, T0)
    assert len(first) == 15
    # Replica b sees a's count, and a race through both clients at once still admits exactly the rest.
    (from_a, _), (from_b, _) = await asyncio.gather(
        burst(replica_a, scopes, 20, demand, T0 + 1), burst(replica_b, scopes, 20, demand, T0 + 1)
    )
    assert len(from_a) + len(from_b) == 5
    assert (await replica_b.snapshot(scopes[0], now=T0 + 1)).requests == 20
    # A ticket made on one replica settles on the other.
    await replica_b.settle(first[0], 10, 0.01, now=T0 + 2)
    usage = await replica_a.snapshot(scopes[1], now=T0 + 2)
    assert usage.in_flight == 19 and usage.spent_usd == pytest.approx(0.01)
    assert usage.reserved_usd == pytest.approx(19 * 0.04)
    (many, _), (more, _) = await asyncio.gather(
        burst(replica_a, [tenant(budget_usd=1.0)], 50, demand, T0 + 120),
        burst(replica_b, [tenant(budget_usd=1.0)], 50, demand, T0 + 120),
    )
    assert len(many) + len(more) == math.floor(round((1.0 - 0.01 - 19 * 0.04) / 0.04, 6))


@pytest.mark.redis
async def test_memory_and_redis_agree_step_by_step(make_redis_store: StoreMaker) -> None:
    """A random workload (reserves, settles, clock jumps over midnight and a week boundary) must produce the
    same admissions, refusal messages, headers and snapshots from both stores."""
    redis_store = make_redis_store(lease_seconds=100.0)
    memory_store = build_limit_store(None, lease_seconds=100.0)
    rng = random.Random(2024)
    scopes = [
        Scope("key:k1", Limits(rpm=4, tpm=1500, max_concurrency=4, budget_usd=0.25, budget_period="daily")),
        Scope("key:k2", Limits(rpm=5, max_concurrency=5)),
        Scope("tenant:t", Limits(rpm=6, tpm=2500, max_concurrency=6, budget_usd=0.9, budget_period="weekly")),
    ]
    now = ts(2025, 3, 16, 23, 40)
    open_pairs: list[tuple[Ticket, Ticket]] = []
    outcomes = {"admitted": 0, "rate_limit_exceeded": 0, "insufficient_quota": 0}
    try:
        for _ in range(600):
            now += rng.choice([0.0, 0.5, 2.0, 5.0, 20.0])
            action = rng.random()
            if action < 0.55:
                chosen = [scopes[rng.choice([0, 1])], scopes[2]]
                demand = Demand(tokens=rng.randint(0, 600), cost_usd=round(rng.uniform(0, 0.03), 4))
                pair: list[Ticket | RateLimited] = []
                for store in (memory_store, redis_store):
                    try:
                        pair.append(await store.reserve(chosen, demand, now=now))
                    except RateLimited as exc:
                        pair.append(exc)
                a, b = pair
                assert type(a) is type(b), (a, b)
                if isinstance(a, Ticket) and isinstance(b, Ticket):
                    assert a.headers == b.headers
                    open_pairs.append((a, b))
                    outcomes["admitted"] += 1
                else:
                    assert isinstance(a, RateLimited) and isinstance(b, RateLimited)
                    assert (a.message, a.code, a.headers) == (b.message, b.code, b.headers)
                    outcomes[str(a.code)] += 1
            elif action < 0.9 and open_pairs:
                a, b = open_pairs.pop(rng.randrange(len(open_pairs)))
                tokens, cost = rng.randint(0, a.demand.tokens + 50), round(rng.uniform(0, a.demand.cost_usd), 4)
                await memory_store.settle(a, tokens, cost, now=now)
                await redis_store.settle(b, tokens, cost, now=now)
            else:
                for scope in scopes:
                    mem, red = await memory_store.snapshot(scope, now=now), await redis_store.snapshot(scope, now=now)
                    assert mem == red
    finally:
        await memory_store.close()
    assert min(outcomes.values()) > 20, outcomes  # the workload really hit rate limits and budgets


@pytest.mark.redis
async def test_redis_keys_expire_on_their_own(make_redis_store: StoreMaker) -> None:
    """Idle scopes and past periods must not pile up in Redis; only a ``total`` spend is kept forever."""
    store = make_redis_store(lease_seconds=30.0)
    monthly, total = (
        tenant(rpm=5, budget_usd=5.0),
        Scope("tenant:forever", Limits(budget_usd=5.0, budget_period="total")),
    )
    now = time.time()
    ticket = await store.reserve([monthly, total], Demand(tokens=5, cost_usd=0.1), now=now)
    await store.settle(ticket, 5, 0.1, now=now)
    client = Redis.from_url(REDIS_URL)
    try:
        ttls = {}
        async for name in client.scan_iter(match=f"{make_redis_store.prefix}*"):
            ttls[name.decode()] = await client.pttl(name)
    finally:
        await client.aclose()
    forever = [name for name, ttl in ttls.items() if ttl < 0]
    # log, h, spend per scope (no lease left), plus the ticket's settled marker (expires with the lease)
    assert len(ttls) == 7 and len(forever) == 1, ttls
    assert forever[0].endswith("{tenant:forever}:spend:0")
    assert any(":settled:" in name for name in ttls)
    _, month_end = period_bounds("monthly", now)
    spend_ttl = next(ttl for name, ttl in ttls.items() if "{tenant:ten_a}:spend:" in name)
    assert month_end - now < spend_ttl / 1000 <= month_end - now + 8 * 86_400
    assert all(0 < ttl <= 150_000 for name, ttl in ttls.items() if ":spend:" not in name)  # lease + 2 min


# --- prices at the edges: free, tiny, huge, non-finite (issue 9, class 12) ---------------------------------------


def healthy(store: LimitStore) -> bool:
    """No call failed on the backend: a Redis script error would count towards (or open) the breaker."""
    status = store.status()
    return bool(status["state"] == "ok" and status.get("consecutive_failures", 0) == 0)


@pytest.mark.parametrize("cost", [0.0, -0.0])
async def test_free_model_settles_release_the_slot_and_keep_the_store_healthy(
    make_store: StoreMaker, cost: float
) -> None:
    """A model priced at 0 reserves and settles 0 nano-USD. Releasing such a lease must not send Redis a
    negative zero ("-0" is not an integer to HINCRBY): that left the slot held and counted as a Redis failure,
    so a handful of free requests opened the breaker and every tenant got 503."""
    store = make_store()
    scopes = [key(rpm=1000, max_concurrency=1), tenant(tpm=100_000, max_concurrency=1, budget_usd=1.0)]
    for i in range(12):  # more than the breaker threshold, one slot: a leaked lease refuses the next one
        ticket = await store.reserve(scopes, Demand(tokens=50, cost_usd=cost), now=T0 + i)
        assert not await store.settle(ticket, 30, cost, now=T0 + i)
    for scope in scopes:
        usage = await store.snapshot(scope, now=T0 + 12)
        assert (usage.requests, usage.tokens, usage.in_flight) == (12, 360, 0)
        assert (usage.spent_usd, usage.reserved_usd) == (0.0, 0.0)
    assert healthy(store), store.status()


async def test_tiny_costs_count_in_whole_nano_usd(make_store: StoreMaker) -> None:
    store, scope = make_store(), tenant(budget_usd=1e-6)  # 1,000 nano-USD
    for cost in (1e-12, 4e-10, 6e-10, 1e-9, 2.2e-9):
        ticket = await store.reserve([scope], Demand(tokens=1, cost_usd=cost), now=T0)
        await store.settle(ticket, 1, cost, now=T0)
    usage = await store.snapshot(scope, now=T0)
    assert usage.spent_usd == pytest.approx(4e-9, abs=1e-15)  # 0 + 0 + 1 + 1 + 2 nano-USD
    assert usage.reserved_usd == 0.0 and usage.in_flight == 0
    assert healthy(store), store.status()


@pytest.mark.parametrize("cost", [1e6, 1e7, 1e308, math.inf, math.nan])
async def test_huge_or_non_finite_costs_are_clamped_not_crashing(make_store: StoreMaker, cost: float) -> None:
    """A broken price must never crash the store, overflow Redis integers or pass for free under a budget."""
    store = make_store()
    budgeted = tenant(budget_usd=5.0)
    with pytest.raises(RateLimited) as info:
        await store.reserve([budgeted], Demand(tokens=1, cost_usd=cost), now=T0)
    assert info.value.code == "insufficient_quota"
    # Without a budget it is admitted; the settle bills at most the cap and the store keeps working.
    unbudgeted = key(rpm=100, max_concurrency=1)
    ticket = await store.reserve([unbudgeted], Demand(tokens=1, cost_usd=cost), now=T0)
    beyond = await store.settle(ticket, 1, cost, now=T0)
    assert not beyond  # reserved as much as it settled: the same clamped amount
    usage = await store.snapshot(unbudgeted, now=T0)
    assert usage.spent_usd == pytest.approx(alg.nano_to_usd(alg.MAX_COST_NANO)) and usage.in_flight == 0
    # A free request on a budgeted scope whose settle reports the broken cost: billed (clamped), then refused.
    small = await store.reserve([budgeted], Demand(tokens=1, cost_usd=0.0), now=T0 + 1)
    beyond = await store.settle(small, 1, cost, now=T0 + 1)
    assert beyond.nano_usd == alg.MAX_COST_NANO and beyond.cost_usd == pytest.approx(1e6)
    assert not await admitted(store, [budgeted], Demand(tokens=1, cost_usd=0.0), T0 + 2)
    assert await admitted(store, [unbudgeted], SMALL, T0 + 2)
    assert healthy(store), store.status()


async def test_spend_saturates_instead_of_overflowing(make_store: StoreMaker) -> None:
    """Seeded and accumulated spend stay below Redis's 64-bit limit however absurd the amounts."""
    store, scope = make_store(), tenant(budget_usd=1e6)
    start, _ = period_bounds("monthly", T0)
    await store.seed_spend(scope.name, start, 1e308)
    await store.seed_spend("tenant:nan", start, math.nan)
    for i in range(12):
        ticket = await store.reserve([Scope(scope.name, Limits(rpm=1000))], SMALL, now=T0 + i)
        await store.settle(ticket, 10, math.inf, now=T0 + i)
    usage = await store.snapshot(scope, now=T0 + 12)
    assert usage.spent_usd == alg.nano_to_usd(alg.MAX_AMOUNT_NANO) and usage.remaining_usd == 0.0
    assert not await admitted(store, [scope], Demand(tokens=1, cost_usd=0.0), T0 + 12)
    nan_seeded = await store.snapshot(Scope("tenant:nan", Limits(budget_usd=1e9)), now=T0)
    assert nan_seeded.spent_usd == alg.nano_to_usd(alg.MAX_AMOUNT_NANO)  # unknown spend counts as spent
    assert healthy(store), store.status()


@pytest.mark.parametrize("budget", [math.nan, -1.0])
async def test_a_broken_budget_refuses_instead_of_unlimiting(make_store: StoreMaker, budget: float) -> None:
    store = make_store()
    with pytest.raises(RateLimited) as info:
        await store.reserve([tenant(budget_usd=budget)], Demand(tokens=1, cost_usd=0.01), now=T0)
    assert info.value.code == "insufficient_quota"
    assert await admitted(store, [tenant(budget_usd=math.inf)], Demand(tokens=1, cost_usd=1e5), T0)
    assert healthy(store), store.status()


async def test_absurd_token_counts_are_clamped_not_crashing(make_store: StoreMaker) -> None:
    """A client's max_tokens or an upstream's usage of 10**30 must not poison the scope's counters."""
    store, budget_only = make_store(), tenant(budget_usd=10.0)
    ticket = await store.reserve([budget_only], Demand(tokens=10**30, cost_usd=0.0), now=T0)
    await store.settle(ticket, 10**30, 0.0, now=T0)
    assert (await store.snapshot(budget_only, now=T0)).tokens == alg.MAX_TOKENS
    assert await admitted(store, [budget_only], SMALL, T0 + 1)
    assert (await store.snapshot(budget_only, now=T0 + 60.5)).tokens == 10  # the clamped entry left the window
    with pytest.raises(RateLimited) as info:
        await store.reserve([key(tpm=1000)], Demand(tokens=10**30, cost_usd=0.0), now=T0)
    assert info.value.headers["x-should-retry"] == "false"
    assert healthy(store), store.status()


# --- overshoot: usage beyond the reservation is billed in full (issue 9, class 1) ----------------------------


async def test_budget_overshoot_is_billed_in_full_and_refuses_until_the_period_ends(make_store: StoreMaker) -> None:
    store, scope = make_store(), tenant(budget_usd=1.0)
    ticket = await store.reserve([scope], Demand(tokens=100, cost_usd=0.1), now=T0)
    beyond = await store.settle(ticket, 900, 1.5, now=T0 + 1)
    assert beyond.tokens == 800 and beyond.nano_usd == alg.usd_to_nano(1.4)
    assert not await store.settle(ticket, 900, 1.5, now=T0 + 2)  # reported once; the spend is counted once too
    usage = await store.snapshot(scope, now=T0 + 2)
    assert usage.spent_usd == pytest.approx(1.5) and usage.remaining_usd == 0.0
    for demand in (Demand(tokens=1, cost_usd=0.0), Demand(tokens=1, cost_usd=1e-9), Demand(tokens=0, cost_usd=0.0)):
        with pytest.raises(RateLimited) as info:  # even free requests: the key is in debt
            await store.reserve([scope], demand, now=T0 + 3)
        assert info.value.code == "insufficient_quota" and info.value.headers["x-should-retry"] == "false"
    next_month = ts(2025, 4, 1)
    assert await admitted(store, [scope], Demand(tokens=1, cost_usd=0.5), next_month)


async def test_tpm_overshoot_is_counted_in_full_until_the_window_slides(make_store: StoreMaker) -> None:
    store, scope = make_store(), key(tpm=1000)
    ticket = await store.reserve([scope], Demand(tokens=100, cost_usd=0.0), now=T0)
    beyond = await store.settle(ticket, 5000, 0.0, now=T0 + 5)
    assert beyond.tokens == 4900 and beyond.nano_usd == 0
    assert (await store.snapshot(scope, now=T0 + 5)).tokens == 5000
    for at in (T0 + 5, T0 + 30, T0 + 59.9):
        with pytest.raises(RateLimited) as info:
            await store.reserve([scope], Demand(tokens=1, cost_usd=0.0), now=at)
        assert info.value.code == "rate_limit_exceeded"
    assert await admitted(store, [scope], Demand(tokens=1000, cost_usd=0.0), T0 + 60)


async def test_overshoot_under_concurrency_is_billed_for_every_request(make_store: StoreMaker) -> None:
    """200 concurrent reservations, each settling 3x its reservation: the budget is exceeded by exactly what
    the upstream reported (nothing lost, nothing clamped), and the key is then refused."""
    store, scope = make_store(), key(budget_usd=2.0, tpm=1_000_000)
    demand = Demand(tokens=10, cost_usd=0.01)
    tickets, _ = await burst(store, [scope], 200, demand, T0)
    assert len(tickets) == 200
    results = await asyncio.gather(*(store.settle(t, 30, 0.03, now=T0 + 1) for t in tickets))
    assert all(r.tokens == 20 and r.nano_usd == alg.usd_to_nano(0.02) for r in results)
    usage = await store.snapshot(scope, now=T0 + 1)
    assert usage.spent_usd == pytest.approx(6.0) and usage.tokens == 6000 and usage.in_flight == 0
    assert not await admitted(store, [scope], Demand(tokens=1, cost_usd=0.0), T0 + 2)
