"""Failover, health and ejection with several real mock upstreams, one of them switched to failing at will."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import Gateway, Process, closed_port, start_gateway, start_mock

BODY = {"messages": [{"role": "user", "content": "fail over"}]}


def faults(mock: Process, **standing: Any) -> None:
    httpx.put(f"{mock.url}/_mock/faults", json=standing).raise_for_status()


def stats(mock: Process) -> dict[str, Any]:
    return dict(httpx.get(f"{mock.url}/_mock/stats").json())


@pytest.fixture(scope="module")
def fleet() -> Iterator[dict[str, Process]]:
    mocks = {name: start_mock() for name in ("a", "b", "idle")}
    yield mocks
    for mock in mocks.values():
        mock.stop()


def fleet_config(fleet: dict[str, Process], dead_port: int) -> str:
    a, b, idle = (fleet[n].port for n in ("a", "b", "idle"))
    return f"""\
backends:
  - name: a
    base_url: http://127.0.0.1:{a}/v1
    priority: 0
    timeouts: {{first_byte: 0.5}}
    models:
      - {{name: ha, upstream_model: mock-gpt}}
      - {{name: prio, upstream_model: mock-gpt}}
      - {{name: panic, upstream_model: mock-gpt}}
  - name: b
    base_url: http://127.0.0.1:{b}/v1
    priority: 1
    models:
      - {{name: ha, upstream_model: mock-gpt}}
      - {{name: prio, upstream_model: mock-gpt}}
      - {{name: panic, upstream_model: mock-gpt}}
      - {{name: backup, upstream_model: mock-small}}
  - name: dead
    base_url: http://127.0.0.1:{dead_port}/v1
    models:
      - {{name: ha, upstream_model: mock-gpt}}
      - {{name: deadonly, upstream_model: mock-gpt}}
  - name: idle
    base_url: http://127.0.0.1:{idle}/v1
    models: [{{name: idle-model, upstream_model: mock-gpt}}]
models:
  prio: {{policy: priority}}
  deadonly: {{fallbacks: [backup]}}
  panic: {{max_ejection_share: 0.5}}
routing:
  health_check_interval: 0.3
  unhealthy_threshold: 2
  healthy_threshold: 1
  consecutive_failures_to_eject: 2
  base_ejection_seconds: 1.5
  max_ejection_seconds: 3
  retry_budget_min_per_second: 100
