"""Routing policies, panic mode and fallbacks as pure functions over a fixed health snapshot (no sockets)."""

from __future__ import annotations

from collections import Counter

import pytest

from tenantgate.core.errors import ModelNotFound
from tenantgate.routing.catalog import Catalog, Deployment
from tenantgate.routing.policy import ModelPolicy, order, panic_floor, weighted_schedule
from tenantgate.routing.snapshot import BackendStatus, HealthState, HealthView

NOW = 1000.0


def dep(backend: str, model: str = "m", *, weight: int = 1, priority: int = 0) -> Deployment:
    return Deployment(backend, backend, f"http://{backend}", None, model, model, 1.0, 2.0, weight, priority)


def status(state: HealthState, *, in_flight: int = 0, until: float | None = None) -> BackendStatus:
    return BackendStatus(
        state=state,
        healthy=state == "healthy",
        in_flight=in_flight,
        ejected_until=until if state == "ejected" else None,
        cooling_until=until if state == "cooling" else None,
    )


def view(**states: HealthState) -> HealthView:
    return HealthView({name: status(state) for name, state in states.items()})


def names(deployments: tuple[Deployment, ...] | list[Deployment]) -> list[str]:
    return [d.backend_id for d in deployments]


def ranked(deps: list[Deployment], policy: ModelPolicy, health: HealthView, counter: int) -> list[str]:
    return names(order(deps, policy, health, NOW, counter).deployments)


# -- round robin ------------------------------------------------------------------------------------------------


def test_round_robin_rotates_the_start_and_keeps_the_rest_as_failover() -> None:
    deps = [dep("a"), dep("b"), dep("c")]
    rr = ModelPolicy()
    assert ranked(deps, rr, HealthView.empty(), 0) == ["a", "b", "c"]
    assert ranked(deps, rr, HealthView.empty(), 1) == ["b", "c", "a"]
    assert ranked(deps, rr, HealthView.empty(), 5) == ["c", "a", "b"]


def test_round_robin_skips_unavailable_for_first_choice_but_keeps_them_last() -> None:
    deps = [dep("a"), dep("b"), dep("c"), dep("d")]
    health = view(b="ejected")
    firsts = [ranked(deps, ModelPolicy(), health, c)[0] for c in range(6)]
    assert firsts == ["a", "c", "d", "a", "c", "d"]
    assert ranked(deps, ModelPolicy(), health, 0)[-1] == "b"


def test_catalog_counter_rotates_between_requests() -> None:
    catalog = Catalog([dep("a"), dep("b"), dep("c")])
    firsts = [catalog.candidates("m", HealthView.empty(), NOW)[0].backend_id for _ in range(4)]
    assert firsts == ["a", "b", "c", "a"]


# -- weighted ---------------------------------------------------------------------------------------------------


def test_weighted_distribution_matches_weights_exactly() -> None:
    deps = [dep("a", weight=3), dep("b", weight=1)]
    policy = ModelPolicy(policy="weighted")
    firsts = Counter(ranked(deps, policy, HealthView.empty(), c)[0] for c in range(100))
    assert firsts == {"a": 75, "b": 25}


def test_weighted_is_smooth_not_bursty() -> None:
    # nginx's smooth WRR interleaves: 5:1:1 gives a a b a c a a, never five a's in a row.
    assert weighted_schedule((5, 1, 1)) == (0, 0, 1, 0, 2, 0, 0)
    assert weighted_schedule((3, 1)) == (0, 0, 1, 0)


def test_weighted_through_the_catalog_and_zero_weight_is_standby() -> None:
    catalog = Catalog(
        [dep("a", weight=2), dep("b", weight=1), dep("s", weight=0)], {"m": ModelPolicy(policy="weighted")}
    )
    picks = [catalog.candidates("m", HealthView.empty(), NOW) for _ in range(30)]
    assert Counter(p[0].backend_id for p in picks) == {"a": 20, "b": 10}
    assert all(p[-1].backend_id == "s" for p in picks)  # the standby is only ever the last resort


