"""Budget periods are calendar aligned in UTC, whatever the local time zone of the gateway."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import pytest

from tenantgate.limits import period_bounds
from tenantgate.limits.periods import describe, iso, period_key


def ts(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("now", "start", "end"),
    [
        (ts(2025, 3, 12, 10, 30), ts(2025, 3, 12), ts(2025, 3, 13)),
        (ts(2025, 3, 12), ts(2025, 3, 12), ts(2025, 3, 13)),  # the boundary belongs to the new day
        (ts(2025, 3, 12) - 0.001, ts(2025, 3, 11), ts(2025, 3, 12)),
        (ts(2024, 12, 31, 23, 59, 59), ts(2024, 12, 31), ts(2025, 1, 1)),
    ],
)
def test_daily(now: float, start: float, end: float) -> None:
    assert period_bounds("daily", now) == (start, end)


@pytest.mark.parametrize(
    ("now", "monday"),
    [
        (ts(2025, 3, 12, 10), ts(2025, 3, 10)),  # Wednesday
        (ts(2025, 3, 10), ts(2025, 3, 10)),  # Monday 00:00 starts the week
        (ts(2025, 3, 16, 23, 59, 59), ts(2025, 3, 10)),  # Sunday night still the old week
        (ts(2025, 1, 1, 12), ts(2024, 12, 30)),  # weeks straddle the year
    ],
)
def test_weekly_starts_monday_utc(now: float, monday: float) -> None:
    start, end = period_bounds("weekly", now)
    assert start == monday and end == monday + 7 * 86_400
    assert datetime.fromtimestamp(start, UTC).weekday() == 0


@pytest.mark.parametrize(
    ("now", "start", "end"),
    [
        (ts(2025, 3, 12, 10), ts(2025, 3, 1), ts(2025, 4, 1)),
        (ts(2025, 12, 31, 23, 59), ts(2025, 12, 1), ts(2026, 1, 1)),  # December rolls the year
        (ts(2024, 2, 29, 12), ts(2024, 2, 1), ts(2024, 3, 1)),  # leap year
        (ts(2025, 2, 1), ts(2025, 2, 1), ts(2025, 3, 1)),
    ],
)
def test_monthly_starts_on_the_first(now: float, start: float, end: float) -> None:
    assert period_bounds("monthly", now) == (start, end)


def test_total_never_ends() -> None:
    assert period_bounds("total", ts(2025, 3, 12)) == (0.0, math.inf)
    assert period_key("total", ts(2099, 1, 1)) == 0


def test_unknown_period_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown budget period"):
        period_bounds("yearly", 0.0)  # type: ignore[arg-type]


def test_key_and_wording() -> None:
    assert period_key("monthly", ts(2025, 3, 12, 10)) == int(ts(2025, 3, 1))
    assert iso(ts(2025, 4, 1)) == "2025-04-01T00:00:00Z"
    assert describe("weekly") == "per week" and describe("total") == "in total"


def test_arithmetic_matches_the_calendar_everywhere() -> None:
    """Days and weeks are computed from the day number; check them against datetime over random instants."""
    rng = random.Random(11)
    for _ in range(3000):
        now = rng.uniform(-2e9, 5e9)
        day = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        monday = day - timedelta(days=day.weekday())
        first = day.replace(day=1)
        nxt = first.replace(year=first.year + 1, month=1) if first.month == 12 else first.replace(month=first.month + 1)
        assert period_bounds("daily", now) == (day.timestamp(), (day + timedelta(days=1)).timestamp())
        assert period_bounds("weekly", now) == (monday.timestamp(), (monday + timedelta(days=7)).timestamp())
        assert period_bounds("monthly", now) == (first.timestamp(), nxt.timestamp())
