"""A small circuit breaker so a dead Redis costs one failed call per cool-down, not one per request.

Closed: calls go through and consecutive failures are counted. Open: calls are refused at once until the
cool-down passes. Half-open: exactly one call probes; success closes, failure re-opens. A probe that never
reports back (its request was cancelled) is given up after another cool-down, so the breaker cannot wedge.
Uses a monotonic clock, not the wall clock callers pass to the stores.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

BreakerState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Consecutive-failure breaker; not thread-safe (one event loop owns it)."""

    def __init__(
        self, *, threshold: int = 5, cooldown_s: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if threshold < 1:
            raise ValueError("threshold must be at least 1")
        self._threshold = threshold
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._state: BreakerState = "closed"
        self._failures = 0
        self._since = 0.0  # when the breaker opened, or when the current probe started

    @property
    def state(self) -> BreakerState:
        return self._state

    @property
    def failures(self) -> int:
        return self._failures

    def allow(self) -> bool:
        """May a call go to the backend now? Moving to half-open hands out the single probe."""
        if self._state == "closed":
            return True
        if self._clock() - self._since < self._cooldown_s:
            return False
        # Open with the cool-down over, or a half-open probe that went silent: start a (new) probe.
        self._state = "half_open"
        self._since = self._clock()
        return True

    def record_success(self) -> bool:
        """Returns True when this success closed an open circuit (worth one log line)."""
        recovered = self._state != "closed"
        self._state = "closed"
        self._failures = 0
        return recovered

    def record_failure(self) -> bool:
        """Returns True when this failure opened the circuit (worth one log line, not one per request)."""
        self._failures += 1
        if self._state == "half_open" or self._failures >= self._threshold:
            opened = self._state != "open"
            self._state = "open"
            self._since = self._clock()
            return opened
        return False

    def abandon(self) -> None:
        """The call ended without a verdict (cancelled): let the next caller probe instead."""
        if self._state == "half_open":
            self._state = "open"
            self._since = self._clock() - self._cooldown_s
