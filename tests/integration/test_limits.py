"""Limits and budgets through the real gateway: exact under concurrency, with OpenAI's headers and codes."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tenantgate.metering.bounds import prompt_token_bound
from tests.support import Gateway, Process, mock_config, start_gateway

MESSAGES = [{"role": "user", "content": "count these words"}]
RATE_HEADERS = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests")


class Webhook:
    """A tiny HTTP server that records the JSON bodies POSTed to it (the budget-alert receiver)."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                received.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/alerts"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.close()


@pytest.fixture(scope="module")
def limited(mock: Process, webhook: Webhook, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp: Path = tmp_path_factory.mktemp("limits")
    config = mock_config(mock.port) + (
        "defaults:\n"
        "  budget_alert_threshold: 0.5\n"
        f"  budget_alert_webhook: {webhook.url}\n"
        "  key_limits: {max_concurrency: 50}\n"
    )
    gw = start_gateway(f"sqlite+aiosqlite:///{tmp / 'tg.db'}", tmp, config)
    yield gw
    gw.process.stop()


async def burst(gateway: Gateway, key: str, count: int, body: dict[str, Any]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(
        base_url=gateway.v1, timeout=60, limits=limits, headers={"Authorization": f"Bearer {key}"}
    ) as client:
        return list(await asyncio.gather(*(client.post("/chat/completions", json=body) for _ in range(count))))


def key_view(gateway: Gateway, key_id: str) -> dict[str, Any]:
    with gateway.admin() as admin:
        return dict(admin.get(f"/admin/keys/{key_id}").json())


async def test_rpm_is_exact_under_a_burst(limited: Gateway) -> None:
    tenant = limited.create_tenant("rpm-co")
    key = limited.create_key(tenant["id"], rpm=20)
    responses = await burst(limited, key["key"], 60, {"model": "mock-gpt", "messages": MESSAGES})
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 20 and statuses.count(429) == 40
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert int(refused.headers["retry-after"]) >= 1 and int(refused.headers["retry-after-ms"]) > 0
    for name in RATE_HEADERS:
        assert name in refused.headers
    assert refused.headers["x-ratelimit-limit-requests"] == "20"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    admitted = next(r for r in responses if r.status_code == 200)
    assert admitted.headers["x-ratelimit-limit-requests"] == "20"
    view = key_view(limited, key["id"])
    assert view["rpm"] == 20 and view["usage"]["requests"] == 20


async def test_tenant_limit_binds_every_key(limited: Gateway) -> None:
    tenant = limited.create_tenant("tenant-rpm-co", rpm=6)
    first = limited.create_key(tenant["id"], max_concurrency=None)
    second = limited.create_key(tenant["id"])
    body = {"model": "mock-gpt", "messages": MESSAGES}
    results = await asyncio.gather(burst(limited, first["key"], 10, body), burst(limited, second["key"], 10, body))
    statuses = [r.status_code for group in results for r in group]
    assert statuses.count(200) == 6
    with limited.admin() as admin:
        assert admin.get(f"/admin/tenants/{tenant['id']}").json()["usage"]["requests"] == 6


async def test_concurrency_cap_holds_and_slots_come_back(limited: Gateway, mock_stats: httpx.Client) -> None:
    tenant = limited.create_tenant("concurrency-co")
    key = limited.create_key(tenant["id"], max_concurrency=3)
    body = {"model": "mock-gpt", "messages": MESSAGES, "mock": {"ttft": 0.5}}
    responses = await burst(limited, key["key"], 10, body)
    assert [r.status_code for r in responses].count(200) == 3
    assert mock_stats.get("/_mock/stats").json()["max_in_flight"] <= 3
    # Clients killed in the middle of their requests must not leak slots.
    raw = json.dumps({**body, "stream": True, "mock": {"stall": True}}).encode()
    sockets = []
    for _ in range(3):
        sock = socket.create_connection(("127.0.0.1", limited.process.port))
        sock.sendall(
            (
                f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key['key']}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(raw)}\r\n\r\n"
            ).encode()
            + raw
        )
        assert b" 200 " in sock.recv(4096)
        sockets.append(sock)
    assert key_view(limited, key["id"])["usage"]["in_flight"] == 3
    for sock in sockets:
        sock.close()
    deadline = time.monotonic() + 3
    while key_view(limited, key["id"])["usage"]["in_flight"] != 0:
        assert time.monotonic() < deadline, "slots leaked after clients disconnected"
        await asyncio.sleep(0.05)
    again = await burst(limited, key["key"], 3, {"model": "mock-gpt", "messages": MESSAGES})
    assert [r.status_code for r in again] == [200, 200, 200]


