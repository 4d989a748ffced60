"""The backend health state machine, driven by a fake monotonic clock (no sleeps)."""

from __future__ import annotations

import pytest

from tenantgate.routing.health import HealthRegistry
from tenantgate.routing.snapshot import FailureKind, HealthConfig


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def reg(clock: Clock) -> HealthRegistry:
    return HealthRegistry(clock=clock)


def fail(reg: HealthRegistry, times: int, backend: str = "b1") -> None:
    for _ in range(times):
        reg.record_failure(backend, "5xx", "HTTP 503")


def test_unknown_backend_is_healthy(reg: HealthRegistry) -> None:
    status = reg.status("never-seen")
    assert status.state == "healthy" and status.healthy
    assert reg.view().of("never-seen").healthy


def test_ejection_after_consecutive_failures(reg: HealthRegistry, clock: Clock) -> None:
    fail(reg, 4)
    assert reg.status("b1").state == "healthy" and reg.status("b1").consecutive_failures == 4
    reg.record_failure("b1", "connect", "connection refused")
    status = reg.status("b1")
    assert status.state == "ejected" and not status.healthy
    assert status.ejected_until == clock.now + 10.0
    assert status.last_error == "connect: connection refused"


def test_a_success_resets_the_consecutive_count(reg: HealthRegistry) -> None:
    fail(reg, 4)
    reg.record_success("b1", 0.2)
    fail(reg, 4)
    assert reg.status("b1").state == "healthy"
    assert reg.status("b1").consecutive_failures == 4
    assert reg.status("b1").latency_ewma_ms == pytest.approx(200.0)


def test_readmission_after_the_ejection_time(reg: HealthRegistry, clock: Clock) -> None:
    fail(reg, 5)
    clock.now += 9.9
    assert reg.status("b1").state == "ejected"
    clock.now += 0.1
    status = reg.status("b1")
    assert status.state == "healthy" and status.ejected_until is None and status.consecutive_failures == 0


def test_ejection_time_grows_and_is_capped(clock: Clock) -> None:
    reg = HealthRegistry(HealthConfig(base_ejection_s=10, max_ejection_s=35), clock=clock)
    durations = []
    for _ in range(4):
        fail(reg, 5)
        until = reg.status("b1").ejected_until
        assert until is not None
        durations.append(until - clock.now)
        clock.now = until  # re-admitted exactly when the ejection ends, then fails again at once
    assert durations == [10, 20, 35, 35]
    assert reg.status("b1").times_ejected == 4


def test_ejection_count_decays_after_a_long_healthy_period(reg: HealthRegistry, clock: Clock) -> None:
    fail(reg, 5)
    clock.now += 10
    fail(reg, 5)
    assert reg.status("b1").times_ejected == 2
    clock.now += 20 + 100  # ejection over, then 10 x base healthy
    assert reg.status("b1").times_ejected == 0
    fail(reg, 5)
    until = reg.status("b1").ejected_until
    assert until is not None and until - clock.now == 10


def test_failures_while_ejected_do_not_extend_it(reg: HealthRegistry, clock: Clock) -> None:
    fail(reg, 5)
    until = reg.status("b1").ejected_until
    fail(reg, 20)
    assert reg.status("b1").ejected_until == until and reg.status("b1").times_ejected == 1


def test_success_ends_an_ejection_early(reg: HealthRegistry) -> None:
    fail(reg, 5)
    reg.record_success("b1", 0.1)
    assert reg.status("b1").state == "healthy"


def test_rate_limit_cooldown_honours_retry_after(reg: HealthRegistry, clock: Clock) -> None:
    reg.record_rate_limited("b1", 7.0)
    status = reg.status("b1")
    assert status.state == "cooling" and status.cooling_until == clock.now + 7.0
    assert status.consecutive_failures == 0  # a 429 is not a failure
    clock.now += 6.99
    assert reg.status("b1").state == "cooling"
    clock.now += 0.01
    assert reg.status("b1").state == "healthy"


def test_rate_limit_default_and_cap(reg: HealthRegistry, clock: Clock) -> None:
    reg.record_rate_limited("b1", None)
    reg.record_rate_limited("b2", 86400.0)
    assert reg.status("b1").cooling_until == clock.now + 5.0
    assert reg.status("b2").cooling_until == clock.now + 300.0


def test_probe_thresholds_both_ways(reg: HealthRegistry) -> None:
    reg.record_probe("b1", False, "connection refused")
    reg.record_probe("b1", False, "connection refused")
    assert reg.status("b1").state == "healthy"
    reg.record_probe("b1", False, "connection refused")
    status = reg.status("b1")
    assert status.state == "unhealthy" and status.last_error == "health check: connection refused"
    reg.record_probe("b1", True, None, 0.01)
    assert reg.status("b1").state == "unhealthy"
    reg.record_probe("b1", True, None, 0.01)
    assert reg.status("b1").state == "healthy"
    assert reg.status("b1").probe_latency_ms == pytest.approx(10.0)


def test_a_good_probe_interrupts_the_failed_probe_streak(reg: HealthRegistry) -> None:
    for ok in (False, False, True, False, False):
        reg.record_probe("b1", ok, None if ok else "down")
    assert reg.status("b1").state == "healthy"


def test_good_probes_after_an_ejection_clear_it(reg: HealthRegistry) -> None:
    reg.record_probe("b1", True)
    reg.record_probe("b1", True)  # good probes before the ejection must not end it
    fail(reg, 5)
    reg.record_probe("b1", True)
    assert reg.status("b1").state == "ejected"
    reg.record_probe("b1", True)
    assert reg.status("b1").state == "healthy"


