"""The limit decisions as pure functions over a snapshot of each scope's counters.

Both stores reduce their state to a :class:`ScopeState` per scope and ask these functions what to do, so
the admission rule, the refusal message and the ``x-ratelimit-*`` headers are written once. The Redis Lua
script has to repeat the admission rule (:func:`admits`) inside Redis for atomicity; the contract suite runs
over both stores so the two copies cannot drift apart silently.

Money is kept in integer nano-USD: sums of many small float costs would drift and a budget of 1.00 could
admit 99 or 101 requests of 0.01 depending on rounding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from tenantgate.core.errors import RateLimited
from tenantgate.limits.model import NO_OVERSHOOT, Demand, Limits, Overshoot, Scope
from tenantgate.limits.periods import describe, iso, period_bounds

WINDOW_S = 60.0
"""Length of the sliding rpm/tpm window."""
NANO_PER_USD = 1_000_000_000
CONCURRENCY_RETRY_S = 1.0
"""Slots free when some request finishes, which we cannot predict; a short hint keeps clients polite."""
RESERVED_BUDGET_RETRY_S = 1.0
"""Budget blocked only by in-flight worst cases frees up as those settle below their estimates."""
TOTAL_BUDGET_RETRY_S = 86_400.0
"""A ``total`` budget never resets; advertise a day together with ``x-should-retry: false``."""

Kind = Literal["requests", "tokens", "concurrency", "budget"]


MAX_COST_NANO = 10**15
"""One reservation, settle or refund counts at most 1,000,000 USD: a bigger (or infinite, or NaN) cost can only
come from a broken price and must neither crash the store nor overflow Redis's 64-bit integers."""
MAX_AMOUNT_NANO = 10**18
"""Budgets, seeded spend and a period's accumulated spend saturate at 1e9 USD (Redis integers end at ~9.2e18)."""
MAX_TOKENS = 10**12
"""Token counts per reservation or settle are clamped here for the same reason."""


def usd_to_nano(usd: float, cap: int = MAX_AMOUNT_NANO) -> int:
    """Dollars to integer nano-dollars, rounded so 0.01 is exactly 10_000_000, clamped to ``[0, cap]``.

    Never negative (``-0.0`` and any negative become ``0``: Redis's integer commands reject ``"-0"``), never
    above ``cap``; ``+inf`` and NaN become ``cap``, so a broken price refuses under a budget instead of
    passing for free or raising.
    """
    if usd != usd or usd >= cap / NANO_PER_USD:  # NaN compares unequal to itself
        return cap
    if usd <= 0:
        return 0
    return min(round(usd * NANO_PER_USD), cap)


def cost_to_nano(usd: float) -> int:
    """A request's cost (reserve, settle): :func:`usd_to_nano` capped at :data:`MAX_COST_NANO`."""
    return usd_to_nano(usd, MAX_COST_NANO)


def budget_to_nano(usd: float) -> int:
    """A budget: like :func:`usd_to_nano`, but a NaN budget is 0 (refuse), never "unlimited"."""
    return 0 if usd != usd else usd_to_nano(usd)


def clamp_tokens(tokens: float) -> int:
    """A token count in ``[0, MAX_TOKENS]``; NaN counts as the maximum (refused by any tpm limit)."""
    if tokens != tokens or tokens >= MAX_TOKENS:
        return MAX_TOKENS
    return int(tokens) if tokens > 0 else 0


def add_spend(spent: int, cost: int) -> int:
    """A period's spend after a settle: saturates at :data:`MAX_AMOUNT_NANO` (mirrored in the settle script)."""
    return min(spent + cost, MAX_AMOUNT_NANO)


def nano_to_usd(nano: int) -> float:
    return nano / NANO_PER_USD


def overshoot(demand: Demand, tokens: int, cost_nano: int) -> Overshoot:
    """How far settled usage (already clamped) went beyond what ``demand`` reserved."""
    extra_tokens = max(tokens - clamp_tokens(demand.tokens), 0)
    extra_nano = max(cost_nano - cost_to_nano(demand.cost_usd), 0)
    return Overshoot(extra_tokens, extra_nano) if extra_tokens or extra_nano else NO_OVERSHOOT


