"""Redis limit store: one set of limits shared by every gateway replica.

Each operation is a single ``EVALSHA`` of a script from :mod:`tenantgate.limits.lua` (redis-py reloads the
script transparently after ``NOSCRIPT``, e.g. when Redis restarted). This class is deliberately naive about
failures: timeouts, the circuit breaker and the fail mode live in :mod:`tenantgate.limits.resilient`, so the
same code path is used with and without them.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

from tenantgate.limits import algorithms as alg
from tenantgate.limits import lua
from tenantgate.limits.memory import usage_from_state
from tenantgate.limits.model import NO_OVERSHOOT, Demand, Overshoot, Scope, ScopeUsage, Ticket
from tenantgate.limits.periods import period_bounds, period_key

SPEND_GRACE_S = 7 * 86_400.0
"""How long a period's spend key outlives the period: late settles and the admin API can still read it."""
SEED_TTL_S = 40 * 86_400.0
"""``seed_spend`` does not know the period length; a month plus slack covers the longest calendar period."""
_STATE_WIDTH = 6


def _limit_arg(value: int | None) -> str:
    return "-1" if value is None else str(value)


def _spend_ttl_ms(end: float, now: float) -> int:
    """Relative TTL (Redis expires on its own clock, so only durations are portable); 0 = never expire."""
    if math.isinf(end):
        return 0
    return max(int((end - now + SPEND_GRACE_S) * 1000), 1000)


def _parse_states(raw: Sequence[Any], offset: int, count: int) -> list[alg.ScopeState]:
    states = []
    for i in range(count):
        req, tok, oldest, in_flight, reserved, spent = raw[offset + i * _STATE_WIDTH : offset + (i + 1) * _STATE_WIDTH]
        states.append(
            alg.ScopeState(
                requests=int(req),
                tokens=int(tok),
                oldest_at=float(oldest) if oldest else None,
                in_flight=int(in_flight),
                reserved_nano=int(reserved),
                spent_nano=int(spent),
            )
        )
    return states


