"""Shared fixtures: one mock upstream process and one SQLite-backed gateway process for the session."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.redis_server import RedisServer
from tests.support import (
    LOG_DIR,
    Gateway,
    Process,
    install_sigterm_backstop,
    mock_config,
    reap_all,
    start_gateway,
    start_mock,
)


@pytest.fixture(scope="session")
def mock() -> Iterator[Process]:
    process = start_mock("--api-key", "upstream-secret-abc123")
    yield process
    process.stop()


@pytest.fixture()
def mock_stats(mock: Process) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=mock.url) as client:
        client.post("/_mock/reset")
        yield client


@pytest.fixture(scope="session")
def gateway(mock: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("gateway")
    gw = start_gateway(f"sqlite+aiosqlite:///{tmp / 'tg.db'}", tmp, mock_config(mock.port))
    yield gw
    gw.process.stop()


@pytest.fixture(scope="session")
def api_key(gateway: Gateway) -> str:
    return gateway.new_key("session-tenant")


def pytest_configure(config: pytest.Config) -> None:
    """Start each session with an empty log folder: tests/zz_logs searches what this session wrote."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    for old in LOG_DIR.glob("*.log"):
        old.unlink()
    install_sigterm_backstop()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Backstop: whatever a failed or interrupted test started is killed (atexit is the next one)."""
    reap_all()


@pytest.fixture()
def redis_server() -> Iterator[RedisServer]:
    """A private ``redis-server`` that a test may stop and restart (the shared Redis is left alone)."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()
