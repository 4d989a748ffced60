"""Fixtures shared by the contract suites: one migrated database of each kind per module."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tenantgate.storage.database import create_engine, migrate
from tests.pg import reset_postgres


@pytest.fixture(params=["sqlite", "postgres"], scope="module")
async def engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[AsyncEngine]:
    """A migrated SQLite file, then an emptied and migrated PostgreSQL: every test runs over both."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'db.sqlite'}"
    else:
        url = await asyncio.to_thread(reset_postgres)
    engine = create_engine(url)
    await migrate(engine)
    yield engine
    await engine.dispose()
