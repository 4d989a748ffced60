"""The pure decision functions both stores share: admission, refusal shape, headers, money."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tenantgate.core.errors import RateLimited
from tenantgate.limits import Demand, Limits, Scope
from tenantgate.limits import algorithms as alg

NOW = datetime(2025, 3, 12, 10, tzinfo=UTC).timestamp()


def state(**fields: int | float | None) -> alg.ScopeState:
    base: dict[str, int | float | None] = {
        "requests": 0,
        "tokens": 0,
        "oldest_at": None,
        "in_flight": 0,
        "reserved_nano": 0,
        "spent_nano": 0,
    }
    base.update(fields)
    return alg.ScopeState(**base)  # type: ignore[arg-type]


def test_money_is_exact_in_nano_usd() -> None:
    assert alg.usd_to_nano(0.01) * 100 == alg.usd_to_nano(1.00)
    assert sum(alg.usd_to_nano(0.1) for _ in range(10)) == alg.usd_to_nano(1.0)
    assert alg.nano_to_usd(alg.usd_to_nano(0.123456789)) == 0.123456789


@pytest.mark.parametrize(
    ("limits", "st", "tokens", "cost", "ok"),
    [
        (Limits(rpm=2), state(requests=1), 0, 0, True),
        (Limits(rpm=2), state(requests=2), 0, 0, False),
        (Limits(tpm=100), state(tokens=60), 40, 0, True),
        (Limits(tpm=100), state(tokens=60), 41, 0, False),
        (Limits(max_concurrency=1), state(in_flight=1), 0, 0, False),
        (Limits(budget_usd=1.0), state(spent_nano=600_000_000, reserved_nano=300_000_000), 0, 100_000_000, True),
        (Limits(budget_usd=1.0), state(spent_nano=600_000_000, reserved_nano=300_000_000), 0, 100_000_001, False),
        (Limits(), state(requests=10**6, tokens=10**9, in_flight=10**4), 10**6, 10**12, True),
    ],
)
def test_admits_matches_violations(limits: Limits, st: alg.ScopeState, tokens: int, cost: int, ok: bool) -> None:
    assert alg.admits(limits, st, tokens, cost) is ok
    assert (not alg.violations([Scope("s", limits)], [st], tokens, cost, NOW)) is ok


def test_refusal_prefers_the_final_reason_and_sets_quota_type() -> None:
    scopes = [Scope("key:k", Limits(rpm=1)), Scope("tenant:t", Limits(budget_usd=1.0))]
    states = [state(requests=1, oldest_at=NOW - 58.5), state(spent_nano=alg.usd_to_nano(0.99))]
    found = alg.violations(scopes, states, 1, alg.usd_to_nano(0.02), NOW)
    assert [v.kind for v in found] == ["requests", "budget"]
    exc = alg.refusal(found, {})
    assert isinstance(exc, RateLimited)
    assert exc.code == "insufficient_quota" and exc.type == "insufficient_quota" and exc.status == 429
    assert exc.headers["x-should-retry"] == "false"
    assert exc.body()["error"]["type"] == "insufficient_quota"
    rate = alg.refusal(found[:1], {"x-ratelimit-limit-requests": "1"})
    assert rate.type == "rate_limit_error" and rate.code == "rate_limit_exceeded"
    assert rate.message == "Rate limit reached for key:k: 1 requests per minute. Retry after 1.5 s."
    assert rate.headers == {"retry-after": "2", "retry-after-ms": "1500", "x-ratelimit-limit-requests": "1"}


def test_retry_after_is_at_least_one_second() -> None:
    v = alg.Violation("key:k", "requests", "m", 0.0004)
    assert alg.refusal([v], {}).headers["retry-after"] == "1"
    assert alg.refusal([v], {}).headers["retry-after-ms"] == "1"


def test_rate_headers_pick_the_scope_with_fewest_remaining() -> None:
    scopes = [Scope("key:k", Limits(rpm=10, tpm=500)), Scope("tenant:t", Limits(rpm=4))]
    states = [state(requests=1, tokens=100, oldest_at=NOW - 50), state(requests=3, oldest_at=NOW - 1.25)]
    refused = alg.rate_headers(scopes, states, 50, NOW, admitted=False)
    assert refused == {
        "x-ratelimit-limit-requests": "4",
        "x-ratelimit-remaining-requests": "1",
        "x-ratelimit-reset-requests": "58.75s",
        "x-ratelimit-limit-tokens": "500",
        "x-ratelimit-remaining-tokens": "400",
        "x-ratelimit-reset-tokens": "10s",
    }
    ok = alg.rate_headers(scopes, states, 50, NOW, admitted=True)
    assert ok["x-ratelimit-remaining-requests"] == "0" and ok["x-ratelimit-remaining-tokens"] == "350"
    assert alg.rate_headers([Scope("k", Limits(budget_usd=1.0))], [state()], 5, NOW, admitted=True) == {}


def test_dedupe_keeps_the_first_scope_of_a_name() -> None:
    a, b = Scope("key:k", Limits(rpm=1)), Scope("key:k", Limits(rpm=99))
    assert alg.dedupe([a, b, Scope("tenant:t", Limits())]) == (a, Scope("tenant:t", Limits()))


def test_negative_demand_is_rejected() -> None:
    with pytest.raises(ValueError):
        Demand(tokens=-1, cost_usd=0.0)
    with pytest.raises(ValueError):
        Demand(tokens=1, cost_usd=-0.01)
