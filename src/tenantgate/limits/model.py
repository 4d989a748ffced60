"""The vocabulary of the limits part: what a limit is, what a request asks for, what a reservation holds.

These are plain values so the edge, the admin API and both store implementations can share them without
importing each other. Everything a store needs to settle a reservation later is inside the :class:`Ticket`,
so settling never depends on the (possibly changed) limits configuration at settle time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

BudgetPeriod = Literal["total", "daily", "weekly", "monthly"]


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits of one level (key, user, tenant). ``None`` means unlimited."""

    rpm: int | None = None
    tpm: int | None = None
    max_concurrency: int | None = None
    budget_usd: float | None = None
    budget_period: BudgetPeriod = "monthly"


@dataclass(frozen=True, slots=True)
class Scope:
    """One level a request is counted against. ``name`` is opaque to the store, e.g. ``"tenant:ten_abc"``."""

    name: str
    limits: Limits


@dataclass(frozen=True, slots=True)
class Demand:
    """What a request may consume at worst, known before the call."""

    tokens: int
    cost_usd: float

    def __post_init__(self) -> None:
        # Negative demands would let a caller mint headroom; refuse them at the boundary.
        if self.tokens < 0 or self.cost_usd < 0:
            raise ValueError("demand tokens and cost must not be negative")


@dataclass(slots=True)
class Ticket:
    """An admitted reservation; hand it back to :meth:`LimitStore.settle` exactly once (more is harmless).

    ``settled`` is flipped by the store before it talks to its backend, which is what makes a second settle
    of the same ticket a no-op even when the first one is still in flight.
    """

    id: str
    scopes: tuple[Scope, ...]
    demand: Demand
    reserved_at: float
    headers: dict[str, str]
    settled: bool = field(default=False)


@dataclass(frozen=True, slots=True)
class Overshoot:
    """How far a settled request went beyond its reservation; zero (and falsy) when it stayed within.

    The store bills the actual usage in full either way (never clamped to the reservation); this only tells the
    caller by how much the upstream exceeded what was reserved, e.g. for a metric.
    """

    tokens: int = 0
    nano_usd: int = 0

    @property
    def cost_usd(self) -> float:
        return self.nano_usd / 1_000_000_000

    def __bool__(self) -> bool:
        return self.tokens > 0 or self.nano_usd > 0


NO_OVERSHOOT = Overshoot()


@dataclass(frozen=True, slots=True)
class ScopeUsage:
    """A point-in-time view of one scope for the admin API and dashboards."""

    scope: str
    limits: Limits
    requests: int
    tokens: int
    in_flight: int
    spent_usd: float
    reserved_usd: float
    remaining_usd: float | None
    period_start: str
    period_end: str | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form, so the admin API does not need to know the field list."""
        return {
            "scope": self.scope,
            "requests": self.requests,
            "tokens": self.tokens,
            "in_flight": self.in_flight,
            "spent_usd": self.spent_usd,
            "reserved_usd": self.reserved_usd,
            "remaining_usd": self.remaining_usd,
            "period_start": self.period_start,
            "period_end": self.period_end,
            "limits": {
                "rpm": self.limits.rpm,
                "tpm": self.limits.tpm,
                "max_concurrency": self.limits.max_concurrency,
                "budget_usd": self.limits.budget_usd,
                "budget_period": self.limits.budget_period,
            },
        }


class LimitStore(Protocol):
    """Where limit state lives. Memory (one process) and Redis (several replicas) behave identically."""

    async def reserve(self, scopes: Sequence[Scope], demand: Demand, now: float | None = None) -> Ticket:
        """Admit over every scope or none; raises ``RateLimited`` when any scope refuses."""
        ...

    async def settle(self, ticket: Ticket, tokens: int, cost_usd: float, now: float | None = None) -> Overshoot:
        """Replace the estimate with actual usage (billed in full, even beyond the reservation) and free the
        concurrency slot. Idempotent, never raises. Returns how far the usage exceeded the reservation, once:
        a repeated settle of the same ticket returns :data:`NO_OVERSHOOT`."""
        ...

    async def snapshot(self, scope: Scope, now: float | None = None) -> ScopeUsage:
        """Current usage of one scope."""
        ...

    async def seed_spend(self, scope_name: str, period_start: float, spent_usd: float) -> None:
        """Set a period's spend from the usage ledger, only if the store has none for it yet."""
        ...

    def status(self) -> dict[str, Any]:
        """Cheap, synchronous health for /health and metrics."""
        ...

    async def check(self) -> dict[str, Any]:
        """Like :meth:`status`, but may probe the backend so an idle gateway notices recovery."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