"""


@pytest.fixture(scope="module")
def gateway_ha(fleet: dict[str, Process], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp: Path = tmp_path_factory.mktemp("failover")
    gw = start_gateway(f"sqlite+aiosqlite:///{tmp / 'tg.db'}", tmp, fleet_config(fleet, closed_port()))
    yield gw
    gw.process.stop()


@pytest.fixture()
def key(gateway_ha: Gateway, fleet: dict[str, Process]) -> Iterator[dict[str, Any]]:
    for mock in fleet.values():
        faults(mock)
        httpx.post(f"{mock.url}/_mock/reset")
    tenant = gateway_ha.create_tenant(f"fo-{time.monotonic_ns()}")
    yield gateway_ha.create_key(tenant["id"])
    for mock in fleet.values():
        faults(mock)


def second_key(gateway: Gateway) -> dict[str, Any]:
    tenant = gateway.create_tenant(f"fo-other-{time.monotonic_ns()}")
    return gateway.create_key(tenant["id"])


def call(gateway: Gateway, key: dict[str, Any], model: str, **extra: Any) -> httpx.Response:
    return httpx.post(
        f"{gateway.v1}/chat/completions",
        json={**BODY, "model": model, **extra},
        headers={"Authorization": f"Bearer {key['key']}"},
        timeout=30,
    )


def by_backend(gateway: Gateway, key: dict[str, Any]) -> dict[str, int]:
    with gateway.admin() as admin:
        groups = admin.get("/admin/usage", params={"key_id": key["id"], "group_by": "backend"}).json()["by_backend"]
    return {g["backend"]: g["requests"] for g in groups}


def backend_view(gateway: Gateway, name: str) -> dict[str, Any]:
    with gateway.admin() as admin:
        return next(b for b in admin.get("/admin/backends").json()["data"] if b["name"] == name)


def test_connect_refused_fails_over_and_is_ejected(gateway_ha: Gateway, key: dict[str, Any]) -> None:
    statuses = [call(gateway_ha, key, "ha").status_code for _ in range(30)]
    assert statuses == [200] * 30
    assert set(by_backend(gateway_ha, key)) == {"a", "b"}, "the dead backend never answers"
    dead = backend_view(gateway_ha, "dead")
    assert dead["healthy"] is False and dead["state"] in ("ejected", "unhealthy")
    assert dead["last_error"] and ("dead" in dead["last_error"] or "connect" in dead["last_error"].lower())
    assert backend_view(gateway_ha, "a")["healthy"] is True


def test_fallback_model_when_all_own_backends_fail(gateway_ha: Gateway, key: dict[str, Any]) -> None:
    response = call(gateway_ha, key, "deadonly")
    assert response.status_code == 200
    assert by_backend(gateway_ha, key) == {"b": 1}, "served by the fallback model's backend"
    assert response.json()["model"] == "deadonly"  # the client sees the name it asked for


def test_500_and_429_move_to_the_next_backend(
    gateway_ha: Gateway, key: dict[str, Any], fleet: dict[str, Process]
) -> None:
    faults(fleet["a"], status=500)
    other = second_key(gateway_ha)  # one tenant alone cannot eject a shared backend: two fail on it here
    callers = (key, other, key, other, key)
    assert [call(gateway_ha, caller, "prio").status_code for caller in callers] == [200] * 5
    assert by_backend(gateway_ha, key) == {"b": 3}
    assert stats(fleet["a"])["requests"].get("/v1/chat/completions", 0) <= 2, "ejected after 2 failures"
    assert backend_view(gateway_ha, "a")["state"] in ("ejected", "unhealthy")
    faults(fleet["a"], status=429)
    time.sleep(3.2)  # let the ejection run out; the next failure is a 429: cool-down, not ejection
    assert call(gateway_ha, key, "prio").status_code == 200
    assert backend_view(gateway_ha, "a")["state"] in ("cooling", "unhealthy")
    faults(fleet["a"])
    deadline = time.monotonic() + 8
    while by_backend(gateway_ha, key).get("a", 0) == 0:  # re-admitted: priority traffic returns to "a"
        assert time.monotonic() < deadline, "backend a was never re-admitted"
        assert call(gateway_ha, key, "prio").status_code == 200
        time.sleep(0.2)


def test_slow_first_byte_fails_over(gateway_ha: Gateway, key: dict[str, Any], fleet: dict[str, Process]) -> None:
    faults(fleet["a"], ttft=3)
    started = time.monotonic()
    response = call(gateway_ha, key, "prio")
    assert response.status_code == 200 and time.monotonic() - started < 2.5
    assert by_backend(gateway_ha, key) == {"b": 1}


def test_panic_mode_uses_ejected_backends_rather_than_failing(
    gateway_ha: Gateway, key: dict[str, Any], fleet: dict[str, Process]
) -> None:
    for name in ("a", "b"):
        faults(fleet[name], status=503)
    other = second_key(gateway_ha)
    for caller in (key, other) * 3:
        assert call(gateway_ha, caller, "panic").status_code == 502
    for name in ("a", "b"):
        faults(fleet[name])
    # Both are ejected now; with everything ejected the gateway still tries them instead of refusing.
    assert call(gateway_ha, key, "panic").status_code == 200


def test_all_failing_gives_one_error_naming_the_backends(
    gateway_ha: Gateway, key: dict[str, Any], fleet: dict[str, Process]
) -> None:
    for name in ("a", "b"):
        faults(fleet[name], status=500)
    response = call(gateway_ha, key, "prio")
    assert response.status_code == 502
    message = response.json()["error"]["message"]
    assert "a: HTTP 500" in message and "b: HTTP 500" in message
    assert "Injected" not in message
    for name in ("a", "b"):
        faults(fleet[name], status=429)
    time.sleep(3.2)
    limited = call(gateway_ha, key, "prio")
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1


def test_health_checks_never_send_a_completion(gateway_ha: Gateway, fleet: dict[str, Process]) -> None:
    httpx.post(f"{fleet['idle'].url}/_mock/reset")
    time.sleep(1.0)
    seen = stats(fleet["idle"])["requests"]
    assert seen.get("/v1/models", 0) >= 2
    assert not any(path.startswith("/v1/") and path != "/v1/models" for path in seen), seen


def test_active_checks_mark_unhealthy_and_recover(gateway_ha: Gateway, fleet: dict[str, Process]) -> None:
    faults(fleet["idle"], status=500)
    deadline = time.monotonic() + 5
    while backend_view(gateway_ha, "idle")["state"] != "unhealthy":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    faults(fleet["idle"])
    deadline = time.monotonic() + 5
    while backend_view(gateway_ha, "idle")["state"] != "healthy":
        assert time.monotonic() < deadline
        time.sleep(0.1)


async def test_backend_killed_during_load(tmp_path: Path) -> None:
    victim, survivor = start_mock("--chunk-delay", "0"), start_mock()
    config = f"""\
