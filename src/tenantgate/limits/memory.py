"""In-process limit store: exact limits for one gateway process.

Atomicity comes from asyncio itself: ``reserve`` and ``settle`` never await between reading and writing the
counters, so no other request can interleave, exactly like a Lua script inside Redis. The data structures
mirror the Redis ones (a sliding log of admitted requests, a set of leases, spend per calendar period) so both
stores give the same answers for the same sequence of calls and clock values.
"""

from __future__ import annotations

import heapq
import secrets
import time
from collections.abc import Sequence
from typing import Any

from tenantgate.limits import algorithms as alg
from tenantgate.limits.model import NO_OVERSHOOT, Demand, Overshoot, Scope, ScopeUsage, Ticket
from tenantgate.limits.periods import iso, period_bounds, period_key

_KEPT_PERIODS = 4


class _ScopeCounters:
    """Counters of one scope. Heaps keep expiry exact even if callers' clocks arrive slightly out of order."""

    __slots__ = ("lease_heap", "leases", "log", "log_tokens", "reserved", "tokens")

    def __init__(self) -> None:
        self.log: list[tuple[float, str]] = []  # heap of (reserved_at, ticket id) inside the window
        self.log_tokens: dict[str, int] = {}  # ticket id -> tokens currently counted for it
        self.tokens = 0  # sum of log_tokens
        self.lease_heap: list[tuple[float, str]] = []  # heap of (expires_at, ticket id); may hold stale ones
        self.leases: dict[str, tuple[float, int]] = {}  # ticket id -> (expires_at, reserved nano-USD)
        self.reserved = 0  # sum of the leases' reserved money

    def sweep(self, now: float) -> None:
        """Forget log entries that left the window and leases that expired (a crashed caller's slots)."""
        cutoff = now - alg.WINDOW_S
        while self.log and self.log[0][0] <= cutoff:
            _, tid = heapq.heappop(self.log)
            self.tokens -= self.log_tokens.pop(tid)
        while self.lease_heap and self.lease_heap[0][0] <= now:
            expires, tid = heapq.heappop(self.lease_heap)
            lease = self.leases.get(tid)
            if lease is not None and lease[0] == expires:
                del self.leases[tid]
                self.reserved -= lease[1]
        if len(self.lease_heap) > 2 * len(self.leases) + 64:
            # Settled leases stay in the heap until their expiry; rebuild so a busy scope does not bloat.
            self.lease_heap = [(exp, tid) for tid, (exp, _) in self.leases.items()]
            heapq.heapify(self.lease_heap)

    def state(self, spent_nano: int) -> alg.ScopeState:
        oldest = self.log[0][0] if self.log else None
        return alg.ScopeState(
            requests=len(self.log),
            tokens=self.tokens,
            oldest_at=oldest,
            in_flight=len(self.leases),
            reserved_nano=self.reserved,
            spent_nano=spent_nano,
        )

    def commit(self, tid: str, now: float, tokens: int, cost_nano: int, lease_seconds: float) -> None:
        heapq.heappush(self.log, (now, tid))
        self.log_tokens[tid] = tokens
        self.tokens += tokens
        expires = now + lease_seconds
        heapq.heappush(self.lease_heap, (expires, tid))
        self.leases[tid] = (expires, cost_nano)
        self.reserved += cost_nano

    def settle(self, tid: str, tokens: int) -> None:
        counted = self.log_tokens.get(tid)
        if counted is not None:  # still inside the window: count actual tokens at the original timestamp
            self.log_tokens[tid] = tokens
            self.tokens += tokens - counted
        lease = self.leases.pop(tid, None)
        if lease is not None:
            self.reserved -= lease[1]


