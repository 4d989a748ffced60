"""ResilientLimitStore: a script Redis refuses is not an outage; overshoot is reported once, even when dropped."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from tenantgate.core.errors import ServiceUnavailable
from tenantgate.limits import (
    NO_OVERSHOOT,
    Demand,
    Limits,
    Overshoot,
    RedisLimitStore,
    ResilientLimitStore,
    Scope,
    Ticket,
)
from tenantgate.limits import algorithms as alg
from tenantgate.limits.breaker import CircuitBreaker
from tenantgate.observability.metrics import GatewayMetrics

SCOPES = (Scope("key:k", Limits(rpm=10)),)
SCRIPT_ERROR = "ERR value is not an integer or out of range script: abc123, on @user_script:1."


class BrokenPrimary(RedisLimitStore):
    """A Redis store whose every call fails the way we choose; counts the calls."""

    def __init__(self, error: Exception) -> None:
        super().__init__(Redis())  # never connects: every call below is overridden
        self.error = error
        self.calls = 0

    async def reserve(self, scopes: Sequence[Scope], demand: Demand, now: float | None = None) -> Ticket:
        self.calls += 1
        raise self.error

    async def settle_once(self, ticket: Ticket, tokens: int, cost_usd: float, now: float | None = None) -> None:
        self.calls += 1
        raise self.error


def ticket(tokens: int = 10, cost_usd: float = 0.01) -> Ticket:
    return Ticket(id="r_1", scopes=SCOPES, demand=Demand(tokens, cost_usd), reserved_at=0.0, headers={})


def store_over(primary: RedisLimitStore) -> ResilientLimitStore:
    breaker = CircuitBreaker(threshold=3, cooldown_s=60)
    return ResilientLimitStore(primary, breaker=breaker, settle_attempts=3, settle_backoff_s=0.0)


async def test_script_errors_do_not_open_the_breaker_for_everyone() -> None:
    """Whatever one request's data does to a script, other requests must not be refused because of it."""
    primary = BrokenPrimary(ResponseError(SCRIPT_ERROR))
    store = store_over(primary)
    for _ in range(10):
        with pytest.raises(ServiceUnavailable):  # this request cannot be decided: 503 for it alone
            await store.reserve(SCOPES, Demand(1, 0.0))
        await store.settle(ticket(), 5, 0.0)
    assert store.status()["breaker"] == "closed" and store.status()["consecutive_failures"] == 0
    assert primary.calls == 20, "a refused settle is not retried: the same arguments would be refused again"


async def test_connection_errors_still_open_the_breaker() -> None:
    primary = BrokenPrimary(RedisConnectionError("connection refused"))
    store = store_over(primary)
    for _ in range(3):
        with pytest.raises(ServiceUnavailable):
            await store.reserve(SCOPES, Demand(1, 0.0))
    assert store.status()["breaker"] == "open"


async def test_overshoot_is_reported_once_even_when_the_settle_is_dropped() -> None:
    store = store_over(BrokenPrimary(RedisConnectionError("down")))
    held = ticket(tokens=100, cost_usd=0.01)
    beyond = await store.settle(held, 250, 0.05)
    assert beyond == Overshoot(tokens=150, nano_usd=alg.usd_to_nano(0.04)) and beyond.cost_usd == pytest.approx(0.04)
    assert await store.settle(held, 250, 0.05) is NO_OVERSHOOT


def test_overshoot_compares_clamped_amounts() -> None:
    assert not alg.overshoot(Demand(10, 0.5), 10, alg.usd_to_nano(0.5))
    assert not alg.overshoot(Demand(10**30, float("inf")), alg.MAX_TOKENS, alg.MAX_COST_NANO)
    assert alg.overshoot(Demand(0, 0.0), 3, 7) == Overshoot(3, 7)


@pytest.mark.parametrize(
    ("usd", "nano"),
    [(0.0, 0), (-0.0, 0), (-1.0, 0), (1e-12, 0), (1e-9, 1), (0.01, 10_000_000), (1e6, alg.MAX_COST_NANO)],
)
def test_costs_convert_to_bounded_non_negative_integers(usd: float, nano: int) -> None:
    value = alg.cost_to_nano(usd)
    assert value == nano and isinstance(value, int) and str(value) == str(nano)  # never "-0"


@pytest.mark.parametrize("usd", [1e308, float("inf"), float("nan"), 1e7])
def test_absurd_costs_clamp_to_the_cap(usd: float) -> None:
    assert alg.cost_to_nano(usd) == alg.MAX_COST_NANO
    assert alg.usd_to_nano(usd) == alg.MAX_AMOUNT_NANO or usd == 1e7
    assert alg.MAX_AMOUNT_NANO * 9 < 2**63  # headroom below Redis's 64-bit integers


def test_budget_and_token_clamps() -> None:
    assert alg.budget_to_nano(float("nan")) == 0 and alg.budget_to_nano(float("inf")) == alg.MAX_AMOUNT_NANO
    assert alg.clamp_tokens(-5) == 0 and alg.clamp_tokens(10**30) == alg.MAX_TOKENS
    assert alg.clamp_tokens(float("nan")) == alg.MAX_TOKENS and alg.clamp_tokens(42) == 42
    assert alg.add_spend(alg.MAX_AMOUNT_NANO - 1, alg.MAX_COST_NANO) == alg.MAX_AMOUNT_NANO


def test_overshoot_metric() -> None:
    metrics = GatewayMetrics()
    metrics.reservation_overshot(150, 0.04)
    metrics.reservation_overshot(0, 0.0)  # within the reservation: nothing counted
    body, _ = metrics.render()
    samples = {
        (s.name, s.labels.get("kind")): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
        if s.name == "tenantgate_reservation_overshoot_total"
    }
    assert samples == {
        ("tenantgate_reservation_overshoot_total", "tokens"): 150,
        ("tenantgate_reservation_overshoot_total", "usd"): pytest.approx(0.04),
    }
