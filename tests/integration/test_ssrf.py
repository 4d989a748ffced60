"""Backend URLs registered through the admin API pass the network policy (SSRF protection)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Gateway, Process, mock_config, start_gateway


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://[fd00:ec2::254]/v1", "metadata"),
        ("http://10.0.0.5:8000/v1", "private"),
        ("http://user:pass@127.0.0.1:8000/v1", "credentials"),
        ("http://0.0.0.0:8000/v1", "unspecified"),
    ],
)
def test_refused_urls(gateway: Gateway, url: str, reason: str) -> None:
    with gateway.admin() as admin:
        response = admin.post(
            "/admin/backends", json={"name": f"bad-{abs(hash(url))}", "base_url": url, "models": ["x"]}
        )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "backend_url_refused" and error["param"] == "base_url"
    assert reason in error["message"].lower()


def test_updating_to_a_refused_url_is_refused(gateway: Gateway, mock: Process) -> None:
    with gateway.admin() as admin:
        created = admin.post(
            "/admin/backends",
            json={"name": "ssrf-update", "base_url": f"http://127.0.0.1:{mock.port}/v1", "models": ["ssrf-m"]},
        ).json()
        response = admin.patch(f"/admin/backends/{created['id']}", json={"base_url": "http://169.254.169.254/v1"})
        assert response.status_code == 400
        assert admin.get(f"/admin/backends/{created['id']}").json()["base_url"].startswith("http://127.0.0.1")
        admin.delete(f"/admin/backends/{created['id']}")


@pytest.fixture()
def strict_gateway(mock: Process, tmp_path: Path) -> Iterator[Gateway]:
    gw = start_gateway(
        f"sqlite+aiosqlite:///{tmp_path / 'tg.db'}",
        tmp_path,
        mock_config(mock.port),
        TENANTGATE_BACKEND_ALLOW_LOOPBACK="false",
    )
    yield gw
    gw.process.stop()


def test_loopback_can_be_refused_by_configuration(strict_gateway: Gateway, mock: Process) -> None:
    with strict_gateway.admin() as admin:
        for url in (f"http://127.0.0.1:{mock.port}/v1", f"http://localhost:{mock.port}/v1"):
            response = admin.post("/admin/backends", json={"name": "loop", "base_url": url, "models": ["m"]})
            assert response.status_code == 400 and "loopback" in response.json()["error"]["message"]