class MemoryLimitStore:
    """Limits for a single process; also the local fallback of the Redis store."""

    def __init__(self, *, lease_seconds: float = 600.0, id_prefix: str = "m_") -> None:
        self._lease_seconds = lease_seconds
        self._id_prefix = id_prefix
        self._scopes: dict[str, _ScopeCounters] = {}
        self._spent: dict[str, dict[int, int]] = {}  # scope name -> period start -> spent nano-USD

    def _counters(self, name: str) -> _ScopeCounters:
        counters = self._scopes.get(name)
        if counters is None:
            counters = self._scopes[name] = _ScopeCounters()
        return counters

    def _spent_in(self, scope: Scope, now: float) -> int:
        periods = self._spent.get(scope.name)
        if not periods:
            return 0
        return periods.get(period_key(scope.limits.budget_period, now), 0)

    async def reserve(self, scopes: Sequence[Scope], demand: Demand, now: float | None = None) -> Ticket:
        """Check every scope, then commit every scope, with no await in between (atomic under asyncio)."""
        now = time.time() if now is None else now
        unique = alg.dedupe(scopes)
        tokens, cost = alg.clamp_tokens(demand.tokens), alg.cost_to_nano(demand.cost_usd)
        states = []
        for scope in unique:
            counters = self._counters(scope.name)
            counters.sweep(now)
            states.append(counters.state(self._spent_in(scope, now)))
        found = alg.violations(unique, states, tokens, cost, now)
        if found:
            raise alg.refusal(found, alg.rate_headers(unique, states, tokens, now, admitted=False))
        tid = self._id_prefix + secrets.token_hex(10)
        for scope in unique:
            self._scopes[scope.name].commit(tid, now, tokens, cost, self._lease_seconds)
        headers = alg.rate_headers(unique, states, tokens, now, admitted=True)
        return Ticket(id=tid, scopes=unique, demand=demand, reserved_at=now, headers=headers)

    async def settle(self, ticket: Ticket, tokens: int, cost_usd: float, now: float | None = None) -> Overshoot:
        """Spend lands in the period the ticket was reserved in, so a rollover never charges the new one.

        Actual usage is billed in full, also beyond the reservation (an overshoot then refuses the scope until
        the window slides or the period ends)."""
        if ticket.settled:
            return NO_OVERSHOOT
        ticket.settled = True
        tokens, cost = alg.clamp_tokens(tokens), alg.cost_to_nano(cost_usd)
        for scope in ticket.scopes:
            self._counters(scope.name).settle(ticket.id, tokens)
            if cost:
                periods = self._spent.setdefault(scope.name, {})
                key = period_key(scope.limits.budget_period, ticket.reserved_at)
                periods[key] = alg.add_spend(periods.get(key, 0), cost)
                _forget_old_periods(periods)
        return alg.overshoot(ticket.demand, tokens, cost)

    async def snapshot(self, scope: Scope, now: float | None = None) -> ScopeUsage:
        now = time.time() if now is None else now
        counters = self._counters(scope.name)
        counters.sweep(now)
        return usage_from_state(scope, counters.state(self._spent_in(scope, now)), now)

    async def seed_spend(self, scope_name: str, period_start: float, spent_usd: float) -> None:
        periods = self._spent.setdefault(scope_name, {})
        periods.setdefault(int(period_start), alg.usd_to_nano(spent_usd))
        _forget_old_periods(periods)

    def status(self) -> dict[str, Any]:
        return {"backend": "memory", "state": "ok"}

    async def check(self) -> dict[str, Any]:
        return self.status()

    async def close(self) -> None:
        self._scopes.clear()
        self._spent.clear()


def _forget_old_periods(periods: dict[int, int]) -> None:
    """Keep the few most recent periods: enough for late settles and rollover, bounded like Redis TTLs."""
    while len(periods) > _KEPT_PERIODS:
        del periods[min(periods)]


def usage_from_state(scope: Scope, state: alg.ScopeState, now: float) -> ScopeUsage:
    """Shared by both stores so the admin API sees the same shape from either."""
    start, end = period_bounds(scope.limits.budget_period, now)
    remaining: float | None = None
    if scope.limits.budget_usd is not None:
        left = alg.budget_to_nano(scope.limits.budget_usd) - state.spent_nano - state.reserved_nano
        remaining = alg.nano_to_usd(max(left, 0))
    return ScopeUsage(
        scope=scope.name,
        limits=scope.limits,
        requests=state.requests,
        tokens=state.tokens,
        in_flight=state.in_flight,
        spent_usd=alg.nano_to_usd(state.spent_nano),
        reserved_usd=alg.nano_to_usd(state.reserved_nano),
        remaining_usd=remaining,
        period_start=iso(start),
        period_end=None if end == float("inf") else iso(end),
    )
