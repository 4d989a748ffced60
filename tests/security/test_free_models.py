"""Issue 9, class 12: Redis-backed limits must keep serving free models (a price of 0) and odd prices.

The attack needs no malice: with ``TENANTGATE_REDIS_URL`` set, every settle of a request on a model priced at 0
released a lease holding 0 nano-USD, which the Lua script sent to Redis as ``"-0"``. Redis refused it, the
settle failed and was retried, the limiter's breaker counted the failures and opened, and from then on every
limited key of every tenant got 503 ``limiter_unavailable``. Here one tenant sends a stream of free requests
through a real gateway on a private redis-server; each must be answered 200, the limiter must stay healthy, and
the settled reservations must really have been released.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.redis_server import RedisServer
from tests.support import Gateway, Process, mock_config, start_gateway

pytestmark = [pytest.mark.redis]

FREE_BODY = {"model": "mock-small", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}


@pytest.fixture()
def redis_gateway(redis_server: RedisServer, mock: Process, tmp_path: Path) -> Iterator[Gateway]:
    gateway = start_gateway(
        f"sqlite+aiosqlite:///{tmp_path / 'tg.db'}",
        tmp_path,
        mock_config(mock.port),
        TENANTGATE_REDIS_URL=redis_server.url,
        TENANTGATE_LIMITS_FAIL_MODE="closed",
    )
    try:
        yield gateway
    finally:
        gateway.process.stop()


def _usage(gateway: Gateway, path: str) -> dict[str, Any]:
    with gateway.admin() as admin:
        response = admin.get(path)
    assert response.status_code == 200, response.text
    return dict(response.json()["usage"])


def test_free_model_traffic_never_trips_the_redis_limiter(redis_gateway: Gateway) -> None:
    tenant = redis_gateway.create_tenant("free-co", budget_usd=1.0, tpm=1_000_000)
    key = redis_gateway.create_key(tenant["id"], rpm=1000, budget_usd=0.5)
    bystander_tenant = redis_gateway.create_tenant("bystander-co", budget_usd=5.0)
    bystander = redis_gateway.create_key(bystander_tenant["id"], rpm=1000)
    with httpx.Client(base_url=redis_gateway.v1, timeout=30) as client:
        auth = {"Authorization": f"Bearer {key['key']}"}
        # Well past the breaker threshold (5 failures), and each failed settle used to be retried 5 times.
        statuses = [client.post("/chat/completions", json=FREE_BODY, headers=auth).status_code for _ in range(25)]
        assert statuses == [200] * 25, statuses
        # Settles run off the response path; give the last ones a moment, then look at what Redis holds.
        deadline = time.monotonic() + 10
        while True:
            key_usage = _usage(redis_gateway, f"/admin/keys/{key['id']}")
            tenant_usage = _usage(redis_gateway, f"/admin/tenants/{tenant['id']}")
            if key_usage["in_flight"] == 0 and tenant_usage["in_flight"] == 0:
                break
            assert time.monotonic() < deadline, (key_usage, tenant_usage)
            time.sleep(0.1)
        for usage in (key_usage, tenant_usage):
            assert usage["requests"] == 25 and usage["reserved_usd"] == 0.0 and usage["spent_usd"] == 0.0
        limits = httpx.get(f"{redis_gateway.url}/health").json()["limits"]
        assert limits["state"] == "ok" and limits["breaker"] == "closed" and limits["consecutive_failures"] == 0
        # Another tenant on a priced model is still served: the shared limiter was never taken down.
        other = client.post(
            "/chat/completions",
            json={**FREE_BODY, "model": "mock-gpt"},
            headers={"Authorization": f"Bearer {bystander['key']}"},
        )
        assert other.status_code == 200, other.text
