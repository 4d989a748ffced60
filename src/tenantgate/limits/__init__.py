"""Limits and budgets: reserve before the upstream call, settle after it.

The edge builds one :class:`Scope` per level (key, user, tenant), calls :meth:`LimitStore.reserve` with the
request's worst case, and in a ``finally`` calls :meth:`LimitStore.settle` with the real usage. Decisions are
pure functions (:mod:`.algorithms`, :mod:`.periods`); state lives in a memory or a Redis store that behave the
same, built by :func:`build_limit_store`.
"""

from tenantgate.limits.factory import build_limit_store
from tenantgate.limits.memory import MemoryLimitStore
from tenantgate.limits.model import (
    NO_OVERSHOOT,
    BudgetPeriod,
    Demand,
    Limits,
    LimitStore,
    Overshoot,
    Scope,
    ScopeUsage,
    Ticket,
)
from tenantgate.limits.periods import period_bounds
from tenantgate.limits.redis_store import RedisLimitStore
from tenantgate.limits.resilient import FailMode, ResilientLimitStore

__all__ = [
    "NO_OVERSHOOT",
    "BudgetPeriod",
    "Demand",
    "FailMode",
    "LimitStore",
    "Limits",
    "MemoryLimitStore",
    "Overshoot",
    "RedisLimitStore",
    "ResilientLimitStore",
    "Scope",
    "ScopeUsage",
    "Ticket",
    "build_limit_store",
    "period_bounds",
]