async def test_tpm_admits_up_to_the_limit(limited: Gateway) -> None:
    tenant = limited.create_tenant("tpm-co")
    key = limited.create_key(tenant["id"], tpm=400)
    body = {"model": "mock-gpt", "messages": MESSAGES, "max_tokens": 8}
    raw = orjson.dumps(body)
    worst_case = prompt_token_bound(len(raw), body, 4096) + 8  # what one request reserves
    admitted_tokens = 0
    refused = 0
    headers = {"Authorization": f"Bearer {key['key']}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=limited.v1, headers=headers) as client:
        for _ in range(60):
            response = await client.post("/chat/completions", content=raw)
            if response.status_code == 200:
                admitted_tokens += response.json()["usage"]["total_tokens"]
                assert "x-ratelimit-remaining-tokens" in response.headers
            else:
                assert response.status_code == 429
                assert response.json()["error"]["code"] == "rate_limit_exceeded"
                refused += 1
    assert refused > 0
    # Admitted while the settled usage plus one worst case fitted: the window ends within one reservation.
    assert 400 - worst_case <= admitted_tokens <= 400, (admitted_tokens, worst_case)


async def test_budget_is_never_overspent_by_a_burst(limited: Gateway, webhook: Webhook) -> None:
    tenant = limited.create_tenant("budget-co")
    key = limited.create_key(tenant["id"], budget_usd=1.0, budget_period="daily", max_concurrency=None)
    body = {"model": "pricey", "messages": MESSAGES, "max_tokens": 10}
    responses = await burst(limited, key["key"], 200, body)
    admitted = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    assert admitted and refused and len(admitted) + len(refused) == 200
    assert refused[0].json()["error"]["code"] == "insufficient_quota"
    prompt_estimate = prompt_token_bound(len(json.dumps(body)), body, 4096)  # >= httpx's compact encoding
    worst_case = prompt_estimate * 1000e-6 + 10 * 2000e-6
    assert len(admitted) >= int(1.0 / worst_case), "refused while the worst case still fitted"
    # Keep going one at a time: requests are admitted until the next worst case would not fit.
    async with httpx.AsyncClient(base_url=limited.v1, headers={"Authorization": f"Bearer {key['key']}"}) as client:
        while (await client.post("/chat/completions", json=body)).status_code == 200:
            pass
    with limited.admin() as admin:
        spent = admin.get("/admin/usage", params={"key_id": key["id"]}).json()["totals"]["cost_usd"]
    assert spent <= 1.0 + 1e-9, "the budget was overspent"
    view = key_view(limited, key["id"])["usage"]
    assert view["spent_usd"] == pytest.approx(spent)
    assert view["remaining_usd"] < worst_case, "a request whose worst case still fits was refused"
    late = await burst(limited, key["key"], 1, body)
    assert late[0].status_code == 429 and late[0].headers.get("x-should-retry") == "false"
    deadline = time.monotonic() + 5
    while not any(event["scope"] == f"key:{key['id']}" for event in webhook.received):
        assert time.monotonic() < deadline, "no budget alert reached the webhook"
        await asyncio.sleep(0.1)
    alerts = [e for e in webhook.received if e["scope"] == f"key:{key['id']}"]
    assert len(alerts) == 1 and alerts[0]["event"] == "budget.threshold_reached"


def test_limits_can_be_changed_at_runtime(limited: Gateway) -> None:
    tenant = limited.create_tenant("patch-co")
    key = limited.create_key(tenant["id"])
    headers = {"Authorization": f"Bearer {key['key']}"}
    body = {"model": "mock-gpt", "messages": MESSAGES}
    assert httpx.post(f"{limited.v1}/chat/completions", json=body, headers=headers).status_code == 200
    with limited.admin() as admin:
        patched = admin.patch(f"/admin/keys/{key['id']}", json={"rpm": 2})  # one already used this minute
        assert patched.json()["rpm"] == 2
        assert admin.patch(f"/admin/keys/{key['id']}", json={"rpm": 0}).status_code == 400
        assert admin.patch(f"/admin/keys/{key['id']}", json={"budget_period": "hourly"}).status_code == 400
    first = httpx.post(f"{limited.v1}/chat/completions", json=body, headers=headers)
    second = httpx.post(f"{limited.v1}/chat/completions", json=body, headers=headers)
    assert (first.status_code, second.status_code) == (200, 429)


def test_config_defaults_apply_to_new_keys(limited: Gateway) -> None:
    tenant = limited.create_tenant("defaults-co")
    assert limited.create_key(tenant["id"])["max_concurrency"] == 50
    assert limited.create_key(tenant["id"], max_concurrency=2)["max_concurrency"] == 2
    assert tenant["max_concurrency"] is None


def test_spend_survives_a_restart(mock: Process, tmp_path: Path) -> None:
    database = f"sqlite+aiosqlite:///{tmp_path / 'restart.db'}"
    gateway = start_gateway(database, tmp_path, mock_config(mock.port))
    try:
        tenant = gateway.create_tenant("restart-co")
        key = gateway.create_key(tenant["id"], budget_usd=5.0, budget_period="monthly")
        for _ in range(3):
            response = httpx.post(
                f"{gateway.v1}/chat/completions",
                headers={"Authorization": f"Bearer {key['key']}"},
                json={"model": "pricey", "messages": MESSAGES, "max_tokens": 10},
            )
            assert response.status_code == 200, response.text
        spent_before = key_view(gateway, key["id"])["usage"]["spent_usd"]
        assert spent_before > 0
    finally:
        gateway.process.stop()
    gateway = start_gateway(database, tmp_path, mock_config(mock.port))
    try:
        assert key_view(gateway, key["id"])["usage"]["spent_usd"] == pytest.approx(spent_before)
    finally:
        gateway.process.stop()
