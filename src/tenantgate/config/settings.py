"""Process settings, read once from the environment (prefix ``TENANTGATE_``).

The app factory builds one :class:`Settings` and passes it down; nothing else reads ``os.environ``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ADMIN_KEY_MIN_LENGTH = 16


class Settings(BaseSettings):
    # A ``.env`` file in the working directory is read too (the environment wins over it).
    model_config = SettingsConfigDict(env_prefix="TENANTGATE_", extra="ignore", env_file=".env", populate_by_name=True)

    database_url: str = "sqlite+aiosqlite:///./tenantgate.db"
    host: str = "127.0.0.1"  # what ``tenantgate serve`` listens on unless --host/--port say otherwise
    worker: int | None = None  # set by ``serve --workers N`` in each worker (1..N), shown by /health
    port: int = Field(default=8080, ge=0, le=65535)
    # The names seed 001's stack already uses are accepted as aliases of the gateway's own.
    admin_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("TENANTGATE_ADMIN_KEY", "ADMIN_API_KEY", "admin_key")
    )
    rate_limit_rpm: int | None = Field(
        default=None,
        gt=0,
        lt=2**31,
        validation_alias=AliasChoices("TENANTGATE_RATE_LIMIT_RPM", "RATE_LIMIT_RPM", "rate_limit_rpm"),
        description="Default rpm of every key that has none (the config file's defaults.key_limits.rpm wins).",
    )
    redis_url: str | None = None
    secret_key: SecretStr | None = Field(
        default=None, description="Encrypts upstream credentials at rest; a key file is generated when unset."
    )
    secret_key_file: Path = Path("tenantgate.secret")
    bootstrap_keys: SecretStr | None = Field(
        default=None,
        description='"tenantA:key1,tenantB:key2": tenants and keys created at start (hashed).',
        validation_alias=AliasChoices("TENANTGATE_BOOTSTRAP_KEYS", "API_KEYS", "bootstrap_keys"),
    )
    config_file: Path | None = None

    max_body_bytes: int = 8 * 1024 * 1024
    upstream_connect_timeout: float = 10.0
    upstream_read_timeout: float = 300.0  # idle: longest silence between bytes of an answer
    upstream_first_byte_timeout: float = 300.0  # per attempt, until the first byte (whole body if not streamed)
    request_timeout: float = 600.0  # overall deadline all attempts draw from (per-model: models.<m>.timeout)
    upstream_max_connections: int = 1000
    # Tokens are counted (in a worker process) only when an upstream reports no usage; past this many
    # seconds the request is billed on its byte bounds instead.
    token_count_timeout: float = Field(default=5.0, gt=0)
    # Largest non-streamed upstream answer the gateway buffers; a larger one is refused with a 502.
    max_upstream_body_bytes: int = Field(default=64 * 1024 * 1024, gt=0)

    # Network policy for backends registered through the admin API (SSRF protection).
    backend_allow_loopback: bool = True
    backend_allow_private: bool = False
    backend_allowed_networks: list[str] = Field(default_factory=list)
    backend_denied_networks: list[str] = Field(default_factory=list)

    idempotency_ttl_seconds: float = 86_400.0  # how long a finished result is replayed
    idempotency_lease_seconds: float = 60.0  # an in-progress record whose owner stops renewing frees after this

    drain_grace_seconds: float = 30.0
    drain_delay_seconds: float = 0.0

    # Client connections (slow clients, header size, connection count: see tenantgate.edge.protocol).
    # From a connection's opening (or a keep-alive request's first byte) until its headers are complete.
    client_header_timeout: float = Field(default=10.0, gt=0)
    client_body_timeout: float = Field(default=30.0, gt=0)  # longest silence between two pieces of a body
    client_body_total_timeout: float = Field(default=120.0, gt=0)  # the whole request body
    keepalive_timeout: float = Field(default=5.0, gt=0)  # idle time between requests on one connection
    max_header_bytes: int = Field(default=32 * 1024, ge=1024)  # request line + headers; over it: 431, closed
    # Open client connections; at the cap a new one closes the oldest connection not busy answering a request.
    # Lowered at start when the open-file limit (raised to its hard limit) would not leave room for upstreams.
    max_connections: int = Field(default=10_000, ge=1)

    auth_cache_ttl: float = 60.0
    auth_negative_ttl: float = 1.0
    # Auth caches are keyed by client input, so each is bounded (least recently used entries go first).
    auth_cache_max_entries: int = Field(default=100_000, ge=1)  # valid keys
    auth_negative_cache_max_entries: int = Field(default=10_000, ge=0)  # unknown key ids (0: no negative cache)
    auth_max_concurrent_lookups: int = Field(default=32, ge=1)  # database reads for keys not in the cache
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

    # People and the console (see tenantgate.people). Sign-up: closed | invite | open | domain:a.org,b.com;
    # overrides ``signup.mode`` of the config file when set.
    signup: str | None = None
    public_url: str | None = None  # base of invite and reset links; the request's own URL when unset
    session_ttl_seconds: float = Field(default=7 * 86_400.0, gt=0)  # absolute lifetime of a login session
    cookie_secure: Literal["auto", "always", "never"] = "auto"  # auto: Secure when the request came over TLS
    login_max_failures_per_account: int = Field(default=5, ge=1)  # within the throttle window
    login_max_failures_per_address: int = Field(default=20, ge=1)
    login_throttle_window_seconds: float = Field(default=900.0, gt=0)
    password_min_length: int = Field(default=10, ge=8, le=128)
    max_keys_per_user: int = Field(default=50, ge=1)  # active keys a person may hold
    invite_ttl_hours: float = Field(default=168.0, gt=0)
    reset_ttl_hours: float = Field(default=24.0, gt=0)
    smtp_url: SecretStr | None = None  # smtp://user:pass@host:port (or smtps://); reset links are mailed when set
    smtp_from: str = "tenantgate@localhost"

    # TLS on the gateway's own port (see tenantgate.tls): files are watched and reloaded without a restart.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None  # set: every client must present a certificate this CA signed (mTLS)
    tls_reload_interval: float = Field(default=2.0, gt=0)

    log_format: Literal["json", "console"] = "json"
    log_level: str = "INFO"
    migrate_on_start: bool = True

    @field_validator("admin_key")
    @classmethod
    def _admin_key_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < ADMIN_KEY_MIN_LENGTH:
            raise ValueError(f"TENANTGATE_ADMIN_KEY must be at least {ADMIN_KEY_MIN_LENGTH} characters")
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("TLS needs both a certificate and its key (--tls-cert and --tls-key)")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("--tls-client-ca (mTLS) needs TLS: give --tls-cert and --tls-key too")
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
