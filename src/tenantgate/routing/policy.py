"""Routing policies as pure functions: (deployments, policy, health snapshot, counter) → the order to try them.

Why pure: the decision that sends a request somewhere is the easiest part of a gateway to get subtly wrong and
the hardest to test through sockets. Here it depends only on its arguments (the one piece of state, a per-model
request counter, is passed in by the catalog), so every policy, panic mode and the failover order are tested
as plain function calls.

The order has two parts: the *available* deployments (healthy, or an ejection/cool-down that has run out) ranked
by the policy, then the *unavailable* but not disabled ones, ranked the same way, so a request still has
somewhere to go when everything looks bad. Disabled deployments never appear.

Panic mode (after Envoy's): health information is not allowed to take more than ``max_ejection_share`` of a
model's deployments out of rotation. When fewer than ``ceil(n * (1 - share))`` (at least 1) are available, the
model is in panic and every non-disabled deployment is eligible, healthy ones first. Because unavailable ones
are already appended after the available ones, the resulting order is the same; ``panic`` is reported so the
caller can log it, count it, and keep trying past the available ones instead of giving up early.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Generic, Literal, Protocol, TypeVar, get_args

from tenantgate.routing.snapshot import HealthView

PolicyName = Literal["round_robin", "weighted", "least_outstanding", "priority"]
POLICY_NAMES: tuple[str, ...] = get_args(PolicyName)

# Weighted round robin keeps one period of its schedule per weight combination; above this many slots the
# weights are scaled down (proportions kept to within rounding) so memory and set-up time stay small.
MAX_SCHEDULE = 4096


class Routable(Protocol):
    """What a policy needs to know about a deployment (``Deployment`` satisfies it)."""

    @property
    def backend_id(self) -> str: ...

    @property
    def weight(self) -> int: ...

    @property
    def priority(self) -> int: ...


D = TypeVar("D", bound=Routable)


@dataclass(frozen=True, slots=True)
class ModelPolicy:
    """How one public model spreads requests over its deployments, and where it goes when they all fail."""

    policy: PolicyName = "round_robin"
    fallbacks: tuple[str, ...] = ()
    max_ejection_share: float = 0.5

    def __post_init__(self) -> None:
        # Policies come from config files and the admin API as plain strings: check at build time, not per request.
        if self.policy not in POLICY_NAMES:
            raise ValueError(f"unknown routing policy {self.policy!r}; expected one of {', '.join(POLICY_NAMES)}")
        if not 0.0 <= self.max_ejection_share <= 1.0:
            raise ValueError("max_ejection_share must be between 0 and 1")


@dataclass(frozen=True, slots=True)
class Ordering(Generic[D]):
    """The result of ranking one model's deployments: ``deployments[:available]`` are the healthy ones."""

    deployments: tuple[D, ...]
    available: int
    panic: bool


def order(deployments: Sequence[D], policy: ModelPolicy, health: HealthView, now: float, counter: int) -> Ordering[D]:
    """Rank one model's deployments for one request (see the module docstring for the rules)."""
    usable = [d for d in deployments if health.of(d.backend_id).usable()]
    available = [d for d in usable if health.of(d.backend_id).available_at(now)]
    taken = {id(d) for d in available}
    unavailable = [d for d in usable if id(d) not in taken]
    panic = bool(usable) and len(available) < panic_floor(len(usable), policy.max_ejection_share)
    ranked = rank(policy.policy, available, health, counter) + rank(policy.policy, unavailable, health, counter)
    return Ordering(tuple(ranked), len(available), panic)


def panic_floor(n: int, max_ejection_share: float) -> int:
    """How many of ``n`` deployments must be available to stay out of panic (at least 1 when n > 0)."""
    if n <= 0:
        return 0
    # The epsilon keeps float noise (10 * (1 - 0.9) = 1.0000000000000009) from adding one.
    return max(1, math.ceil(n * (1.0 - max_ejection_share) - 1e-9))


def rank(name: PolicyName, items: Sequence[D], health: HealthView, counter: int) -> list[D]:
    """Order ``items`` by the named policy; the first is the one to use, the rest are the failover order."""
    if not items:
        return []
    if name == "weighted":
        return smooth_weighted(items, counter)
    if name == "least_outstanding":
        return least_outstanding(items, lambda d: health.of(d.backend_id).in_flight, counter)
    if name == "priority":
        return priority_groups(items, counter)
    return round_robin(items, counter)


def round_robin(items: Sequence[D], counter: int) -> list[D]:
    """Start at ``counter mod n`` and wrap around, so consecutive requests start at consecutive deployments."""
    if not items:
        return []
    start = counter % len(items)
    return [*items[start:], *items[:start]]


def least_outstanding(items: Sequence[D], in_flight: Callable[[D], int], counter: int) -> list[D]:
    """Fewest requests in flight (from this replica) first; ties rotate round-robin so idle peers alternate evenly."""
    groups: dict[int, list[D]] = {}
    for item in items:
        groups.setdefault(in_flight(item), []).append(item)
    return [d for load in sorted(groups) for d in round_robin(groups[load], counter)]


def priority_groups(items: Sequence[D], counter: int) -> list[D]:
    """Lowest ``priority`` number first; round-robin inside each group; later groups are the failover order."""
    groups: dict[int, list[D]] = {}
    for item in items:
        groups.setdefault(item.priority, []).append(item)
    return [d for level in sorted(groups) for d in round_robin(groups[level], counter)]


def smooth_weighted(items: Sequence[D], counter: int) -> list[D]:
    """Smooth weighted round robin (nginx's), indexed by ``counter`` instead of keeping per-peer state.

    The first deployment is slot ``counter mod period`` of the deterministic schedule, so over any full period
    each deployment is first exactly in proportion to its weight, evenly interleaved (3:1 → a a b a). The rest
    follow by weight, heaviest first. Weight-0 deployments are standbys: only ever in the failover order.
    """
    weights = tuple(max(0, item.weight) for item in items)
    if not any(weights):
        return round_robin(items, counter)
    schedule = weighted_schedule(weights)
    first = schedule[counter % len(schedule)]
    rest = [i for i in range(len(items)) if i != first]
    rest.sort(key=lambda i: -weights[i])
    return [items[first], *(items[i] for i in rest)]


@lru_cache(maxsize=256)
def weighted_schedule(weights: tuple[int, ...]) -> tuple[int, ...]:
    """One period of smooth WRR picks (indices into ``weights``); cached because weight sets repeat."""
    reduced = _reduce(weights)
    total = sum(reduced)
    current = [0] * len(reduced)
    picks: list[int] = []
    for _ in range(total):
        best = -1
        for i, weight in enumerate(reduced):
            if weight == 0:
                continue
            current[i] += weight
            if best < 0 or current[i] > current[best]:
                best = i
        current[best] -= total
        picks.append(best)
    return tuple(picks)


def _reduce(weights: tuple[int, ...]) -> tuple[int, ...]:
    """Divide by the common factor (3:6 is 1:2, period 3), and scale huge sums down to ``MAX_SCHEDULE``."""
    divisor = math.gcd(*weights)
    reduced = tuple(w // divisor for w in weights)
    total = sum(reduced)
    if total <= MAX_SCHEDULE:
        return reduced
    return tuple(max(1, round(w * MAX_SCHEDULE / total)) if w else 0 for w in reduced)
