"""Metrics, health endpoints under failing dependencies, and the audit log."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.pg import reset_postgres
from tests.redis_server import RedisServer
from tests.support import PG_URL, Gateway, Process, closed_port, mock_config, start_gateway
from tests.tcp_proxy import TcpProxy

MESSAGES = [{"role": "user", "content": "measure me"}]


def samples(gateway: Gateway) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{gateway.url}/metrics").text
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture(scope="module")
def observed(mock: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp: Path = tmp_path_factory.mktemp("observed")
    config = (
        mock_config(mock.port)
        + f"""\
  - name: dead
    base_url: http://127.0.0.1:{closed_port()}/v1
    priority: 0
    models: [{{name: failover-model, upstream_model: mock-gpt}}]
  - name: alive
    base_url: http://127.0.0.1:{mock.port}/v1
    api_key: upstream-secret-abc123
    priority: 1
    models: [{{name: failover-model, upstream_model: mock-gpt}}]
models:
  failover-model: {{policy: priority}}
"""
    )
    gw = start_gateway(f"sqlite+aiosqlite:///{tmp / 'tg.db'}", tmp, config)
    yield gw
    gw.process.stop()


def test_metrics_follow_a_scripted_set_of_requests(observed: Gateway) -> None:
    tenant = observed.create_tenant("metrics-co")
    key = observed.create_key(tenant["id"])
    limited = observed.create_key(tenant["id"], rpm=1)
    client = openai.OpenAI(base_url=observed.v1, api_key=key["key"], max_retries=0)
    replies = [client.chat.completions.create(model="mock-gpt", messages=MESSAGES) for _ in range(3)]  # type: ignore[arg-type]
    list(client.chat.completions.create(model="mock-gpt", messages=MESSAGES, stream=True))  # type: ignore[arg-type]
    client.chat.completions.create(model="failover-model", messages=MESSAGES)  # type: ignore[arg-type]
    bad = httpx.post(
        f"{observed.v1}/chat/completions",
        json={"model": "mock-gpt", "messages": MESSAGES},
        headers={"Authorization": "Bearer tg-nope-nope"},
    )
    assert bad.status_code == 401
    headers = {"Authorization": f"Bearer {limited['key']}"}
    codes = [
        httpx.post(
            f"{observed.v1}/chat/completions", json={"model": "mock-gpt", "messages": MESSAGES}, headers=headers
        ).status_code
        for _ in range(2)
    ]
    assert codes == [200, 429]
    found = samples(observed)
    route = "chat/completions"
    assert value(found, "tenantgate_requests_total", route=route, model="mock-gpt", status="200") == 5
    assert value(found, "tenantgate_requests_total", route=route, model="mock-gpt", status="429") == 1
    assert value(found, "tenantgate_requests_total", route=route, model="", status="401") == 1
    assert value(found, "tenantgate_limit_refusals_total", kind="rpm") == 1
    assert value(found, "tenantgate_failovers_total", model="failover-model") == 1
    assert value(found, "tenantgate_upstream_attempts_total", backend="dead", outcome="connect_error") == 1
    assert value(found, "tenantgate_upstream_attempts_total", backend="alive", outcome="success") == 1
    completion = sum(r.usage.completion_tokens for r in replies if r.usage)
    assert value(found, "tenantgate_tokens_total", model="mock-gpt", type="completion") >= completion + 8
    assert value(found, "tenantgate_requests_in_flight") == 0
    assert value(found, "tenantgate_request_duration_seconds_count", route=route, model="mock-gpt") == 6
    assert (
        value(
            found,
            "gen_ai_client_token_usage_count",
            gen_ai_operation_name="chat",
            gen_ai_request_model="mock-gpt",
            gen_ai_token_type="output",
        )
        == 5
    )
    assert value(found, "tenantgate_backend_healthy", backend="mock-a") == 1
    assert value(found, "tenantgate_database_up") == 1


async def test_label_cardinality_stays_bounded_with_1000_keys(observed: Gateway) -> None:
    tenant = observed.create_tenant("cardinality-co")
    with observed.admin() as admin:
        keys = [admin.post("/admin/keys", json={"tenant_id": tenant["id"]}).json()["key"] for _ in range(1000)]
    async with httpx.AsyncClient(base_url=observed.v1, limits=httpx.Limits(max_connections=50)) as client:
        semaphore = asyncio.Semaphore(50)

        async def one(api_key: str) -> int:
            async with semaphore:
                response = await client.post(
                    "/chat/completions",
                    json={"model": "mock-small", "messages": MESSAGES},
                    headers={"Authorization": f"Bearer {api_key}"},
                )
                return response.status_code

        assert set(await asyncio.gather(*(one(k) for k in keys))) == {200}
    text = httpx.get(f"{observed.url}/metrics").text
    assert not any(key.split("-")[1] in text for key in keys[:50]), "a key id leaked into a label"
    series = [line for line in text.splitlines() if line.startswith("tenantgate_requests_total{")]
    assert len(series) < 20, len(series)
    assert len(text.splitlines()) < 3000


def test_audit_log_records_every_admin_action(observed: Gateway, mock: Process) -> None:
    with observed.admin() as admin:
        tenant = admin.post("/admin/tenants", json={"name": "audit-co"}).json()
        admin.patch(f"/admin/tenants/{tenant['id']}", json={"rpm": 5})
        key = admin.post("/admin/keys", json={"tenant_id": tenant["id"]}).json()
        admin.patch(f"/admin/keys/{key['id']}", json={"name": "renamed"})
        admin.delete(f"/admin/keys/{key['id']}")
        backend = admin.post(
            "/admin/backends",
            json={
                "name": "audited",
                "api_key": "sk-audit-secret-123",
                "base_url": f"http://127.0.0.1:{mock.port}/v1",
                "models": ["audited-m"],
            },
        ).json()
        admin.patch(f"/admin/backends/{backend['id']}", json={"api_key": "sk-rotated-secret-456"})
        admin.delete(f"/admin/backends/{backend['id']}")
        admin.delete(f"/admin/tenants/{tenant['id']}")
        entries = admin.get("/admin/audit", params={"limit": 50}).json()["data"]
        only_keys = admin.get("/admin/audit", params={"target_type": "key"}).json()["data"]
        assert admin.get("/admin/audit", headers={"Authorization": "Bearer wrong"}).status_code == 401
    ours = [e for e in entries if e["target_id"] in (tenant["id"], key["id"], backend["id"])]
    assert [e["action"] for e in reversed(ours)] == [
        "tenant.create",
        "tenant.update",
        "key.create",
        "key.update",
        "key.revoke",
        "backend.create",
        "backend.update",
        "backend.delete",
        "tenant.delete",
    ]
    assert {e["action"] for e in only_keys} <= {"key.create", "key.update", "key.revoke"}
    assert all(e["actor"].startswith("admin-key:") for e in ours)
    assert "sk-audit-secret-123" not in str(entries) and "sk-rotated-secret-456" not in str(entries)
    assert next(e for e in ours if e["action"] == "tenant.update")["changes"] == {"rpm": 5}


def test_health_when_backends_are_down(tmp_path: Path) -> None:
    config = (
        f"backends:\n  - {{name: gone, base_url: 'http://127.0.0.1:{closed_port()}/v1', models: [m]}}\n"
        "routing: {health_check_interval: 0.2, unhealthy_threshold: 1}\n"
    )
    gateway = start_gateway(f"sqlite+aiosqlite:///{tmp_path / 'h.db'}", tmp_path, config)
    try:
        deadline = time.monotonic() + 5
        while (ready := httpx.get(f"{gateway.url}/health/ready")).status_code == 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert ready.status_code == 503 and "no healthy backend" in ready.json()["reasons"]
        assert httpx.get(f"{gateway.url}/health/live").status_code == 200
        assert httpx.get(f"{gateway.url}/health").json()["backends"] == {"total": 1, "healthy": 0}
        found = samples(gateway)
        assert value(found, "tenantgate_backend_healthy", backend="gone") == 0
        assert value(found, "tenantgate_backend_state", backend="gone", state="unhealthy") == 1
    finally:
        gateway.process.stop()


def test_health_when_redis_is_down(mock: Process, tmp_path: Path) -> None:
    server = RedisServer().start()
    gateway = start_gateway(
        f"sqlite+aiosqlite:///{tmp_path / 'r.db'}", tmp_path, mock_config(mock.port), TENANTGATE_REDIS_URL=server.url
    )
    try:
        assert httpx.get(f"{gateway.url}/health/ready").status_code == 200
        server.stop()
        deadline = time.monotonic() + 5
        while (ready := httpx.get(f"{gateway.url}/health/ready")).status_code == 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert "limits store unavailable" in ready.json()["reasons"]
        found = samples(gateway)
        assert value(found, "tenantgate_redis_up") == 0
    finally:
        gateway.process.stop()
        server.stop()


def test_health_when_the_database_is_down(mock: Process, tmp_path: Path) -> None:
    reset_postgres()
    host_port = PG_URL.split("@", 1)[1].split("/", 1)[0]
    proxy = TcpProxy(host_port.split(":")[0], int(host_port.split(":")[1])).start()
    url = PG_URL.replace(host_port, f"127.0.0.1:{proxy.port}")
    gateway = start_gateway(url, tmp_path, mock_config(mock.port))
    try:
        key = gateway.new_key("db-down-co")
        body: dict[str, Any] = {"model": "mock-gpt", "messages": MESSAGES}
        headers = {"Authorization": f"Bearer {key}"}
        assert httpx.post(f"{gateway.v1}/chat/completions", json=body, headers=headers).status_code == 200
        proxy.cut()
        health = httpx.get(f"{gateway.url}/health", timeout=30)
        assert health.status_code == 503 and health.json()["database"] == "unavailable"
        ready = httpx.get(f"{gateway.url}/health/ready", timeout=30)
        assert ready.status_code == 503 and "database unavailable" in ready.json()["reasons"]
        # The hot path does not need the database: a cached key is still served while it is away.
        assert httpx.post(f"{gateway.v1}/chat/completions", json=body, headers=headers).status_code == 200
    finally:
        gateway.process.stop()
        proxy.close()
