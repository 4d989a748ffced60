"""Request and response shapes of the admin API (they also document it at ``/docs``).

Every value an admin sends is bounded here, at the edge, so nothing reaches storage that the database would
refuse with an error (a 5xx) or that would poison later reads: text is non-blank where it names something, has no
control characters, NUL or lone surrogates, and fits its column; integers fit a 32-bit ``INTEGER`` column; floats
are finite and capped (a price of ``1e308`` would make every usage report that sums it infinite); times convert
to UTC without overflowing. :func:`query_text`, :func:`path_id` and :func:`query_time` apply the same rules to
query and path parameters and answer ``400`` naming the parameter.
"""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from tenantgate.config.file import LimitDefaults
from tenantgate.core.errors import InvalidRequest
from tenantgate.storage.rows import (
    MAX_BUDGET_USD,
    MAX_PRICE_PER_MTOK,
    BackendModel,
    BackendRow,
    KeyRow,
    LimitFields,
    TenantRow,
)

BudgetPeriod = Literal["total", "daily", "weekly", "monthly"]
LIMIT_NAMES = ("rpm", "tpm", "max_concurrency", "budget_usd", "budget_period")

# Bounds (see the module docstring). Limits are stored in 32-bit INTEGER columns; budgets are counted in nano-USD
# as 64-bit integers (1e9 USD = 1e18 nano-USD, under 2**63); one USD per token is already far above any price.
INT32_MAX: Final = 2**31 - 1
MAX_NAME_LENGTH: Final = 200  # the name columns are VARCHAR(200)
MAX_ID_LENGTH: Final = 200
MAX_QUERY_LENGTH: Final = 200
MAX_MODELS: Final = 1000
MAX_URL_LENGTH: Final = 2000  # backends.base_url is VARCHAR(2000)
MAX_SECRET_LENGTH: Final = 4096
MAX_TIMEOUT_S: Final = 86_400.0
MAX_WEIGHT: Final = 1_000_000
MAX_PRIORITY: Final = 1_000_000
MIN_YEAR, MAX_YEAR = 1, 9998  # in UTC, with room for the hour arithmetic of the usage reports

_BIDI_CONTROLS: Final = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def text_problem(value: str, max_length: int = MAX_NAME_LENGTH) -> str | None:
    """Why ``value`` cannot be stored or shown as one line of text (``None`` when it can).

    Refused: more than ``max_length`` characters, C0/C1 control characters (NUL, tab, CR, LF…), lone surrogates
    (not UTF-8 encodable), line and paragraph separators and bidirectional overrides (they disguise a name).
    """
    if len(value) > max_length:
        return f"must be at most {max_length} characters"
    for char in value:
        if char in _BIDI_CONTROLS or unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp"):
            return f"must not contain control characters (found U+{ord(char):04X})"
    return None


def _printable(value: str) -> str:
    problem = text_problem(value, max_length=len(value))
    if problem:
        raise ValueError(problem)
    return value


def _visible_ascii(value: str) -> str:
    if not all("!" <= char <= "~" for char in value):
        raise ValueError("must be visible ASCII characters only (no spaces or control characters)")
    return value


# A name an admin gives (tenant, key, backend, model): stripped, non-blank, one printable line.
Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_NAME_LENGTH),
    AfterValidator(_printable),
]
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH), AfterValidator(_printable)]
Price = Annotated[float, Field(ge=0, le=MAX_PRICE_PER_MTOK, allow_inf_nan=False)]
Secret = Annotated[str, StringConstraints(max_length=MAX_SECRET_LENGTH), AfterValidator(_visible_ascii)]


def _utc_in_range(value: datetime) -> datetime | None:
    """``value`` in UTC (naive = UTC), or ``None`` when it is outside the years the gateway can store and shift."""
    try:
        utc = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (OverflowError, ValueError):
        return None
    return utc if MIN_YEAR <= utc.year <= MAX_YEAR else None


def _sane_time(value: datetime | None) -> datetime | None:
    if value is None:
        return value
    if value.tzinfo is None:
        raise ValueError("needs a timezone (e.g. 2026-12-31T00:00:00Z)")
    if _utc_in_range(value) is None:
        raise ValueError(f"must be between the years {MIN_YEAR} and {MAX_YEAR} in UTC")
    return value


def check_base_url(value: str) -> str:
    """An absolute http(s) URL with a host, in visible ASCII, that parses (a port in range), without its trailing
    ``/``. What it may point at (and credentials in it) is the network policy's call, checked after this."""
    if len(value) > MAX_URL_LENGTH:
        raise ValueError(f"must be at most {MAX_URL_LENGTH} characters")
    _visible_ascii(value)
    if not value.startswith(("http://", "https://")):
        raise ValueError("base_url must start with http:// or https://")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"is not a valid URL ({exc})") from None
    if not parts.hostname:
        raise ValueError("needs a host")
    if port == 0:
        raise ValueError("port must be between 1 and 65535")
    return value.rstrip("/")


def query_text(value: str | None, param: str, max_length: int = MAX_QUERY_LENGTH) -> str | None:
    """A query parameter checked like stored text: ``400`` naming ``param`` when it cannot be (NUL, too long…)."""
    if value is not None:
        problem = text_problem(value, max_length)
        if problem:
            raise InvalidRequest(f"{param} {problem}.", param=param, code="invalid_value")
    return value