def test_weighted_ignores_unavailable_weights() -> None:
    deps = [dep("a", weight=3), dep("b", weight=1)]
    health = view(a="cooling")
    firsts = {ranked(deps, ModelPolicy(policy="weighted"), health, c)[0] for c in range(8)}
    assert firsts == {"b"}


# -- least outstanding ------------------------------------------------------------------------------------------


def test_least_outstanding_prefers_the_idle_one() -> None:
    deps = [dep("a"), dep("b"), dep("c")]
    health = HealthView({name: status("healthy", in_flight=n) for name, n in (("a", 4), ("b", 0), ("c", 2))})
    policy = ModelPolicy(policy="least_outstanding")
    for counter in range(3):
        assert ranked(deps, policy, health, counter) == ["b", "c", "a"]


def test_least_outstanding_ties_rotate() -> None:
    deps = [dep("a"), dep("b"), dep("c")]
    health = HealthView({"c": status("healthy", in_flight=3)})
    policy = ModelPolicy(policy="least_outstanding")
    assert [ranked(deps, policy, health, c)[0] for c in range(4)] == ["a", "b", "a", "b"]


# -- priority ---------------------------------------------------------------------------------------------------


def test_priority_uses_the_first_group_round_robin() -> None:
    deps = [dep("p1", priority=1), dep("p0a"), dep("p0b"), dep("p2", priority=2)]
    policy = ModelPolicy(policy="priority")
    assert ranked(deps, policy, HealthView.empty(), 0) == ["p0a", "p0b", "p1", "p2"]
    assert ranked(deps, policy, HealthView.empty(), 1) == ["p0b", "p0a", "p1", "p2"]


def test_priority_falls_to_the_next_group_when_the_first_is_all_ejected() -> None:
    deps = [dep("p0a"), dep("p0b"), dep("p1a", priority=1), dep("p1b", priority=1), dep("p2", priority=2)]
    health = view(p0a="ejected", p0b="ejected")
    # max_ejection_share=0.5 of 5 needs 3 available: p1a, p1b, p2 are, so this is not panic.
    result = order(deps, ModelPolicy(policy="priority"), health, NOW, 0)
    assert not result.panic
    assert names(result.deployments) == ["p1a", "p1b", "p2", "p0a", "p0b"]
    assert names(order(deps, ModelPolicy(policy="priority"), health, NOW, 1).deployments)[:2] == ["p1b", "p1a"]


# -- availability, panic, disabled ------------------------------------------------------------------------------


def test_expired_ejection_in_a_cached_view_counts_as_available() -> None:
    deps = [dep("a"), dep("b")]
    health = HealthView({"a": status("ejected", until=NOW - 1), "b": status("cooling", until=NOW + 1)})
    result = order(deps, ModelPolicy(), health, NOW, 1)
    assert result.available == 1 and names(result.deployments) == ["a", "b"]


def test_panic_mode_uses_all_with_the_healthy_one_first() -> None:
    deps = [dep("a"), dep("b"), dep("c"), dep("d")]
    health = view(a="ejected", b="unhealthy", c="healthy", d="cooling")
    for counter in range(4):
        result = order(deps, ModelPolicy(max_ejection_share=0.5), health, NOW, counter)
        assert result.panic and result.available == 1
        assert names(result.deployments)[0] == "c"
        assert sorted(names(result.deployments)) == ["a", "b", "c", "d"]


def test_no_panic_while_enough_are_available() -> None:
    deps = [dep("a"), dep("b"), dep("c"), dep("d")]
    health = view(a="ejected", b="ejected")
    assert not order(deps, ModelPolicy(max_ejection_share=0.5), health, NOW, 0).panic
    assert order(deps, ModelPolicy(max_ejection_share=0.25), health, NOW, 0).panic


