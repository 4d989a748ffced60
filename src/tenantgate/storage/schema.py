"""The database schema, as SQLAlchemy Core tables (Core, not ORM: the gateway reads rows, not object graphs).

Alembic migrations in ``storage/migrations`` create exactly these tables; keep both in step.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

_LIMIT_COLUMNS = (
    "rpm",
    "tpm",
    "max_concurrency",
)


def _limit_columns() -> list[sa.Column[object]]:
    columns: list[sa.Column[object]] = [sa.Column(name, sa.Integer, nullable=True) for name in _LIMIT_COLUMNS]
    columns.append(sa.Column("budget_usd", sa.Float, nullable=True))
    columns.append(sa.Column("budget_period", sa.String(16), nullable=True))
    return columns


tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    *_limit_columns(),
)

# People (see ``tenantgate.people``): a user signs in with an email and an Argon2id-hashed password, belongs to
# tenants through memberships, and carries limits of its own (the middle level between key and tenant).
users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("email", sa.String(254), nullable=False, unique=True),  # lower-cased
    sa.Column("name", sa.String(200), nullable=True),
    sa.Column("password_hash", sa.Text, nullable=True),  # null until the user sets one (reset link)
    sa.Column("is_admin", sa.Boolean, nullable=False, default=False),
    sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("password_changed_at", sa.DateTime(timezone=True), nullable=True),
    *_limit_columns(),
)

memberships = sa.Table(
    "memberships",
    metadata,
    sa.Column("user_id", sa.String(40), sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),  # owner | admin | member
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_memberships_tenant_id", "tenant_id"),
)

# Server-side sessions: the cookie holds a random token, the table only its SHA-256 (``id``), so a database
# leak does not hand out sessions. Revoked on logout, on password change and by admins; expire absolutely.
sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.String(40), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("client", sa.String(200), nullable=True),  # address and user agent, for the user's session list
    sa.Index("ix_sessions_user_id", "user_id"),
)

# Single-use tokens, stored as SHA-256: invites (sign up, optionally bound to an email and a tenant), password
# reset links and one-time login links. ``used_at`` is set by one conditional UPDATE, so a token works once.
one_time_tokens = sa.Table(
    "one_time_tokens",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("purpose", sa.String(16), nullable=False),  # invite | reset | login
    sa.Column("user_id", sa.String(40), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=True),
    sa.Column("email", sa.String(254), nullable=True),
    sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=True),
    sa.Column("role", sa.String(16), nullable=True),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("used_by", sa.String(40), nullable=True),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("public_id", sa.String(40), nullable=False, unique=True),
    sa.Column("secret_hash", sa.String(64), nullable=False),
    sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.String(200), nullable=True),
    sa.Column("models", sa.JSON, nullable=True),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    *_limit_columns(),
    # The person who owns the key (null for keys an admin made for a tenant); the key is then bound by the
    # user's limits too, and refused once the user is disabled or leaves the key's tenant.
    sa.Column("user_id", sa.String(40), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=True),
    sa.Index("ix_api_keys_tenant_id", "tenant_id"),
    sa.Index("ix_api_keys_user_id", "user_id"),
)

backends = sa.Table(
    "backends",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("base_url", sa.String(2000), nullable=False),
    sa.Column("api_key_encrypted", sa.Text, nullable=True),
    sa.Column("models", sa.JSON, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False, default=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    # weight, priority and timeouts (connect, first_byte, idle) of the backend's deployments
    sa.Column("options", sa.JSON, nullable=True),
)

usage_records = sa.Table(
    "usage_records",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("tenant_id", sa.String(40), nullable=False),
    sa.Column("key_id", sa.String(40), nullable=False),
    sa.Column("endpoint", sa.String(40), nullable=False),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("backend", sa.String(200), nullable=True),
    sa.Column("prompt_tokens", sa.Integer, nullable=False),
    sa.Column("completion_tokens", sa.Integer, nullable=False),
    sa.Column("cost_usd", sa.Float, nullable=False),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("ttft_ms", sa.Float, nullable=True),
    sa.Column("estimated", sa.Boolean, nullable=False),
    sa.Column("streamed", sa.Boolean, nullable=False),
    sa.Index("ix_usage_tenant_time", "tenant_id", "created_at"),
    sa.Index("ix_usage_key_time", "key_id", "created_at"),
    sa.Index("ix_usage_time", "created_at"),
)

# One row per named counter. ``config_version`` is bumped by every admin change so that every replica
# notices (by polling) and drops its caches within the sync interval.
gateway_state = sa.Table(
    "gateway_state",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)

# Text facts about the installation, one row each. ``secret_key_check`` holds a token encrypted with the
# credential-encryption key the database was set up with: a replica started with another key refuses to start
# instead of failing later on every stored credential (see tenantgate.storage.keycheck).
gateway_meta = sa.Table(
    "gateway_meta",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

# Idempotency-Key records (see ``tenantgate.idempotency``): one row per scope, keyed by the SHA-256 of
# (tenant, key, endpoint, idempotency key). A running row is a lease; a done row holds the result until
# ``expires_at``. A stream's result is its SSE events, one row each, in relay order.
idempotency_records = sa.Table(
    "idempotency_records",
    metadata,
    sa.Column("scope_key", sa.String(64), primary_key=True),
    sa.Column("tenant_id", sa.String(40), nullable=False),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("owner", sa.String(64), nullable=False),
    sa.Column("lease_until", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("is_stream", sa.Boolean, nullable=False),
    sa.Column("status", sa.Integer, nullable=True),
    sa.Column("headers", sa.JSON, nullable=True),
    sa.Column("body", sa.LargeBinary, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_idempotency_records_expires_at", "expires_at"),
)

idempotency_events = sa.Table(
    "idempotency_events",
    metadata,
    sa.Column(
        "scope_key",
        sa.String(64),
        sa.ForeignKey("idempotency_records.scope_key", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
)

# The audit log (see ``tenantgate.storage.audit``): one append-only row per admin action. ``changes`` maps each
# changed field to its new value, with secrets already masked by the repository before they reach this table.
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target_type", sa.String(40), nullable=False),
    sa.Column("target_id", sa.String(200), nullable=True),
    sa.Column("changes", sa.JSON, nullable=True),
    sa.Index("ix_audit_log_created_at", "created_at"),
    sa.Index("ix_audit_log_target", "target_type", "target_id"),
)

# Hourly usage rollups (see ``tenantgate.storage.usage``): one row per (UTC hour, tenant, key, model, backend),
# upserted in the same transaction as the raw ``usage_records`` they sum, so dashboards read these instead of
# scanning the ledger, and the figures survive when raw records are purged after the retention period.
# ``backend`` is "" (not NULL) when the record had none: NULLs never conflict, so they would break the upsert.
usage_hourly = sa.Table(
    "usage_hourly",
    metadata,
    sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
    sa.Column("tenant_id", sa.String(40), nullable=False),
    sa.Column("key_id", sa.String(40), nullable=False),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("backend", sa.String(200), nullable=False),
    sa.Column("requests", sa.BigInteger, nullable=False),
    sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
    sa.Column("completion_tokens", sa.BigInteger, nullable=False),
    sa.Column("cost_usd", sa.Float, nullable=False),
    sa.Column("errors", sa.BigInteger, nullable=False),
    sa.PrimaryKeyConstraint("hour", "tenant_id", "key_id", "model", "backend", name="pk_usage_hourly"),
    sa.Index("ix_usage_hourly_tenant_hour", "tenant_id", "hour"),
    sa.Index("ix_usage_hourly_key_hour", "key_id", "hour"),
)
