"""Calendar-aligned budget periods in UTC.

Budgets reset on the calendar (midnight UTC, Monday 00:00 UTC, the 1st 00:00 UTC) rather than on a rolling
window, because that is how people read invoices and how the usage ledger is summed. Pure functions: the
caller supplies ``now``, so tests and the Redis scripts can share one controllable clock.
"""

from __future__ import annotations

import functools
import math
from datetime import UTC, datetime

from tenantgate.limits.model import BudgetPeriod

_DAY_S = 86_400
_EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday (Monday = 0)


def period_bounds(period: BudgetPeriod, now: float) -> tuple[float, float]:
    """Return ``(start, end)`` as Unix timestamps of the period containing ``now``; ``total`` is ``(0, inf)``.

    Unix time has no leap seconds and UTC no DST, so days and weeks are plain arithmetic on the day number;
    months need the calendar and are cached per day, since this runs on every reserve and settle.
    """
    if period == "total":
        return 0.0, math.inf
    day = math.floor(now / _DAY_S)
    if period == "daily":
        return float(day * _DAY_S), float((day + 1) * _DAY_S)
    if period == "weekly":
        monday = day - (day + _EPOCH_WEEKDAY) % 7
        return float(monday * _DAY_S), float((monday + 7) * _DAY_S)
    if period == "monthly":
        return _month_of_day(day)
    raise ValueError(f"unknown budget period: {period!r}")


@functools.lru_cache(maxsize=64)
def _month_of_day(day: int) -> tuple[float, float]:
    first = datetime.fromtimestamp(day * _DAY_S, UTC).replace(day=1)
    after = first.replace(year=first.year + 1, month=1) if first.month == 12 else first.replace(month=first.month + 1)
    return first.timestamp(), after.timestamp()


def period_key(period: BudgetPeriod, now: float) -> int:
    """The integer that names a period in store keys (its start); ``total`` is 0."""
    return int(period_bounds(period, now)[0])


def iso(ts: float) -> str:
    """ISO-8601 UTC with a ``Z``, as the admin API and error messages show it."""
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def describe(period: BudgetPeriod) -> str:
    """Human wording for messages: ``"per month"``."""
    return {"total": "in total", "daily": "per day", "weekly": "per week", "monthly": "per month"}[period]
