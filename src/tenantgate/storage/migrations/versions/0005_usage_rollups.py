"""hourly usage rollups, backfilled from the raw usage records

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

MEASURES = ("requests", "prompt_tokens", "completion_tokens", "cost_usd", "errors")


def upgrade() -> None:
    op.create_table(
        "usage_hourly",
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("key_id", sa.String(length=40), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("backend", sa.String(length=200), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("hour", "tenant_id", "key_id", "model", "backend", name="pk_usage_hourly"),
    )
    with op.batch_alter_table("usage_hourly", schema=None) as batch_op:
        batch_op.create_index("ix_usage_hourly_tenant_hour", ["tenant_id", "hour"], unique=False)
        batch_op.create_index("ix_usage_hourly_key_hour", ["key_id", "hour"], unique=False)
    _backfill()


def _backfill() -> None:
    """Roll up the records written before this revision, so the usage API keeps reporting them.

    The hour expression must produce exactly what the application writes: on SQLite the text format SQLAlchemy
    stores for a DateTime; on PostgreSQL the UTC hour (``date_trunc`` alone would truncate in the session's zone).
    Literal columns, not bound parameters, so PostgreSQL sees the GROUP BY expression equal to the selected one.
    """
    records = sa.table(
        "usage_records",
        *(sa.column(name) for name in ("created_at", "tenant_id", "key_id", "model", "backend")),
        *(sa.column(name) for name in ("prompt_tokens", "completion_tokens", "cost_usd", "status")),
    )
    columns = ["hour", "tenant_id", "key_id", "model", "backend", *MEASURES]
    hourly = sa.table("usage_hourly", *(sa.column(name) for name in columns))
    created = records.c.created_at
    if op.get_bind().dialect.name == "sqlite":
        hour: sa.ColumnElement[object] = sa.func.strftime(sa.literal_column("'%Y-%m-%d %H:00:00.000000'"), created)
    else:
        utc: sa.ColumnElement[str] = sa.literal_column("'UTC'")
        unit: sa.ColumnElement[str] = sa.literal_column("'hour'")
        hour = sa.func.timezone(utc, sa.func.date_trunc(unit, sa.func.timezone(utc, created)))
    backend = sa.func.coalesce(records.c.backend, sa.literal_column("''"))
    keys = [hour, records.c.tenant_id, records.c.key_id, records.c.model, backend]
    errors = sa.case((records.c.status >= 400, 1), else_=0)
    select = sa.select(
        *keys,
        sa.func.count(),
        sa.func.sum(records.c.prompt_tokens),
        sa.func.sum(records.c.completion_tokens),
        sa.func.sum(records.c.cost_usd),
        sa.func.sum(errors),
    ).group_by(*keys)
    op.execute(hourly.insert().from_select(columns, select))


def downgrade() -> None:
    with op.batch_alter_table("usage_hourly", schema=None) as batch_op:
        batch_op.drop_index("ix_usage_hourly_key_hour")
        batch_op.drop_index("ix_usage_hourly_tenant_hour")

    op.drop_table("usage_hourly")
