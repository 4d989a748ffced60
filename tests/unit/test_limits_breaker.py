"""The circuit breaker's state machine, driven by a fake monotonic clock."""

from __future__ import annotations

import pytest

from tenantgate.limits.breaker import CircuitBreaker


def state(breaker: CircuitBreaker) -> str:
    """Read the state without letting the type checker narrow it between calls."""
    return breaker.state


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_consecutive_failures_only() -> None:
    breaker = CircuitBreaker(threshold=3, cooldown_s=1.0, clock=Clock())
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # resets the count
    breaker.record_failure()
    breaker.record_failure()
    assert state(breaker) == "closed" and breaker.allow()
    assert breaker.record_failure() is True  # this one opened the circuit
    assert state(breaker) == "open" and not breaker.allow()
    assert breaker.record_failure() is False  # already open: nothing new to report


def test_half_open_lets_one_probe_through() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=1, cooldown_s=1.0, clock=clock)
    breaker.record_failure()
    clock.now += 0.99
    assert not breaker.allow()
    clock.now += 0.02
    assert breaker.allow() and state(breaker) == "half_open"
    assert not breaker.allow()  # only one probe at a time
    breaker.record_failure()  # probe failed: open again for a full cool-down
    assert state(breaker) == "open" and not breaker.allow()
    clock.now += 1.0
    assert breaker.allow()
    assert breaker.record_success() is True  # recovered
    assert state(breaker) == "closed" and breaker.failures == 0 and breaker.allow()
    assert breaker.record_success() is False


def test_abandoned_or_silent_probe_does_not_wedge_the_breaker() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=1, cooldown_s=1.0, clock=clock)
    breaker.record_failure()
    clock.now += 1.0
    assert breaker.allow()
    breaker.abandon()  # the probing request was cancelled
    assert breaker.allow()  # the next caller may probe at once
    clock.now += 1.0  # that probe never reported back either
    assert breaker.allow()


def test_threshold_must_be_positive() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(threshold=0)
