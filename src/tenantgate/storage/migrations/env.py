"""Alembic environment: migrations run on a connection handed in by :func:`tenantgate.storage.database.migrate`."""

from __future__ import annotations

from alembic import context

from tenantgate.storage.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `tenantgate migrate`, which provides the connection")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