class RedisLimitStore:
    """Limits and budgets in Redis, exact across replicas (given synced clocks)."""

    def __init__(
        self, client: Redis, *, lease_seconds: float = 600.0, key_prefix: str = "tg:lim:", id_prefix: str = "r_"
    ) -> None:
        self._client = client
        self._lease_seconds = lease_seconds
        self._prefix = key_prefix
        self._id_prefix = id_prefix
        # Every per-scope key is touched at least this often while the scope is active; idle scopes vanish.
        self._idle_ms = str(int((lease_seconds + 2 * alg.WINDOW_S) * 1000))
        self._reserve = client.register_script(lua.RESERVE)
        self._settle = client.register_script(lua.SETTLE)
        self._snapshot = client.register_script(lua.SNAPSHOT)

    @property
    def client(self) -> Redis:
        return self._client

    async def warm(self, connections: int) -> None:
        """Open pooled connections and load the scripts before traffic arrives.

        A cold pool pays a TCP connect (and a NOSCRIPT round trip) inside the first burst's time budget, which
        a busy event loop can turn into false timeouts; paying it at start-up keeps the first burst fast.
        """
        await asyncio.gather(*(self._client.ping() for _ in range(connections)))
        for script in (self._reserve, self._settle, self._snapshot):
            script.sha = await self._client.script_load(script.script)

    def _scope_keys(self, name: str) -> list[str]:
        base = f"{self._prefix}{{{name}}}"
        return [f"{base}:log", f"{base}:lease", f"{base}:h"]

    def _spend_key(self, name: str, period: int) -> str:
        return f"{self._prefix}{{{name}}}:spend:{period}"

    async def reserve(self, scopes: Sequence[Scope], demand: Demand, now: float | None = None) -> Ticket:
        """One script call checks every scope and commits all of them or none."""
        now = time.time() if now is None else now
        unique = alg.dedupe(scopes)
        tid = self._id_prefix + secrets.token_hex(10)
        if not unique:
            return Ticket(id=tid, scopes=unique, demand=demand, reserved_at=now, headers={})
        tokens, cost = alg.clamp_tokens(demand.tokens), alg.cost_to_nano(demand.cost_usd)
        keys: list[str] = []
        args: list[str] = [repr(now), tid, str(tokens), str(cost), repr(self._lease_seconds), self._idle_ms]
        for scope in unique:
            lim = scope.limits
            keys += self._scope_keys(scope.name)
            keys.append(self._spend_key(scope.name, period_key(lim.budget_period, now)))
            budget = None if lim.budget_usd is None else alg.budget_to_nano(lim.budget_usd)
            args += [_limit_arg(lim.rpm), _limit_arg(lim.tpm), _limit_arg(lim.max_concurrency), _limit_arg(budget)]
        raw = await self._reserve(keys=keys, args=args)
        states = _parse_states(raw, 1, len(unique))
        if int(raw[0]) != 1:
            found = alg.violations(unique, states, tokens, cost, now)
            if not found:  # cannot happen while the Lua rule mirrors alg.admits; never admit by accident
                raise RuntimeError("limit script refused but no scope explains why")
            raise alg.refusal(found, alg.rate_headers(unique, states, tokens, now, admitted=False))
        headers = alg.rate_headers(unique, states, tokens, now, admitted=True)
        return Ticket(id=tid, scopes=unique, demand=demand, reserved_at=now, headers=headers)

    async def settle(self, ticket: Ticket, tokens: int, cost_usd: float, now: float | None = None) -> Overshoot:
        """Adjust tokens, release the lease, add spend to the ticket's own period, in one script call.

        Actual usage is billed in full, also beyond the reservation; the overshoot is returned once."""
        if ticket.settled:
            return NO_OVERSHOOT
        ticket.settled = True  # before the await: a concurrent second settle must not double-count spend
        await self.settle_once(ticket, tokens, cost_usd, now)
        return alg.overshoot(ticket.demand, alg.clamp_tokens(tokens), alg.cost_to_nano(cost_usd))

    async def settle_once(self, ticket: Ticket, tokens: int, cost_usd: float, now: float | None = None) -> None:
        """The settle script itself; safe to retry (a marker key makes a repeat a no-op)."""
        if not ticket.scopes:
            return
        now = time.time() if now is None else now
        keys: list[str] = []
        ttls: list[str] = []
        for scope in ticket.scopes:
            start, end = period_bounds(scope.limits.budget_period, ticket.reserved_at)
            keys += self._scope_keys(scope.name)
            keys.append(self._spend_key(scope.name, int(start)))
            ttls.append(str(_spend_ttl_ms(end, now)))
        keys.append(f"{self._prefix}settled:{ticket.id}")
        cost = alg.cost_to_nano(cost_usd)
        marker_ttl = str(int((self._lease_seconds + alg.WINDOW_S) * 1000))
        args = [ticket.id, str(alg.clamp_tokens(tokens)), str(cost), marker_ttl, *ttls, str(alg.MAX_AMOUNT_NANO)]
        await self._settle(keys=keys, args=args)

    async def snapshot(self, scope: Scope, now: float | None = None) -> ScopeUsage:
        now = time.time() if now is None else now
        keys = [*self._scope_keys(scope.name), self._spend_key(scope.name, period_key(scope.limits.budget_period, now))]
        raw = await self._snapshot(keys=keys, args=[repr(now)])
        return usage_from_state(scope, _parse_states(raw, 0, 1)[0], now)

    async def seed_spend(self, scope_name: str, period_start: float, spent_usd: float) -> None:
        """``SET NX``: a replica starting while others already count must not overwrite live spend."""
        key = self._spend_key(scope_name, int(period_start))
        value = str(alg.usd_to_nano(spent_usd))  # an integer in [0, MAX_AMOUNT_NANO], never "-0" or "inf"
        if period_start <= 0:
            await self._client.set(key, value, nx=True)
            return
        ttl_s = max(period_start + SEED_TTL_S - time.time(), 86_400.0)
        await self._client.set(key, value, nx=True, px=int(ttl_s * 1000))

    async def ping(self) -> None:
        await self._client.ping()

    def status(self) -> dict[str, Any]:
        return {"backend": "redis", "state": "ok"}

    async def check(self) -> dict[str, Any]:
        await self.ping()
        return self.status()

    async def close(self) -> None:
        await self._client.aclose()
