"""Request and response shapes of the admin API (they also document it at ``/docs``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tenantgate.config.file import LimitDefaults
from tenantgate.storage.rows import BackendModel, BackendRow, KeyRow, LimitFields, TenantRow

BudgetPeriod = Literal["total", "daily", "weekly", "monthly"]
LIMIT_NAMES = ("rpm", "tpm", "max_concurrency", "budget_usd", "budget_period")


class LimitsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rpm: int | None = Field(default=None, gt=0, description="Requests per minute.")
    tpm: int | None = Field(default=None, gt=0, description="Tokens per minute.")
    max_concurrency: int | None = Field(default=None, gt=0, description="Requests in flight at once.")
    budget_usd: float | None = Field(default=None, ge=0, description="Spend allowed per budget period.")
    budget_period: BudgetPeriod | None = Field(default=None, description="total, daily, weekly or monthly (UTC).")

    def limit_fields(self, defaults: LimitDefaults | None = None) -> LimitFields:
        """The limits asked for; on creation, fields the request leaves out take the config file's defaults."""
        values = {name: getattr(self, name) for name in LIMIT_NAMES}
        if defaults is not None:
            for name in LIMIT_NAMES:
                if name not in self.model_fields_set:
                    values[name] = getattr(defaults, name)
        return LimitFields(**values)


class TenantCreate(LimitsIn):
    name: str = Field(min_length=1, max_length=200)


class TenantUpdate(LimitsIn):
    name: str | None = Field(default=None, min_length=1, max_length=200)


class KeyCreate(LimitsIn):
    tenant_id: str
    name: str | None = Field(default=None, max_length=200)
    models: list[str] | None = Field(default=None, description="Allowed models; omitted = every model.")
    expires_at: datetime | None = None

    @field_validator("expires_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("expires_at needs a timezone (e.g. 2026-12-31T00:00:00Z)")
        return value


class KeyUpdate(LimitsIn):
    name: str | None = Field(default=None, max_length=200)
    models: list[str] | None = None
    expires_at: datetime | None = None


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    upstream_model: str | None = None
    input_price_per_mtok: float = Field(default=0.0, ge=0)
    output_price_per_mtok: float = Field(default=0.0, ge=0)

    def to_model(self) -> BackendModel:
        return BackendModel(
            self.name, self.upstream_model or self.name, self.input_price_per_mtok, self.output_price_per_mtok
        )


def to_models(entries: list[str | ModelSpec]) -> list[BackendModel]:
    return [ModelSpec(name=entry).to_model() if isinstance(entry, str) else entry.to_model() for entry in entries]


class BackendTimeouts(BaseModel):
    model_config = ConfigDict(extra="forbid")
    connect: float | None = Field(default=None, gt=0)
    first_byte: float | None = Field(default=None, gt=0)
    idle: float | None = Field(default=None, gt=0)


class BackendRouting(BaseModel):
    """Routing options of a backend's deployments."""

    weight: int = Field(default=1, ge=0, description="Share under the weighted policy; 0 = standby.")
    priority: int = Field(default=0, description="Lower = preferred group under the priority policy.")
    timeouts: BackendTimeouts = Field(default_factory=BackendTimeouts)

    def options(self) -> dict[str, Any]:
        return {"weight": self.weight, "priority": self.priority, "timeouts": self.timeouts.model_dump()}


class BackendCreate(BackendRouting):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    base_url: str = Field(description="The backend's OpenAI-compatible base URL, e.g. http://host:8000/v1")
    api_key: str | None = Field(default=None, description="The backend's own credential; stored encrypted.")
    models: list[str | ModelSpec] = Field(min_length=1)

    @field_validator("base_url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return value.rstrip("/")


class BackendUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    base_url: str | None = None
    api_key: str | None = None
    models: list[str | ModelSpec] | None = None
    enabled: bool | None = Field(default=None, description="false = disable and drain (in-flight requests finish).")
    weight: int | None = Field(default=None, ge=0)
    priority: int | None = None
    timeouts: BackendTimeouts | None = None

    @field_validator("base_url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return value.rstrip("/") if value else value


def tenant_out(row: TenantRow) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "created_at": row.created_at.isoformat(), **row.limits.as_dict()}


def key_out(row: KeyRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "tenant_id": row.tenant_id,
        "name": row.name,
        "prefix": f"tg-{row.public_id}-",
        "models": row.models,
        "expires_at": row.expires_at.isoformat() if row.expires_at else None,
        "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
        "revoked": row.revoked_at is not None,
        "created_at": row.created_at.isoformat(),
        **row.limits.as_dict(),
    }


def backend_out(row: BackendRow, health: Any = None) -> dict[str, Any]:
    """A backend as the API shows it (never its credential), with live health when known."""
    options = row.options or {}
    out = {
        "id": row.id,
        "name": row.name,
        "base_url": row.base_url,
        "models": [model.as_dict() for model in row.models],
        "enabled": row.enabled,
        "has_api_key": bool(row.api_key_encrypted),
        "source": row.source,
        "created_at": row.created_at.isoformat(),
        "weight": options.get("weight", 1),
        "priority": options.get("priority", 0),
        "timeouts": options.get("timeouts") or {"connect": None, "first_byte": None, "idle": None},
    }
    if health is not None:
        state = "disabled" if not row.enabled else health.state
        out.update(
            {
                "healthy": row.enabled and health.healthy,
                "state": state,
                "last_error": health.last_error,
                "latency_ms": health.latency_ewma_ms,
                "in_flight": health.in_flight,
            }
        )
    return out
