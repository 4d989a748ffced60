"""What routing reads about backends: the health settings, one backend's status, and the immutable view of all
of them that a request takes once (see :mod:`tenantgate.routing.health` for the state machine that writes them).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

HealthState = Literal["healthy", "ejected", "cooling", "unhealthy", "disabled"]
FailureKind = Literal["connect", "timeout", "5xx"]


@dataclass(frozen=True, slots=True)
class HealthConfig:
    """Thresholds and times of the state machine; defaults follow common outlier-detection practice."""

    consecutive_failures_to_eject: int = 5
    base_ejection_s: float = 10.0
    max_ejection_s: float = 300.0
    ejection_decay_s: float | None = None  # None = 10 x base_ejection_s
    default_retry_after_s: float = 5.0
    max_retry_after_s: float = 300.0
    unhealthy_threshold: int = 3
    healthy_threshold: int = 2
    latency_alpha: float = 0.3

    def __post_init__(self) -> None:
        if self.consecutive_failures_to_eject < 1 or self.unhealthy_threshold < 1 or self.healthy_threshold < 1:
            raise ValueError("failure and success thresholds must be at least 1")
        if self.base_ejection_s <= 0 or self.max_ejection_s < self.base_ejection_s:
            raise ValueError("need 0 < base_ejection_s <= max_ejection_s")
        if not 0 < self.latency_alpha <= 1:
            raise ValueError("latency_alpha must be in (0, 1]")

    @property
    def per_tenant_cap(self) -> int:
        """How many of one tenant's 5xx/timeouts count in one streak: half the threshold, rounded up."""
        return (self.consecutive_failures_to_eject + 1) // 2

    @property
    def decay_s(self) -> float:
        return self.ejection_decay_s if self.ejection_decay_s is not None else 10 * self.base_ejection_s


@dataclass(frozen=True, slots=True)
class BackendStatus:
    """What routing and the admin API know about one backend at one instant.

    ``ejected_until`` / ``cooling_until`` are set only while that condition is active (clock time, the same
    clock as the registry's), so a cached snapshot can still tell when an ejection or cool-down has run out.
    """

    state: HealthState = "healthy"
    healthy: bool = True
    last_error: str | None = None
    latency_ewma_ms: float | None = None
    in_flight: int = 0
    ejected_until: float | None = None
    consecutive_failures: int = 0
    cooling_until: float | None = None
    times_ejected: int = 0
    probe_latency_ms: float | None = None

    def usable(self) -> bool:
        """May routing send anything here at all? Only an admin switch says no for good."""
        return self.state != "disabled"

    def available_at(self, now: float) -> bool:
        """Is the backend a first-choice target at ``now``? Ejections and cool-downs that ran out count as over."""
        if self.state == "healthy":
            return True
        if self.state in ("ejected", "cooling"):
            ends = [t for t in (self.ejected_until, self.cooling_until) if t is not None]
            return bool(ends) and max(ends) <= now  # no end time known: out until a fresh view says otherwise
        return False


UNKNOWN = BackendStatus()  # a backend never heard of: healthy, so traffic flows before the first probe


class HealthView(Mapping[str, BackendStatus]):
    """An immutable snapshot backend_id → status; :meth:`of` answers "healthy" for backends never seen."""

    __slots__ = ("_statuses", "taken_at")

    def __init__(self, statuses: Mapping[str, BackendStatus], taken_at: float = 0.0) -> None:
        self._statuses: Mapping[str, BackendStatus] = MappingProxyType(dict(statuses))
        self.taken_at = taken_at

    @classmethod
    def empty(cls) -> HealthView:
        """A view in which every backend is healthy: routing without health information."""
        return cls({})

    def of(self, backend_id: str) -> BackendStatus:
        return self._statuses.get(backend_id, UNKNOWN)

    def __getitem__(self, backend_id: str) -> BackendStatus:
        return self._statuses[backend_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._statuses)

    def __len__(self) -> int:
        return len(self._statuses)
