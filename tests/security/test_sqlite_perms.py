"""Attack: another local user reads the gateway's SQLite database (key hashes, tenants, usage) or its WAL.

Under the usual umask (022) SQLite creates files world-readable; the gateway must create the database owner-only
(0600), like its secret file, and the ``-wal``/``-shm`` files SQLite adds next to it must be private too.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tenantgate.storage.database import create_engine, migrate
from tests.support import Process, mock_config, start_gateway


@pytest.fixture()
def loose_umask() -> Iterator[None]:
    previous = os.umask(0o022)  # what most systems run with: new files 0644 unless created otherwise
    try:
        yield
    finally:
        os.umask(previous)


def assert_private(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode & 0o077 == 0, f"{path.name} is {oct(mode)}: readable by other users"


def test_gateway_database_files_are_owner_only(mock: Process, tmp_path: Path, loose_umask: None) -> None:
    database = tmp_path / "tg.db"
    gateway = start_gateway(f"sqlite+aiosqlite:///{database}", tmp_path, mock_config(mock.port))
    try:
        key = gateway.new_key("perm-tenant")
        response = httpx.post(
            f"{gateway.v1}/chat/completions",
            json={"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        files = [database, Path(f"{database}-wal"), Path(f"{database}-shm")]
        assert all(path.exists() for path in files), sorted(p.name for p in tmp_path.iterdir())
        for path in files:
            assert_private(path)
        assert_private(tmp_path / "tenantgate.secret")
    finally:
        gateway.process.stop()


async def test_create_engine_creates_the_file_private_before_sqlite_opens_it(tmp_path: Path, loose_umask: None) -> None:
    database = tmp_path / "fresh.db"
    engine = create_engine(f"sqlite+aiosqlite:///{database}")
    try:
        assert_private(database)  # exists, private, before any connection
        await migrate(engine)
        for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
            assert_private(path)
    finally:
        await engine.dispose()


async def test_an_existing_database_file_is_left_as_the_operator_set_it(tmp_path: Path) -> None:
    database = tmp_path / "existing.db"
    database.touch()
    database.chmod(0o640)  # e.g. readable by a backup group, on purpose
    engine = create_engine(f"sqlite+aiosqlite:///{database}")
    await engine.dispose()
    assert stat.S_IMODE(database.stat().st_mode) == 0o640
