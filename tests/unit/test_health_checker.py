"""The active health checker with fake probes: thresholds over rounds, timeouts, and a loop that never dies."""

from __future__ import annotations

import asyncio

from tenantgate.routing.checker import HealthChecker, Target
from tenantgate.routing.health import HealthRegistry

GOOD = Target("good", "http://good/v1")
BAD = Target("bad", "http://bad/v1")


class FakeProbe:
    def __init__(self) -> None:
        self.down: set[str] = set()
        self.calls: list[str] = []

    async def __call__(self, target: Target) -> float:
        self.calls.append(target.backend_id)
        if target.backend_id in self.down:
            raise ConnectionRefusedError("connection refused")
        return 0.005


async def test_failing_target_goes_unhealthy_after_three_rounds_and_recovers_after_two() -> None:
    registry = HealthRegistry()
    probe = FakeProbe()
    checker = HealthChecker(registry, probe)
    checker.set_targets([GOOD, BAD])
    probe.down.add("bad")
    for _ in range(2):
        await checker.run_once()
    assert registry.status("bad").state == "healthy"
    await checker.run_once()
    bad = registry.status("bad")
    assert bad.state == "unhealthy" and bad.last_error == "health check: ConnectionRefusedError: connection refused"
    assert registry.status("good").state == "healthy"
    probe.down.clear()
    await checker.run_once()
    assert registry.status("bad").state == "unhealthy"
    await checker.run_once()
    assert registry.status("bad").state == "healthy"
    assert probe.calls.count("good") == probe.calls.count("bad") == 5 and checker.rounds == 5


async def test_a_hanging_probe_times_out_without_delaying_the_others() -> None:
    registry = HealthRegistry()

    async def probe(target: Target) -> float:
        if target.backend_id == "bad":
            await asyncio.sleep(10)
        return 0.001

    checker = HealthChecker(registry, probe, timeout_s=0.05)
    checker.set_targets([GOOD, BAD])
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(3):
        await checker.run_once()
    assert loop.time() - started < 1.0
    assert registry.status("bad").state == "unhealthy"
    assert registry.status("bad").last_error == "health check: no answer within 0.05s"
    assert registry.status("good").probe_latency_ms == 1.0


async def test_set_targets_replaces_the_list() -> None:
    registry = HealthRegistry()
    probe = FakeProbe()
    checker = HealthChecker(registry, probe)
    checker.set_targets([GOOD, BAD, Target("good", "http://good/v1")])
    assert [t.backend_id for t in checker.targets] == ["good", "bad"]
    checker.set_targets([BAD])
    await checker.run_once()
    assert probe.calls == ["bad"]


async def test_unexpected_errors_do_not_stop_the_loop() -> None:
    registry = HealthRegistry()
    calls = 0

    async def probe(target: Target) -> float:
        nonlocal calls
        calls += 1
        if calls % 2:
            raise RuntimeError("probe bug")
        return 0.001

    checker = HealthChecker(registry, probe, interval_s=0.01)
    checker.set_targets([GOOD])
    # A registry that breaks once must not end the loop either.
    original = registry.record_probe
    broken = {"left": 1}

    def flaky_record(*args: object, **kwargs: object) -> None:
        if broken["left"]:
            broken["left"] -= 1
            raise LookupError("registry bug")
        original(*args, **kwargs)  # type: ignore[arg-type]

    registry.record_probe = flaky_record  # type: ignore[method-assign]
    checker.start()
    checker.start()  # idempotent: still one loop
    for _ in range(200):
        if calls >= 6:
            break
        await asyncio.sleep(0.01)
    assert checker.running
    await checker.stop()
    assert not checker.running
    assert calls >= 6
    after_stop = calls
    await asyncio.sleep(0.05)
    assert calls == after_stop  # stopped means stopped
    assert registry.status("good").last_error == "health check: RuntimeError: probe bug"