def test_in_flight_counting(reg: HealthRegistry) -> None:
    reg.acquire("b1")
    reg.acquire("b1")
    with reg.track("b2"):
        assert reg.view().of("b2").in_flight == 1
    assert reg.status("b2").in_flight == 0
    reg.release("b1")
    assert reg.status("b1").in_flight == 1
    reg.release("b1")
    reg.release("b1")  # an extra release never goes negative
    assert reg.status("b1").in_flight == 0


def test_disabled_wins_over_everything_and_can_be_undone(reg: HealthRegistry) -> None:
    fail(reg, 5)
    reg.set_disabled("b1", True)
    assert reg.status("b1").state == "disabled" and not reg.view().of("b1").usable()
    reg.set_disabled("b1", False)
    assert reg.status("b1").state == "ejected"


def test_view_is_a_snapshot(reg: HealthRegistry, clock: Clock) -> None:
    reg.acquire("b1")
    snapshot = reg.view()
    reg.acquire("b1")
    fail(reg, 5)
    assert snapshot["b1"].in_flight == 1 and snapshot["b1"].state == "healthy"
    assert reg.view()["b1"].in_flight == 2 and reg.view()["b1"].state == "ejected"
    assert list(reg.view()) == ["b1"] and snapshot.taken_at == clock.now


def test_retain_forgets_removed_backends(reg: HealthRegistry) -> None:
    fail(reg, 5, "old")
    reg.acquire("keep")
    reg.retain(["keep"])
    assert set(reg.view()) == {"keep"}
    reg.release("old")  # a late release for a forgotten backend does not bring it back
    assert set(reg.view()) == {"keep"}


def test_long_errors_are_clipped(reg: HealthRegistry) -> None:
    reg.record_failure("b1", "5xx", "x" * 5000)
    error = reg.status("b1").last_error
    assert error is not None and len(error) <= 300


# --- passive ejection cannot be steered by one tenant (issue 9, class 11) ------------------------------------


@pytest.mark.parametrize("kind", ["5xx", "timeout", "connect"])
def test_one_tenant_alone_cannot_eject_a_shared_backend(reg: HealthRegistry, kind: FailureKind) -> None:
    """A tenant whose crafted requests make the upstream fail (or run into the timeout) any number of times in a
    row does not take the backend away from everybody else."""
    for _ in range(100):
        reg.record_failure("b1", kind, "HTTP 500", tenant_id="ten_attacker")
    status = reg.status("b1")
    assert status.state == "healthy" and status.consecutive_failures == 100
    assert reg.view().of("b1").available_at(reg.now())


def test_one_tenant_plus_a_single_stray_failure_is_not_enough(reg: HealthRegistry) -> None:
    """Background noise (one unlucky request of another tenant) must not complete the attacker's streak: one tenant
    supplies at most half (rounded up) of the failures that eject."""
    for _ in range(50):
        reg.record_failure("b1", "5xx", "HTTP 500", tenant_id="ten_attacker")
    reg.record_failure("b1", "5xx", "HTTP 500", tenant_id="ten_honest")
    assert reg.status("b1").state == "healthy"
    reg.record_failure("b1", "5xx", "HTTP 500", tenant_id="ten_other")  # 3 (capped) + 2 others = 5
    assert reg.status("b1").state == "ejected"


def test_failures_spread_over_tenants_still_eject(reg: HealthRegistry, clock: Clock) -> None:
    for i in range(4):
        reg.record_failure("b1", "5xx", "HTTP 503", tenant_id=f"ten_{i % 2}")
    assert reg.status("b1").state == "healthy"
    reg.record_failure("b1", "timeout", "no answer in time", tenant_id="ten_1")  # ten_0: 2, ten_1: 3 (cap 3)
    status = reg.status("b1")
    assert status.state == "ejected" and status.ejected_until == clock.now + 10.0


def test_failures_no_payload_can_cause_count_in_full(reg: HealthRegistry) -> None:
    """A refused TCP connect happens before any payload is sent; the caller reports it without a tenant and it
    counts in full. The same kind with a tenant is capped: aiohttp reports an upstream that drops the connection
    after reading a crafted payload as a connection error too, so the kind alone proves nothing."""
    for _ in range(10):
        reg.record_failure("b1", "connect", "server disconnected", tenant_id="ten_a")
    assert reg.status("b1").state == "healthy"
    for _ in range(2):
        reg.record_failure("b1", "connect", "connection refused")
    assert reg.status("b1").state == "ejected"  # 3 (ten_a, capped) + 2 without a tenant


def test_a_success_resets_the_per_tenant_streak(reg: HealthRegistry) -> None:
    for _ in range(3):
        reg.record_failure("b1", "5xx", "HTTP 500", tenant_id="ten_a")
    reg.record_success("b1", 0.1)
    for i in range(4):  # ten_a's earlier failures no longer count: 1 (a) + 3 others would be needed
        reg.record_failure("b1", "5xx", "HTTP 500", tenant_id="ten_a" if i % 2 else f"ten_{i}")
    assert reg.status("b1").state == "healthy"


def test_threshold_of_two_needs_two_tenants(clock: Clock) -> None:
    reg = HealthRegistry(HealthConfig(consecutive_failures_to_eject=2), clock=clock)
    for _ in range(10):
        reg.record_failure("b1", "5xx", "HTTP 500", tenant_id="ten_a")
    assert reg.status("b1").state == "healthy"
    reg.record_failure("b1", "5xx", "HTTP 500", tenant_id="ten_b")
    assert reg.status("b1").state == "ejected"


def test_per_tenant_cap_is_half_the_threshold_rounded_up() -> None:
    caps = [HealthConfig(consecutive_failures_to_eject=n).per_tenant_cap for n in (1, 2, 3, 5, 7, 10)]
    assert caps == [1, 1, 2, 3, 4, 5]
