"""Issue 9, class 11 (ejection part): one tenant's payloads must not eject a shared backend for everyone.

The attack: a tenant sends requests crafted so the upstream fails on them (here the mock's per-request
``"mock"`` object makes it answer 500, drop the connection, or stall past the first-byte timeout). Passive outlier
ejection used to count those failures like any other, so a few of them took the backend away from every other
tenant. Now a single tenant's 5xx/timeouts can supply at most half of an ejecting streak; failures seen from
several tenants still eject, so the detector keeps working for real outages (the second test).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import Gateway, Process, start_gateway

THRESHOLD = 2  # the strictest useful setting: one tenant's failures may count once per streak


POISON = {
    "http_500": {"mock": {"status": 500}},
    "dropped_connection": {"mock": {"die_after": 0}},
    "stalled_first_byte": {"mock": {"ttft": 2}},
}
GROUPS = [*sorted(POISON), "spread"]  # one model on its own two backends per test: no test sees another's state


def _config(port: int) -> str:
    backends = []
    for group in GROUPS:
        for suffix, priority in (("1", 0), ("2", 1)):
            backends.append(
                f"""\
  - name: {group}-{suffix}
    base_url: http://127.0.0.1:{port}/v1
    api_key: upstream-secret-abc123
    priority: {priority}
    timeouts: {{first_byte: 0.4}}
    models:
      - {{name: m-{group}, upstream_model: mock-gpt}}
"""
            )
    models = "".join(f"  m-{group}: {{policy: priority}}\n" for group in GROUPS)
    return (
        "backends:\n"
        + "".join(backends)
        + "models:\n"
        + models
        + f"""\
routing:
  consecutive_failures_to_eject: {THRESHOLD}
  base_ejection_seconds: 60
  max_ejection_seconds: 60
  health_check_interval: 3600
  retry_budget_min_per_second: 1000
"""
    )


@pytest.fixture(scope="module")
def shared(mock: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("steering")
    gateway = start_gateway(f"sqlite+aiosqlite:///{tmp / 'tg.db'}", tmp, _config(mock.port))
    try:
        yield gateway
    finally:
        gateway.process.stop()


def _state(gateway: Gateway, name: str) -> str:
    with gateway.admin() as admin:
        backends = admin.get("/admin/backends").json()["data"]
    return str(next(b for b in backends if b["name"] == name)["state"])


def _post(gateway: Gateway, key: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{gateway.v1}/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )


def _served_by(gateway: Gateway, key_id: str) -> dict[str, int]:
    with gateway.admin() as admin:
        groups = admin.get("/admin/usage", params={"key_id": key_id, "group_by": "backend"}).json()["by_backend"]
    return {g["backend"]: g["requests"] for g in groups}


@pytest.mark.parametrize("attack", sorted(POISON))
def test_one_tenant_cannot_eject_a_shared_backend(shared: Gateway, attack: str) -> None:
    attacker = shared.new_key(f"attacker-{attack}")
    body = {"model": f"m-{attack}", "messages": [{"role": "user", "content": "x"}], **POISON[attack]}
    for _ in range(4 * THRESHOLD):
        assert _post(shared, attacker, body).status_code >= 500  # the attacker's own problem
    assert _state(shared, f"{attack}-1") == "healthy" and _state(shared, f"{attack}-2") == "healthy"
    victim = shared.create_key(shared.create_tenant(f"victim-{attack}")["id"])
    response = _post(shared, victim["key"], {"model": f"m-{attack}", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 200, response.text
    deadline = time.monotonic() + 5
    while not _served_by(shared, victim["id"]):  # usage is written in the background
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert _served_by(shared, victim["id"]) == {f"{attack}-1": 1}, "the preferred backend was taken away"


def test_failures_from_several_tenants_still_eject(shared: Gateway) -> None:
    """The defence must not switch outlier detection off: the same failures from two tenants eject."""
    body = {"model": "m-spread", "messages": [{"role": "user", "content": "x"}], "mock": {"status": 500}}
    for key in (shared.new_key("tenant-one"), shared.new_key("tenant-two")):
        assert _post(shared, key, body).status_code >= 500
    assert _state(shared, "spread-1") == "ejected"
