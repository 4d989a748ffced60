"""Three levels of limits (key, user, tenant) on one limit store, memory and Redis alike.

A person's keys are each bound by their own limits, by their user's and by their tenant's. Two keys of one user
are two different ``key:`` scopes sharing one ``user:`` scope and one ``tenant:`` scope, so whatever the user
level allows is shared by both keys. Every test runs against both stores through the contract suite's
``make_store`` fixture (see ``tests/contract/test_limits_contract.py``), with a controllable clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from tenantgate.auth.authenticator import Principal
from tenantgate.core.errors import RateLimited
from tenantgate.edge.admission import scopes_of
from tenantgate.limits import Demand, Limits, LimitStore, Scope, ScopeUsage, Ticket
from tenantgate.limits import algorithms as alg
from tenantgate.storage.rows import LimitFields
from tests.contract import test_limits_contract as contract

# The contract suite's parametrized fixture (memory, then Redis with a private key prefix cleaned up after).
make_store = contract.make_store
StoreMaker = contract.StoreMaker
T0 = contract.T0

KEY_ONE, KEY_TWO, USER, TENANT = "key:key_one", "key:key_two", "user:usr_person", "tenant:ten_personal"
ROOMY: dict[str, Any] = {"rpm": 10_000, "tpm": 10_000_000, "max_concurrency": 10_000, "budget_usd": 1_000.0}
SMALL = Demand(tokens=10, cost_usd=0.0)


def stack(key_name: str, key: Limits, user: Limits, tenant: Limits) -> list[Scope]:
    """The scopes of one request, in the order the edge builds them (see ``scopes_of``)."""
    return [Scope(key_name, key), Scope(USER, user), Scope(TENANT, tenant)]


async def race(
    store: LimitStore, requests: Sequence[tuple[Sequence[Scope], Demand]], now: float
) -> list[Ticket | RateLimited]:
    """All ``requests`` reserved at once; anything but a ticket or a refusal fails the test."""
    results = await asyncio.gather(
        *(store.reserve(scopes, demand, now=now) for scopes, demand in requests), return_exceptions=True
    )
    strays = [r for r in results if not isinstance(r, Ticket | RateLimited)]
    assert not strays, strays
    return [r for r in results if isinstance(r, Ticket | RateLimited)]


async def snapshots(store: LimitStore, scopes: Sequence[Scope], now: float) -> dict[str, ScopeUsage]:
    return {scope.name: await store.snapshot(scope, now=now) for scope in scopes}


# --- each level is the tightest in turn ----------------------------------------------------------------------

# limit kind -> (tight value, demand of each request, how many requests that value admits, refusal text, code)
KINDS: dict[str, tuple[float, Demand, int, str, str]] = {
    "rpm": (6, SMALL, 6, "Rate limit reached for {scope}: 6 requests per minute", "rate_limit_exceeded"),
    "tpm": (1000, Demand(tokens=100, cost_usd=0.0), 10, "for {scope}: 1000 tokens per minute", "rate_limit_exceeded"),
    "max_concurrency": (
        4,
        SMALL,
        4,
        "Concurrency limit reached for {scope}: 4 requests in flight",
        "rate_limit_exceeded",
    ),
    "budget_usd": (0.05, Demand(tokens=10, cost_usd=0.01), 5, "Budget for {scope} is 0.05 USD", "insufficient_quota"),
}


@pytest.mark.parametrize("tight", ["key", "user", "tenant"])
@pytest.mark.parametrize("kind", list(KINDS))
async def test_each_level_binds_when_it_is_the_tightest(make_store: StoreMaker, kind: str, tight: str) -> None:
    """Two keys of one user race 15 requests each; one level has a tight limit, the other two have room.

    A key limit binds each key on its own (twice the limit in total), a user or tenant limit binds both keys
    together. Every refusal names the tight scope, refused requests leave no trace at any level, and the
    settles bill every level.
    """
    store = make_store()
    value, demand, fits, text, code = KINDS[kind]
    roomy, narrow = Limits(**ROOMY), Limits(**{**ROOMY, kind: value})
    by_level = {level: narrow if level == tight else roomy for level in ("key", "user", "tenant")}
    one = stack(KEY_ONE, by_level["key"], by_level["user"], by_level["tenant"])
    two = stack(KEY_TWO, by_level["key"], by_level["user"], by_level["tenant"])
    requests = [(one, demand), (two, demand)] * 15
    results = await race(store, requests, T0)

    admitted = {KEY_ONE: 0, KEY_TWO: 0}
    for (scopes, _), result in zip(requests, results, strict=True):
        if isinstance(result, Ticket):
            admitted[scopes[0].name] += 1
            continue
        expected = {"key": scopes[0].name, "user": USER, "tenant": TENANT}[tight]
        assert result.code == code and result.status == 429, result.message
        assert text.format(scope=expected) in result.message, result.message
    total = admitted[KEY_ONE] + admitted[KEY_TWO]
    if tight == "key":
        assert admitted == {KEY_ONE: fits, KEY_TWO: fits}, "a key limit binds each key on its own"
    else:
        assert total == fits, f"the {tight} limit is shared by both keys: {admitted}"

    # What was admitted is counted at every level, and nothing of what was refused.
    every = [one[0], two[0], one[1], one[2]]
    counted = {KEY_ONE: admitted[KEY_ONE], KEY_TWO: admitted[KEY_TWO], USER: total, TENANT: total}
    views = await snapshots(store, every, T0)
    for name, count in counted.items():
        view = views[name]
        assert (view.requests, view.in_flight, view.tokens) == (count, count, count * demand.tokens), name
        assert view.reserved_usd == alg.nano_to_usd(count * alg.cost_to_nano(demand.cost_usd)), name
        assert view.spent_usd == 0.0, name

    # One more refused attempt (through the saturated key when the key level is tight) commits nothing anywhere.
    saturated = one if tight != "key" or admitted[KEY_ONE] == fits else two
    with pytest.raises(RateLimited):
        await store.reserve(saturated, demand, now=T0)
    assert await snapshots(store, every, T0) == views

    # Settling bills the actual usage at every level and frees every slot and every reserved cent.
    tickets = [r for r in results if isinstance(r, Ticket)]
    await asyncio.gather(*(store.settle(t, 7, 0.004, now=T0 + 1) for t in tickets))
    views = await snapshots(store, every, T0 + 1)
    for name, count in counted.items():
        view = views[name]
        assert (view.requests, view.in_flight, view.tokens, view.reserved_usd) == (count, 0, 7 * count, 0.0), name
        assert view.spent_usd == alg.nano_to_usd(count * alg.cost_to_nano(0.004)), name


# --- the user level is shared by the keys of one user --------------------------------------------------------


async def test_user_rpm_refuses_though_key_and_tenant_have_room(make_store: StoreMaker) -> None:
    store = make_store()
    key, user, tenant = Limits(rpm=50), Limits(rpm=3), Limits(rpm=50)
    one, two = stack(KEY_ONE, key, user, tenant), stack(KEY_TWO, key, user, tenant)
    assert isinstance(await store.reserve(one, SMALL, now=T0), Ticket)
    assert isinstance(await store.reserve(two, SMALL, now=T0 + 1), Ticket)
    assert isinstance(await store.reserve(one, SMALL, now=T0 + 2), Ticket)
    for scopes in (one, two):  # each key has used at most 2 of its 50, the tenant 3 of 50
        with pytest.raises(RateLimited) as info:
            await store.reserve(scopes, SMALL, now=T0 + 3)
        assert f"Rate limit reached for {USER}: 3 requests per minute" in info.value.message
        assert info.value.headers["x-ratelimit-limit-requests"] == "3"
        assert info.value.headers["x-ratelimit-remaining-requests"] == "0"
        assert info.value.headers["retry-after"] == "57"  # when the first of the user's three leaves the window
    assert await contract.admitted(store, two, SMALL, T0 + 60)  # the T0 entry left the user's window


async def test_user_tpm_refuses_though_key_and_tenant_have_room(make_store: StoreMaker) -> None:
    store = make_store()
    key, user, tenant = Limits(tpm=5000), Limits(tpm=1000), Limits(tpm=5000)
    one, two = stack(KEY_ONE, key, user, tenant), stack(KEY_TWO, key, user, tenant)
    first = await store.reserve(one, Demand(tokens=600, cost_usd=0.0), now=T0)
    with pytest.raises(RateLimited) as info:
        await store.reserve(two, Demand(tokens=500, cost_usd=0.0), now=T0 + 1)
    assert f"Rate limit reached for {USER}: 1000 tokens per minute (used 600, requested 500)" in info.value.message
    assert info.value.headers["x-ratelimit-remaining-tokens"] == "400"
    # Settling below the estimate frees tokens at the user level for the other key too.
    await store.settle(first, 200, 0.0, now=T0 + 2)
    assert await contract.admitted(store, two, Demand(tokens=800, cost_usd=0.0), T0 + 3)
    assert not await contract.admitted(store, one, Demand(tokens=1, cost_usd=0.0), T0 + 4)
    views = await snapshots(store, [one[0], two[0], one[1], one[2]], T0 + 4)
    assert [views[name].tokens for name in (KEY_ONE, KEY_TWO, USER, TENANT)] == [200, 800, 1000, 1000]


async def test_user_concurrency_is_shared_by_two_keys(make_store: StoreMaker) -> None:
    store = make_store()
    key, user, tenant = Limits(max_concurrency=5), Limits(max_concurrency=3), Limits(max_concurrency=10)
    one, two = stack(KEY_ONE, key, user, tenant), stack(KEY_TWO, key, user, tenant)
    held, refused = await contract.burst(store, one, 10, SMALL, T0)
    assert len(held) == 3 and len(refused) == 7
    # The second key has nothing in flight, yet the user's three slots are taken by the first one.
    with pytest.raises(RateLimited) as info:
        await store.reserve(two, SMALL, now=T0)
    assert f"Concurrency limit reached for {USER}: 3 requests in flight" in info.value.message
    assert (await store.snapshot(two[0], now=T0)).in_flight == 0
    # A settle on the first key frees exactly one slot, which the second key can take.
    await store.settle(held[0], 10, 0.0, now=T0 + 1)
    taken, _ = await contract.burst(store, two, 5, SMALL, T0 + 1)
    assert len(taken) == 1
    views = await snapshots(store, [one[0], two[0], one[1], one[2]], T0 + 1)
    assert [views[name].in_flight for name in (KEY_ONE, KEY_TWO, USER, TENANT)] == [2, 1, 3, 3]


async def test_user_budget_is_shared_by_two_keys(make_store: StoreMaker) -> None:
    store = make_store()
    key, user, tenant = Limits(budget_usd=1.0), Limits(budget_usd=0.5), Limits(budget_usd=10.0)
    one, two = stack(KEY_ONE, key, user, tenant), stack(KEY_TWO, key, user, tenant)
    spend = await store.reserve(one, Demand(tokens=10, cost_usd=0.3), now=T0)
    with pytest.raises(RateLimited) as held:  # only reserved, not yet spent: retry soon
        await store.reserve(two, Demand(tokens=10, cost_usd=0.3), now=T0)
    assert held.value.code == "insufficient_quota" and f"Budget for {USER} is 0.50 USD" in held.value.message
    assert "in-flight requests have reserved the rest" in held.value.message
    assert "x-should-retry" not in held.value.headers
    await store.settle(spend, 10, 0.3, now=T0 + 1)
    with pytest.raises(RateLimited) as spent:  # spent for good by the other key
        await store.reserve(two, Demand(tokens=10, cost_usd=0.3), now=T0 + 2)
    assert spent.value.code == "insufficient_quota" and spent.value.headers["x-should-retry"] == "false"
    assert f"Budget for {USER} is 0.50 USD per month; 0.3000 USD spent" in spent.value.message
    assert await contract.admitted(store, two, Demand(tokens=10, cost_usd=0.2), T0 + 3)  # exactly what is left
    usage = await store.snapshot(two[1], now=T0 + 3)
    assert usage.remaining_usd == 0.0 and usage.spent_usd == pytest.approx(0.3)
    assert (await store.snapshot(two[0], now=T0 + 3)).spent_usd == 0.0  # the second key itself spent nothing


# --- exactness under concurrency -----------------------------------------------------------------------------


async def test_user_budget_and_concurrency_are_exact_under_concurrency(make_store: StoreMaker) -> None:
    """200 concurrent reserves from two keys against a user allowing 37 in flight and a budget of 74 requests.

    Each round admits exactly 37 (the concurrency limit); settling at the reserved cost frees the slots but no
    money, so the third round admits nothing, and the spend is exactly the admitted sum at every level.
    """
    store = make_store()
    cost_nano, slots = 12_345_678, 37
    demand = Demand(tokens=100, cost_usd=alg.nano_to_usd(cost_nano))
    user = Limits(max_concurrency=slots, budget_usd=alg.nano_to_usd(2 * slots * cost_nano))
    key, tenant = Limits(**ROOMY), Limits(**ROOMY)
    one, two = stack(KEY_ONE, key, user, tenant), stack(KEY_TWO, key, user, tenant)
    every = [one[0], two[0], one[1], one[2]]
    requests = [(one, demand), (two, demand)] * 100
    admitted = {KEY_ONE: 0, KEY_TWO: 0}
    for round_no in range(3):
        now = T0 + 10 * round_no
        results = await race(store, requests, now)
        tickets = [r for r in results if isinstance(r, Ticket)]
        refused = [r for r in results if isinstance(r, RateLimited)]
        if round_no == 0:  # only the user's slots bind: its budget has room for twice as many
            assert len(tickets) == slots, f"round {round_no}: {len(tickets)} admitted"
            assert all(f"Concurrency limit reached for {USER}" in exc.message for exc in refused)
        elif round_no == 1:  # slots and money both run out at exactly the same request
            assert len(tickets) == slots, f"round {round_no}: {len(tickets)} admitted"
            assert all(USER in exc.message and TENANT not in exc.message for exc in refused)
        else:
            assert tickets == []
            assert all(exc.code == "insufficient_quota" and USER in exc.message for exc in refused)
            assert all(exc.headers["x-should-retry"] == "false" for exc in refused)  # spent, not just reserved
        for (scopes, _), result in zip(requests, results, strict=True):
            if isinstance(result, Ticket):
                admitted[scopes[0].name] += 1
        await asyncio.gather(*(store.settle(t, 100, demand.cost_usd, now=now + 1) for t in tickets))
    views = await snapshots(store, every, T0 + 30)
    total = 2 * slots
    assert admitted[KEY_ONE] + admitted[KEY_TWO] == total
    for name, count in {KEY_ONE: admitted[KEY_ONE], KEY_TWO: admitted[KEY_TWO], USER: total, TENANT: total}.items():
        view = views[name]
        assert view.spent_usd == alg.nano_to_usd(count * cost_nano), name  # exact, in whole nano-USD
        assert (view.in_flight, view.reserved_usd, view.requests) == (0, 0.0, count), name
    assert views[USER].remaining_usd == 0.0


# --- a refusal at one level commits nothing at the others ----------------------------------------------------


@pytest.mark.parametrize("refusing", ["key", "user", "tenant"])
async def test_a_refused_reserve_changes_no_level(make_store: StoreMaker, refusing: str) -> None:
    """Every level has every limit; one level is exhausted (rpm, tokens, slots and money at once).

    The refused reserve must leave all three snapshots exactly as they were, and the other levels keep all the
    room they had: a request through another key (or user, or tenant) that shares them is still admitted.
    """
    store = make_store()
    full = Limits(rpm=100, tpm=100_000, max_concurrency=100, budget_usd=100.0)
    exhausted = Limits(rpm=2, tpm=200, max_concurrency=2, budget_usd=0.02)
    levels = {level: exhausted if level == refusing else full for level in ("key", "user", "tenant")}
    scopes = stack(KEY_ONE, levels["key"], levels["user"], levels["tenant"])
    demand = Demand(tokens=100, cost_usd=0.01)
    tickets, _ = await contract.burst(store, scopes, 2, demand, T0)
    assert len(tickets) == 2
    before = await snapshots(store, scopes, T0 + 1)
    for attempt in range(5):
        with pytest.raises(RateLimited) as info:
            await store.reserve(scopes, demand, now=T0 + 1)
        assert scopes[["key", "user", "tenant"].index(refusing)].name in info.value.message, attempt
    assert await snapshots(store, scopes, T0 + 1) == before
    for view in before.values():
        assert (view.requests, view.tokens, view.in_flight) == (2, 200, 2)
        assert view.reserved_usd == pytest.approx(0.02) and view.spent_usd == 0.0
    # Swap the exhausted level for a fresh scope: the two levels left are untouched by the refusals.
    fresh = list(scopes)
    index = ["key", "user", "tenant"].index(refusing)
    fresh[index] = Scope(scopes[index].name + "_other", full)
    assert await contract.admitted(store, fresh, demand, T0 + 1)


# --- settle bills all three levels ---------------------------------------------------------------------------


async def test_settle_bills_all_three_levels_each_in_its_own_period(make_store: StoreMaker) -> None:
    store = make_store()
    key_one = Scope(KEY_ONE, Limits(budget_usd=10.0, budget_period="total", tpm=100_000))
    key_two = Scope(KEY_TWO, Limits(rpm=100))
    user = Scope(USER, Limits(budget_usd=10.0, budget_period="daily", tpm=100_000))
    tenant = Scope(TENANT, Limits(budget_usd=10.0, budget_period="monthly", max_concurrency=5))
    first = await store.reserve([key_one, user, tenant], Demand(tokens=500, cost_usd=0.5), now=T0)
    second = await store.reserve([key_two, user, tenant], Demand(tokens=200, cost_usd=0.2), now=T0 + 1)
    await store.settle(first, 123, 0.3, now=T0 + 2)
    beyond = await store.settle(second, 250, 0.45, now=T0 + 2)  # beyond its reservation: billed in full
    assert beyond.tokens == 50 and beyond.nano_usd == alg.usd_to_nano(0.25)
    assert not await store.settle(second, 250, 0.45, now=T0 + 3)  # a repeat bills nothing anywhere
    views = await snapshots(store, [key_one, key_two, user, tenant], T0 + 3)
    expected = {KEY_ONE: (123, 0.3), KEY_TWO: (250, 0.45), USER: (373, 0.75), TENANT: (373, 0.75)}
    for name, (tokens, spent) in expected.items():
        view = views[name]
        assert (view.tokens, view.in_flight, view.reserved_usd) == (tokens, 0, 0.0), name
        assert view.spent_usd == alg.nano_to_usd(alg.usd_to_nano(spent)), name  # exact, in whole nano-USD
    assert views[USER].remaining_usd == pytest.approx(9.25) and views[TENANT].remaining_usd == pytest.approx(9.25)
    # Each level's spend landed in its own calendar period.
    tomorrow = contract.ts(2025, 3, 13, 1)
    assert (await store.snapshot(user, now=tomorrow)).spent_usd == 0.0
    assert (await store.snapshot(tenant, now=tomorrow)).spent_usd == pytest.approx(0.75)
    next_month = contract.ts(2025, 4, 2)
    assert (await store.snapshot(tenant, now=next_month)).spent_usd == 0.0
    assert (await store.snapshot(key_one, now=next_month)).spent_usd == pytest.approx(0.3)


# --- scopes_of: what the edge counts a person's key against --------------------------------------------------


def principal(
    key: LimitFields | None = None,
    user: LimitFields | None = None,
    tenant: LimitFields | None = None,
    *,
    key_id: str = "key_one",
    user_id: str | None = "usr_person",
) -> Principal:
    return Principal(
        key_id=key_id,
        key_name="laptop",
        tenant_id="ten_personal",
        tenant_name="person@example.org",
        models=None,
        key_limits=key or LimitFields(),
        tenant_limits=tenant or LimitFields(),
        user_id=user_id,
        user_limits=user or LimitFields(),
    )


KEY_FIELDS = LimitFields(rpm=30, max_concurrency=2)
USER_FIELDS = LimitFields(tpm=5000, budget_usd=2.5, budget_period="daily")
TENANT_FIELDS = LimitFields(rpm=600, budget_usd=50.0)


def test_scopes_of_builds_key_user_and_tenant_scopes() -> None:
    assert scopes_of(principal(KEY_FIELDS, USER_FIELDS, TENANT_FIELDS)) == (
        Scope("key:key_one", Limits(rpm=30, max_concurrency=2)),
        Scope("user:usr_person", Limits(tpm=5000, budget_usd=2.5, budget_period="daily")),
        Scope("tenant:ten_personal", Limits(rpm=600, budget_usd=50.0, budget_period="monthly")),
    )


@pytest.mark.parametrize(
    ("fields", "names"),
    [
        ((None, USER_FIELDS, TENANT_FIELDS), ["user:usr_person", "tenant:ten_personal"]),
        ((KEY_FIELDS, None, TENANT_FIELDS), ["key:key_one", "tenant:ten_personal"]),
        ((KEY_FIELDS, USER_FIELDS, None), ["key:key_one", "user:usr_person"]),
        ((None, USER_FIELDS, None), ["user:usr_person"]),
        ((None, None, None), []),
    ],
    ids=["no-key-limits", "no-user-limits", "no-tenant-limits", "only-user-limits", "no-limits"],
)
def test_scopes_of_skips_a_level_without_limits(
    fields: tuple[LimitFields | None, LimitFields | None, LimitFields | None], names: list[str]
) -> None:
    assert [scope.name for scope in scopes_of(principal(*fields))] == names


def test_scopes_of_has_no_user_level_for_a_tenant_key() -> None:
    tenant_key = principal(KEY_FIELDS, None, TENANT_FIELDS, user_id=None)
    assert [scope.name for scope in scopes_of(tenant_key)] == ["key:key_one", "tenant:ten_personal"]


async def test_scopes_of_two_keys_of_one_user_share_its_limits(make_store: StoreMaker) -> None:
    """The edge's scopes for two keys of one person, raced on the store: the user's rpm binds both together."""
    store = make_store()
    user = LimitFields(rpm=5)
    roomy = LimitFields(rpm=100, max_concurrency=100)
    one = scopes_of(principal(roomy, user, roomy, key_id="key_one"))
    two = scopes_of(principal(roomy, user, roomy, key_id="key_two"))
    assert {s.name for s in one} & {s.name for s in two} == {"user:usr_person", "tenant:ten_personal"}
    results = await race(store, [(one, SMALL), (two, SMALL)] * 10, T0)
    assert sum(isinstance(r, Ticket) for r in results) == 5
    refused = [r for r in results if isinstance(r, RateLimited)]
    assert len(refused) == 15 and all("user:usr_person: 5 requests per minute" in r.message for r in refused)
    assert (await store.snapshot(one[1], now=T0)).requests == 5
    assert (await store.snapshot(one[0], now=T0)).requests + (await store.snapshot(two[0], now=T0)).requests == 5