def path_id(value: str, param: str) -> str:
    """An id from the path: non-empty, bounded, no control characters (``400`` naming ``param`` otherwise)."""
    if not value:
        raise InvalidRequest(f"{param} must not be empty.", param=param, code="invalid_value")
    checked = query_text(value, param, MAX_ID_LENGTH)
    assert checked is not None
    return checked


def query_time(value: datetime | None, param: str) -> datetime | None:
    """A time filter: naive means UTC; ``400`` naming ``param`` when it does not fit the storable range."""
    if value is not None and _utc_in_range(value) is None:
        raise InvalidRequest(
            f"{param} must be between the years {MIN_YEAR} and {MAX_YEAR} in UTC.", param=param, code="invalid_value"
        )
    return value


class LimitsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rpm: int | None = Field(default=None, gt=0, le=INT32_MAX, description="Requests per minute.")
    tpm: int | None = Field(default=None, gt=0, le=INT32_MAX, description="Tokens per minute.")
    max_concurrency: int | None = Field(default=None, gt=0, le=INT32_MAX, description="Requests in flight at once.")
    budget_usd: float | None = Field(
        default=None, ge=0, le=MAX_BUDGET_USD, allow_inf_nan=False, description="Spend allowed per budget period."
    )
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
    name: Name


class TenantUpdate(LimitsIn):
    name: Name | None = None


class KeyCreate(LimitsIn):
    tenant_id: Identifier
    name: Name | None = None
    models: list[Name] | None = Field(
        default=None, max_length=MAX_MODELS, description="Allowed models; omitted = every model."
    )
    expires_at: Annotated[datetime | None, AfterValidator(_sane_time)] = None


class KeyUpdate(LimitsIn):
    name: Name | None = None
    models: list[Name] | None = Field(default=None, max_length=MAX_MODELS)
    expires_at: Annotated[datetime | None, AfterValidator(_sane_time)] = None


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name
    upstream_model: Name | None = None
    input_price_per_mtok: Price = 0.0
    output_price_per_mtok: Price = 0.0

    def to_model(self) -> BackendModel:
        return BackendModel(
            self.name, self.upstream_model or self.name, self.input_price_per_mtok, self.output_price_per_mtok
        )


def to_models(entries: list[str | ModelSpec] | list[ModelSpec]) -> list[BackendModel]:
    return [ModelSpec(name=entry).to_model() if isinstance(entry, str) else entry.to_model() for entry in entries]


def _names_as_specs(value: Any) -> Any:
    """``"gpt-4o"`` is short for ``{"name": "gpt-4o"}``: one shape to validate, so errors name the field at fault."""
    if isinstance(value, list):
        return [{"name": entry} if isinstance(entry, str) else entry for entry in value]
    return value


def _name_or_spec_schema(schema: dict[str, Any]) -> None:
    """Document (and let schema-driven clients generate) both spellings of an entry."""
    name = {"type": "string", "minLength": 1, "maxLength": MAX_NAME_LENGTH}
    for option in [schema, *schema.get("anyOf", [])]:  # the array itself, or its branch of ``array | null``
        if isinstance(option, dict) and "items" in option:
            option["items"] = {"anyOf": [name, option["items"]]}


ModelList = Annotated[list[ModelSpec], BeforeValidator(_names_as_specs)]


Timeout = Annotated[float, Field(gt=0, le=MAX_TIMEOUT_S, allow_inf_nan=False)]


class BackendTimeouts(BaseModel):
    model_config = ConfigDict(extra="forbid")
    connect: Timeout | None = None
    first_byte: Timeout | None = None
    idle: Timeout | None = None


class BackendRouting(BaseModel):
    """Routing options of a backend's deployments."""

    weight: int = Field(default=1, ge=0, le=MAX_WEIGHT, description="Share under the weighted policy; 0 = standby.")
    priority: int = Field(
        default=0, ge=-MAX_PRIORITY, le=MAX_PRIORITY, description="Lower = preferred group under the priority policy."
    )
    timeouts: BackendTimeouts = Field(default_factory=BackendTimeouts)

    def options(self) -> dict[str, Any]:
        return {"weight": self.weight, "priority": self.priority, "timeouts": self.timeouts.model_dump()}


class BackendCreate(BackendRouting):
    model_config = ConfigDict(extra="forbid")
    name: Name
    base_url: Annotated[str, AfterValidator(check_base_url)] = Field(
        description="The backend's OpenAI-compatible base URL, e.g. http://host:8000/v1"
    )
    api_key: Secret | None = Field(default=None, description="The backend's own credential; stored encrypted.")
    models: ModelList = Field(min_length=1, max_length=MAX_MODELS, json_schema_extra=_name_or_spec_schema)


class BackendUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    base_url: Annotated[str, AfterValidator(check_base_url)] | None = None
    api_key: Secret | None = None
    models: ModelList | None = Field(
        default=None, min_length=1, max_length=MAX_MODELS, json_schema_extra=_name_or_spec_schema
    )
    enabled: bool | None = Field(default=None, description="false = disable and drain (in-flight requests finish).")
    weight: int | None = Field(default=None, ge=0, le=MAX_WEIGHT)
    priority: int | None = Field(default=None, ge=-MAX_PRIORITY, le=MAX_PRIORITY)
    timeouts: BackendTimeouts | None = None


def tenant_out(row: TenantRow) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "created_at": row.created_at.isoformat(), **row.limits.as_dict()}


def key_out(row: KeyRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "tenant_id": row.tenant_id,
        "user_id": row.user_id,  # the person who owns the key; null for a key an admin made for a tenant
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