@dataclass(frozen=True, slots=True)
class ScopeState:
    """One scope's counters at ``now`` after expired entries were swept (before this request counts)."""

    requests: int
    tokens: int
    oldest_at: float | None
    in_flight: int
    reserved_nano: int
    spent_nano: int


@dataclass(frozen=True, slots=True)
class Violation:
    """Why one scope refuses. ``final`` means retrying cannot help before ``retry_after``."""

    scope: str
    kind: Kind
    message: str
    retry_after: float
    final: bool = False


def admits(limits: Limits, state: ScopeState, tokens: int, cost_nano: int) -> bool:
    """The admission rule; mirrored line by line in the Redis reserve script."""
    if limits.rpm is not None and state.requests + 1 > limits.rpm:
        return False
    if limits.tpm is not None and state.tokens + tokens > limits.tpm:
        return False
    if limits.max_concurrency is not None and state.in_flight + 1 > limits.max_concurrency:
        return False
    if limits.budget_usd is not None:
        return state.spent_nano + state.reserved_nano + cost_nano <= budget_to_nano(limits.budget_usd)
    return True


def _until_oldest_leaves(state: ScopeState, now: float) -> float:
    if state.oldest_at is None:
        return WINDOW_S
    return max(state.oldest_at + WINDOW_S - now, 0.001)


def _rate_violations(scope: Scope, state: ScopeState, tokens: int, now: float) -> list[Violation]:
    lim, out = scope.limits, []
    if lim.rpm is not None and state.requests + 1 > lim.rpm:
        wait = _until_oldest_leaves(state, now)
        msg = f"Rate limit reached for {scope.name}: {lim.rpm} requests per minute. Retry after {wait:.1f} s."
        out.append(Violation(scope.name, "requests", msg, wait))
    if lim.tpm is not None and tokens > lim.tpm:
        msg = (
            f"Request too large for {scope.name}: {tokens} estimated tokens exceed the limit of "
            f"{lim.tpm} tokens per minute. Lower max_tokens or shorten the prompt."
        )
        out.append(Violation(scope.name, "tokens", msg, WINDOW_S, final=True))
    elif lim.tpm is not None and state.tokens + tokens > lim.tpm:
        wait = _until_oldest_leaves(state, now)
        msg = (
            f"Rate limit reached for {scope.name}: {lim.tpm} tokens per minute "
            f"(used {state.tokens}, requested {tokens}). Retry after {wait:.1f} s."
        )
        out.append(Violation(scope.name, "tokens", msg, wait))
    if lim.max_concurrency is not None and state.in_flight + 1 > lim.max_concurrency:
        msg = (
            f"Concurrency limit reached for {scope.name}: {lim.max_concurrency} requests in flight. "
            f"Retry after {CONCURRENCY_RETRY_S:.1f} s."
        )
        out.append(Violation(scope.name, "concurrency", msg, CONCURRENCY_RETRY_S))
    return out


def _usd(amount: float) -> str:
    """Cents when the amount is whole cents (``"1.00"``), otherwise enough digits to be exact-looking."""
    return f"{amount:.2f}" if round(amount, 2) == amount else f"{amount:.6g}"


def _budget_violation(scope: Scope, state: ScopeState, cost_nano: int, now: float) -> Violation | None:
    lim = scope.limits
    if lim.budget_usd is None:
        return None
    budget = budget_to_nano(lim.budget_usd)
    if state.spent_nano + state.reserved_nano + cost_nano <= budget:
        return None
    head = f"Budget for {scope.name} is {_usd(lim.budget_usd)} USD {describe(lim.budget_period)}"
    if state.spent_nano + cost_nano > budget:
        _, end = period_bounds(lim.budget_period, now)
        wait = TOTAL_BUDGET_RETRY_S if math.isinf(end) else max(end - now, 0.001)
        resets = "It does not reset." if math.isinf(end) else f"It resets at {iso(end)}."
        msg = (
            f"{head}; {nano_to_usd(state.spent_nano):.4f} USD spent and this request may cost up to "
            f"{nano_to_usd(cost_nano):.4f} USD. {resets}"
        )
        return Violation(scope.name, "budget", msg, wait, final=True)
    msg = (
        f"{head}; in-flight requests have reserved the rest ({nano_to_usd(state.reserved_nano):.4f} USD). "
        f"Retry after {RESERVED_BUDGET_RETRY_S:.1f} s."
    )
    return Violation(scope.name, "budget", msg, RESERVED_BUDGET_RETRY_S)


