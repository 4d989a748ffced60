"""Limits backed by Redis: the same exact behaviour, and Redis trouble handled by the configured fail mode."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from tests.redis_server import RedisServer
from tests.support import Gateway, Process, mock_config, start_gateway

BODY = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}


def gateway_on(redis_server: RedisServer, mock: Process, tmp: Path, fail_mode: str) -> Gateway:
    return start_gateway(
        f"sqlite+aiosqlite:///{tmp / 'tg.db'}",
        tmp,
        mock_config(mock.port),
        TENANTGATE_REDIS_URL=redis_server.url,
        TENANTGATE_LIMITS_FAIL_MODE=fail_mode,
    )


def timed_post(gateway: Gateway, key: str) -> tuple[int, float, httpx.Response]:
    started = time.monotonic()
    response = httpx.post(
        f"{gateway.v1}/chat/completions", json=BODY, headers={"Authorization": f"Bearer {key}"}, timeout=10
    )
    return response.status_code, time.monotonic() - started, response


async def test_redis_limits_exact_then_fail_closed_then_recover(
    redis_server: RedisServer, mock: Process, tmp_path: Path
) -> None:
    gateway = gateway_on(redis_server, mock, tmp_path, "closed")
    try:
        tenant = gateway.create_tenant("redis-co")
        key = gateway.create_key(tenant["id"], rpm=20)
        async with httpx.AsyncClient(
            base_url=gateway.v1,
            headers={"Authorization": f"Bearer {key['key']}"},
            limits=httpx.Limits(max_connections=60),
            timeout=30,
        ) as client:
            responses = await asyncio.gather(*(client.post("/chat/completions", json=BODY) for _ in range(60)))
        assert [r.status_code for r in responses].count(200) == 20
        assert httpx.get(f"{gateway.url}/health").json()["limits"]["state"] == "ok"

        other = gateway.create_key(tenant["id"], rpm=1000)
        redis_server.stop()
        for _ in range(5):
            status, elapsed, response = timed_post(gateway, other["key"])
            assert status == 503 and response.json()["error"]["code"] == "limiter_unavailable"
            assert elapsed < 1.0, "a request hung on a dead Redis"
        assert httpx.get(f"{gateway.url}/health").json()["limits"]["state"] != "ok"
        unlimited = gateway.new_key("no-limits-co")  # keys without limits never touch Redis
        assert timed_post(gateway, unlimited)[0] == 200

        redis_server.start()
        deadline = time.monotonic() + 10
        while timed_post(gateway, other["key"])[0] != 200:
            assert time.monotonic() < deadline, "no recovery after Redis came back"
            await asyncio.sleep(0.2)
        assert httpx.get(f"{gateway.url}/health").json()["limits"]["state"] == "ok"
    finally:
        gateway.process.stop()


def test_fail_mode_local_keeps_serving(redis_server: RedisServer, mock: Process, tmp_path: Path) -> None:
    gateway = gateway_on(redis_server, mock, tmp_path, "local")
    try:
        tenant = gateway.create_tenant("local-co")
        key = gateway.create_key(tenant["id"], rpm=3)
        assert timed_post(gateway, key["key"])[0] == 200
        redis_server.stop()
        statuses = []
        for _ in range(5):
            status, elapsed, _ = timed_post(gateway, key["key"])
            statuses.append(status)
            assert elapsed < 1.0
        # The local store enforces the same limit per process (3 a minute) while Redis is away.
        assert statuses == [200, 200, 200, 429, 429]
        health = httpx.get(f"{gateway.url}/health").json()["limits"]
        assert health["fail_mode"] == "local" and health["state"] != "ok"
    finally:
        gateway.process.stop()
