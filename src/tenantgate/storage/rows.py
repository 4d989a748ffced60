"""Plain records read from storage, shared by the repositories and their callers."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

# The largest budget and price the admin API accepts. Values stored before those bounds existed (``1e308``,
# ``inf``, ``nan``) are brought back within them when read, so one bad row cannot break the hot path or a report.
MAX_BUDGET_USD: Final = 1e9  # 1e18 nano-USD: the budget counters stay within signed 64-bit integers
MAX_PRICE_PER_MTOK: Final = 1e6  # one USD per token
MAX_COST_USD: Final = 1e15  # the most one stored cost (a record or an hourly rollup) counts for in a sum


def storable(text: str) -> bool:
    """Whether ``text`` can be a stored value at all: PostgreSQL refuses NUL, and no lone surrogate encodes."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def bounded(value: float, ceiling: float, nan: float) -> float:
    """``value`` within ``[0, ceiling]``: ``+inf`` and anything above become ``ceiling``, negatives 0, NaN ``nan``."""
    if math.isnan(value):
        return nan
    return min(max(value, 0.0), ceiling)


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands timezone-aware columns back naive; every timestamp leaving storage is aware UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class LimitFields:
    rpm: int | None = None
    tpm: int | None = None
    max_concurrency: int | None = None
    budget_usd: float | None = None
    budget_period: str | None = None

    @classmethod
    def from_row(cls, row: Any) -> LimitFields:
        """A stored budget outside ``[0, MAX_BUDGET_USD]`` is read as the nearest bound (NaN as 0: fail closed)."""
        budget = row.budget_usd
        if budget is not None:
            budget = bounded(float(budget), MAX_BUDGET_USD, nan=0.0)
        return cls(row.rpm, row.tpm, row.max_concurrency, budget, row.budget_period)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rpm": self.rpm,
            "tpm": self.tpm,
            "max_concurrency": self.max_concurrency,
            "budget_usd": self.budget_usd,
            "budget_period": self.budget_period,
        }


@dataclass(frozen=True, slots=True)
class TenantRow:
    id: str
    name: str
    created_at: datetime
    limits: LimitFields = field(default_factory=LimitFields)


@dataclass(frozen=True, slots=True)
class KeyRow:
    id: str
    public_id: str
    secret_hash: str
    tenant_id: str
    name: str | None
    models: list[str] | None
    expires_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime
    limits: LimitFields = field(default_factory=LimitFields)
    user_id: str | None = None


ROLES: Final = ("owner", "admin", "member")
"""Roles in a tenant, strongest first: owners and admins manage members and keys; only owners manage owners."""


@dataclass(frozen=True, slots=True)
class UserRow:
    id: str
    email: str
    name: str | None
    password_hash: str | None
    is_admin: bool
    disabled_at: datetime | None
    created_at: datetime
    password_changed_at: datetime | None
    limits: LimitFields = field(default_factory=LimitFields)

    @property
    def active(self) -> bool:
        return self.disabled_at is None


@dataclass(frozen=True, slots=True)
class MembershipRow:
    user_id: str
    tenant_id: str
    role: str
    created_at: datetime
    tenant_name: str = ""
    user_email: str = ""


@dataclass(frozen=True, slots=True)
class SessionRow:
    id: str
    user_id: str
    created_at: datetime
    expires_at: datetime
    last_seen_at: datetime
    revoked_at: datetime | None
    client: str | None


@dataclass(frozen=True, slots=True)
class TokenRow:
    """A single-use token (invite, password reset, login link); never holds the token itself."""

    id: str
    purpose: str
    user_id: str | None
    email: str | None
    tenant_id: str | None
    role: str | None
    created_by: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None
    used_by: str | None


@dataclass(frozen=True, slots=True)
class BackendModel:
    name: str
    upstream_model: str
    input_price_per_mtok: float = 0.0
    output_price_per_mtok: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "upstream_model": self.upstream_model,
            "input_price_per_mtok": self.input_price_per_mtok,
            "output_price_per_mtok": self.output_price_per_mtok,
        }


@dataclass(frozen=True, slots=True)
class BackendRow:
    id: str
    name: str
    base_url: str
    api_key_encrypted: str | None
    models: tuple[BackendModel, ...]
    enabled: bool
    created_at: datetime
    source: str = "api"
    options: dict[str, Any] = field(default_factory=dict)  # weight, priority, timeouts


@dataclass(frozen=True, slots=True)
class UsageRecord:
    request_id: str
    created_at: datetime
    tenant_id: str
    key_id: str
    endpoint: str
    model: str
    backend: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    status: int
    latency_ms: float
    ttft_ms: float | None
    estimated: bool
    streamed: bool