def violations(
    scopes: Sequence[Scope], states: Sequence[ScopeState], tokens: int, cost_nano: int, now: float
) -> list[Violation]:
    """Every reason any scope refuses; empty means admit. Agrees with :func:`admits` by construction."""
    found: list[Violation] = []
    for scope, state in zip(scopes, states, strict=True):
        found.extend(_rate_violations(scope, state, tokens, now))
        budget = _budget_violation(scope, state, cost_nano, now)
        if budget is not None:
            found.append(budget)
    return found


def most_relevant(found: Sequence[Violation]) -> Violation:
    """The refusal to report: a final one (retrying will not help) first, then the longest wait."""
    return max(found, key=lambda v: (v.final, v.retry_after))


def _fmt_duration(seconds: float) -> str:
    """OpenAI-style short duration, e.g. ``"1.2s"`` or ``"60s"``."""
    text = f"{max(seconds, 0.0):.3f}".rstrip("0").rstrip(".")
    return f"{text}s"


def _most_constraining(
    scopes: Sequence[Scope], states: Sequence[ScopeState], kind: Kind, used: int
) -> tuple[int, int, float | None] | None:
    """``(limit, remaining, oldest_at)`` of the scope with the fewest remaining, or None if none limits."""
    best: tuple[int, int, float | None] | None = None
    for scope, state in zip(scopes, states, strict=True):
        limit = scope.limits.rpm if kind == "requests" else scope.limits.tpm
        if limit is None:
            continue
        current = state.requests if kind == "requests" else state.tokens
        remaining = max(limit - current - used, 0)
        if best is None or remaining < best[1]:
            best = (limit, remaining, state.oldest_at)
    return best


def rate_headers(
    scopes: Sequence[Scope], states: Sequence[ScopeState], tokens: int, now: float, *, admitted: bool
) -> dict[str, str]:
    """``x-ratelimit-*`` for requests and tokens; a pair is omitted when no scope has that limit.

    ``reset`` is the time until the oldest counted entry leaves the window, i.e. until ``remaining`` next
    grows; a sliding window has no single moment where it resets to full.
    """
    headers: dict[str, str] = {}
    kinds: tuple[tuple[Kind, int], ...] = (("requests", 1), ("tokens", tokens))
    for kind, used in kinds:
        found = _most_constraining(scopes, states, kind, used if admitted else 0)
        if found is None:
            continue
        limit, remaining, oldest = found
        if oldest is None and admitted:
            oldest = now
        reset = 0.0 if oldest is None else oldest + WINDOW_S - now
        headers[f"x-ratelimit-limit-{kind}"] = str(limit)
        headers[f"x-ratelimit-remaining-{kind}"] = str(remaining)
        headers[f"x-ratelimit-reset-{kind}"] = _fmt_duration(reset)
    return headers


def refusal(found: Sequence[Violation], rate: dict[str, str]) -> RateLimited:
    """The ``RateLimited`` error for a refused reservation, with retry and rate-limit headers."""
    chosen = most_relevant(found)
    wait = round(chosen.retry_after, 3)
    headers = {
        "retry-after": str(max(1, math.ceil(wait))),
        "retry-after-ms": str(max(1, math.ceil(wait * 1000))),
        **rate,
    }
    if chosen.final:
        headers["x-should-retry"] = "false"
    if chosen.kind == "budget":
        exc = RateLimited(chosen.message, code="insufficient_quota", headers=headers)
        exc.type = "insufficient_quota"
    else:
        exc = RateLimited(chosen.message, code="rate_limit_exceeded", headers=headers)
    exc.limit_kind = _METRIC_KIND[chosen.kind]
    return exc


_METRIC_KIND = {"requests": "rpm", "tokens": "tpm", "concurrency": "concurrency", "budget": "budget"}


def dedupe(scopes: Sequence[Scope]) -> tuple[Scope, ...]:
    """Drop repeated scope names (first wins): counting one level twice would halve its limits."""
    seen: set[str] = set()
    out: list[Scope] = []
    for scope in scopes:
        if scope.name not in seen:
            seen.add(scope.name)
            out.append(scope)
    return tuple(out)
