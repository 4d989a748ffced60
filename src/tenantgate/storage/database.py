"""Engine creation and schema migrations.

SQLite runs in WAL mode (readers never wait for the usage writer); PostgreSQL goes through asyncpg. Migrations
run under a PostgreSQL advisory lock so several replicas starting together do not race.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_MIGRATION_LOCK_ID = 7_411_202_611


def create_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        _create_private_sqlite_file(url)
        engine = create_async_engine(url, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)


def _create_private_sqlite_file(url: str) -> None:
    """Create the database file owner-only (0600) before SQLite does (it would use 0644 under the usual umask).

    It holds key hashes, tenants and usage; SQLite gives the ``-wal`` and ``-shm`` files it creates next to it
    the main file's permissions, so they are private too. An existing file is left as it is (the operator's).
    """
    path = make_url(url).database
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError:
        return  # a missing folder or no permission: SQLite reports it when it opens the file
    os.close(fd)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _alembic_config(connection: Connection) -> Config:
    config = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
    command.upgrade(_alembic_config(connection), "head")


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest revision (idempotent)."""
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade)


def make_revision(connection: Connection, message: str) -> None:
    """Developer helper: autogenerate a new migration against a database at head."""
    command.revision(_alembic_config(connection), message=message, autogenerate=True)