backends:
  - {{name: victim, base_url: "http://127.0.0.1:{victim.port}/v1", models: [{{name: m, upstream_model: mock-gpt}}]}}
  - {{name: survivor, base_url: "http://127.0.0.1:{survivor.port}/v1", models: [{{name: m, upstream_model: mock-gpt}}]}}
routing: {{retry_budget_min_per_second: 100}}
"""
    gateway = start_gateway(f"sqlite+aiosqlite:///{tmp_path / 'tg.db'}", tmp_path, config)
    try:
        api_key = gateway.new_key("kill-co")
        async with httpx.AsyncClient(
            base_url=gateway.v1, headers={"Authorization": f"Bearer {api_key}"}, timeout=30
        ) as client:

            async def worker() -> list[int]:
                codes = []
                for _ in range(25):
                    codes.append((await client.post("/chat/completions", json={**BODY, "model": "m"})).status_code)
                return codes

            workers = [asyncio.create_task(worker()) for _ in range(4)]
            await asyncio.sleep(0.3)
            victim.stop()
            codes = [code for codes in await asyncio.gather(*workers) for code in codes]
        assert codes.count(200) == len(codes) == 100, f"client-visible failures: {len(codes) - codes.count(200)}"
    finally:
        gateway.process.stop()
        victim.stop()
        survivor.stop()


def test_retry_budget_caps_attempts_on_an_all_failing_fleet(tmp_path: Path) -> None:
    mocks = [start_mock() for _ in range(3)]
    backends = "\n".join(
        f'  - {{name: f{i}, base_url: "http://127.0.0.1:{m.port}/v1", models: [{{name: m, upstream_model: mock-gpt}}]}}'
        for i, m in enumerate(mocks)
    )
    config = (
        f"backends:\n{backends}\nrouting: {{retry_budget_ratio: 0.2, retry_budget_min_per_second: 0, "
        f"consecutive_failures_to_eject: 1000, backoff_base_seconds: 0}}\n"
    )
    for mock in mocks:
        faults(mock, status=500)
    gateway = start_gateway(f"sqlite+aiosqlite:///{tmp_path / 'tg.db'}", tmp_path, config)
    try:
        api_key = gateway.new_key("budget-co")
        codes = [
            httpx.post(
                f"{gateway.v1}/chat/completions",
                json={**BODY, "model": "m"},
                headers={"Authorization": f"Bearer {api_key}"},
            ).status_code
            for _ in range(50)
        ]
        assert codes == [502] * 50
        attempts = sum(stats(m)["requests"].get("/v1/chat/completions", 0) for m in mocks)
        assert 50 <= attempts <= 50 + 0.2 * 50 + 1, f"{attempts} upstream attempts for 50 requests"
    finally:
        gateway.process.stop()
        for mock in mocks:
            mock.stop()
