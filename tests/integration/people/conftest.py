"""Gateways for the people API tests, one per sign-up mode (and a few for settings a test must own).

Each is a real gateway process on its own SQLite database, started with ``TENANTGATE_*`` settings and a config
file; the shared ones (open, closed) live for this package, the others for the module that needs them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.people.helpers import OPEN_SIGNUP_CONFIG, StartGateway, close_http, stop_soon
from tests.support import Gateway, Process, mock_config, start_gateway


@pytest.fixture(scope="package")
def start_people_gateway(mock: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartGateway]:
    """Start a gateway (stopped at the end of the package at the latest; fixtures may stop theirs earlier)."""
    started: list[Gateway] = []

    def start(config_extra: str = "", **env: str) -> Gateway:
        tmp = tmp_path_factory.mktemp("people")
        settings: dict[str, Any] = env  # TENANTGATE_* variables only
        gw = start_gateway(
            f"sqlite+aiosqlite:///{tmp / 'tg.db'}", tmp, mock_config(mock.port) + config_extra, **settings
        )
        started.append(gw)
        return gw

    yield start
    close_http()
    for gw in started:  # all at once: their shutdowns overlap
        stop_soon(gw)
    for gw in started:
        gw.process.stop()


@pytest.fixture(scope="package")
def open_gw(start_people_gateway: StartGateway) -> Gateway:
    """Open sign-up, with configured personal-tenant and user limits; login throttling per address is out of the
    way (every test calls from 127.0.0.1)."""
    return start_people_gateway(
        OPEN_SIGNUP_CONFIG, TENANTGATE_SIGNUP="open", TENANTGATE_LOGIN_MAX_FAILURES_PER_ADDRESS="100000"
    )


@pytest.fixture(scope="package")
def closed_gw(start_people_gateway: StartGateway) -> Gateway:
    """The default sign-up mode (closed): no sign-up setting at all."""
    return start_people_gateway(TENANTGATE_LOGIN_MAX_FAILURES_PER_ADDRESS="100000")