def test_panic_floor() -> None:
    assert panic_floor(4, 0.5) == 2
    assert panic_floor(10, 0.9) == 1  # not 2 from float noise
    assert panic_floor(3, 1.0) == 1  # at least one must be available
    assert panic_floor(0, 0.5) == 0


def test_disabled_is_never_used_even_in_panic() -> None:
    deps = [dep("a"), dep("b"), dep("c")]
    health = view(a="disabled", b="ejected", c="ejected")
    result = order(deps, ModelPolicy(), health, NOW, 0)
    assert result.panic and "a" not in names(result.deployments)
    assert sorted(names(result.deployments)) == ["b", "c"]


def test_all_disabled_gives_no_candidates_but_known_model() -> None:
    catalog = Catalog([dep("a"), dep("b")])
    assert catalog.candidates("m", view(a="disabled", b="disabled"), NOW) == []


# -- fallbacks and the catalog ----------------------------------------------------------------------------------


def test_fallbacks_are_appended_after_own_deployments() -> None:
    catalog = Catalog(
        [dep("a", "big"), dep("b", "big"), dep("c", "small"), dep("d", "tiny")],
        {"big": ModelPolicy(fallbacks=("small", "tiny")), "small": ModelPolicy(fallbacks=("tiny",))},
    )
    got = catalog.candidates("big", view(a="ejected"), NOW)
    assert [(d.backend_id, d.model) for d in got] == [("b", "big"), ("a", "big"), ("c", "small"), ("d", "tiny")]


def test_fallbacks_are_cycle_safe_and_unique() -> None:
    catalog = Catalog(
        [dep("a", "x"), dep("b", "y"), dep("shared", "x"), dep("shared", "y")],
        {"x": ModelPolicy(fallbacks=("y", "x", "missing")), "y": ModelPolicy(fallbacks=("x",))},
    )
    got = catalog.candidates("x", HealthView.empty(), NOW)
    keys = [d.key for d in got]
    assert len(keys) == len(set(keys)) == 4
    assert [d.model for d in got] == ["x", "x", "y", "y"]
    assert catalog.candidates("y", HealthView.empty(), NOW)[-1].model == "x"


def test_plan_names_models_in_panic() -> None:
    catalog = Catalog([dep("a", "x"), dep("b", "y")], {"x": ModelPolicy(fallbacks=("y",))})
    plan = catalog.plan("x", view(a="unhealthy"), NOW)
    assert plan.panic_models == ("x",)
    # x's own (unhealthy but not disabled) deployment still comes before the fallback model's.
    assert names(plan.candidates) == ["a", "b"]


def test_unknown_model_raises_and_old_api_still_works() -> None:
    catalog = Catalog([dep("a"), dep("b"), dep("c", "other")])
    with pytest.raises(ModelNotFound):
        catalog.candidates("nope", HealthView.empty(), NOW)
    with pytest.raises(ModelNotFound):
        catalog.pick("nope")
    assert [catalog.pick("m").backend_id for _ in range(3)] == ["a", "b", "a"]
    assert catalog.models() == ["m", "other"] and catalog.has("other") and not catalog.has("nope")
    assert names(catalog.deployments("m")) == ["a", "b"]


def test_a_backend_listed_twice_for_a_model_is_one_deployment() -> None:
    catalog = Catalog([dep("a"), dep("b"), dep("a")])
    assert names(catalog.deployments("m")) == ["a", "b"]
    assert [names(catalog.candidates("m", HealthView.empty(), NOW)) for _ in range(2)] == [["a", "b"], ["b", "a"]]


def test_targets_lists_each_backend_once() -> None:
    catalog = Catalog([dep("a", "x"), dep("a", "y"), dep("b", "y")])
    assert sorted(t.backend_id for t in catalog.targets()) == ["a", "b"]


def test_bad_policy_and_deployment_values_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown routing policy"):
        ModelPolicy(policy="random")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ModelPolicy(max_ejection_share=1.5)
    with pytest.raises(ValueError):
        dep("a", weight=-1)
