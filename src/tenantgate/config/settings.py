"""Process settings, read once from the environment (prefix ``TENANTGATE_``).

The app factory builds one :class:`Settings` and passes it down; nothing else reads ``os.environ``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ADMIN_KEY_MIN_LENGTH = 16


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TENANTGATE_", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./tenantgate.db"
    admin_key: SecretStr | None = None
    redis_url: str | None = None
    secret_key: SecretStr | None = Field(
        default=None, description="Encrypts upstream credentials at rest; a key file is generated when unset."
    )
    secret_key_file: Path = Path("tenantgate.secret")
    bootstrap_keys: SecretStr | None = Field(
        default=None, description='"tenantA:key1,tenantB:key2": tenants and keys created at start (hashed).'
    )
    config_file: Path | None = None

    max_body_bytes: int = 8 * 1024 * 1024
    upstream_connect_timeout: float = 10.0
    upstream_read_timeout: float = 300.0  # idle: longest silence between bytes of an answer
    upstream_first_byte_timeout: float = 300.0  # per attempt, until the first byte (whole body if not streamed)
    request_timeout: float = 600.0  # overall deadline all attempts draw from (per-model: models.<m>.timeout)
    upstream_max_connections: int = 1000
    default_max_output_tokens: int = 4096

    # Network policy for backends registered through the admin API (SSRF protection).
    backend_allow_loopback: bool = True
    backend_allow_private: bool = False
    backend_allowed_networks: list[str] = Field(default_factory=list)
    backend_denied_networks: list[str] = Field(default_factory=list)

    idempotency_ttl_seconds: float = 86_400.0  # how long a finished result is replayed
    idempotency_lease_seconds: float = 60.0  # an in-progress record whose owner stops renewing frees after this

    drain_grace_seconds: float = 30.0
    drain_delay_seconds: float = 0.0

    auth_cache_ttl: float = 60.0
    auth_negative_ttl: float = 1.0
    sync_interval: float = 0.5

    usage_queue_size: int = 100_000
    usage_flush_interval: float = 0.5
    usage_batch_size: int = 1000
    # Raw usage records older than this many days are purged (hourly rollups are kept); 0 keeps them forever.
    usage_retention_days: int = Field(default=90, ge=0)

    limits_fail_mode: Literal["closed", "local"] = "closed"
    limits_redis_timeout: float = 0.25
    limits_lease_seconds: float = 600.0

    metrics_tenant_labels: bool = False  # per-tenant request counter (bounded by the next setting)
    metrics_max_tenants: int = 100
    log_bodies_tenants: list[str] = Field(default_factory=list)  # tenant ids whose prompts/answers are logged

    log_format: Literal["json", "console"] = "json"
    log_level: str = "INFO"
    migrate_on_start: bool = True

    @field_validator("admin_key")
    @classmethod
    def _admin_key_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < ADMIN_KEY_MIN_LENGTH:
            raise ValueError(f"TENANTGATE_ADMIN_KEY must be at least {ADMIN_KEY_MIN_LENGTH} characters")
        return value

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
