"""Three gateway processes sharing PostgreSQL and Redis enforce limits exactly as one, and see admin changes."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.pg import reset_postgres
from tests.support import REDIS_URL, Gateway, Process, mock_config, start_gateway

BODY = {"model": "mock-gpt", "messages": [{"role": "user", "content": "replicas"}]}


@pytest.fixture(scope="module")
def replicas(mock: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Gateway]]:
    redis.Redis.from_url(REDIS_URL).ping()  # fail loudly when Redis is missing
    tmp: Path = tmp_path_factory.mktemp("replicas")
    database = reset_postgres()
    gateways: list[Gateway] = []
    try:
        for _ in range(3):  # the same secret file: every replica must decrypt the same credentials
            gateways.append(start_gateway(database, tmp, mock_config(mock.port), TENANTGATE_REDIS_URL=REDIS_URL))
        yield gateways
    finally:
        for gateway in gateways:
            gateway.process.stop()


async def spread(replicas: list[Gateway], key: str, count: int, body: dict[str, object]) -> list[httpx.Response]:
    clients = [
        httpx.AsyncClient(
            base_url=g.v1,
            headers={"Authorization": f"Bearer {key}"},
            timeout=60,
            limits=httpx.Limits(max_connections=count),
        )
        for g in replicas
    ]
    try:
        targets = itertools.cycle(clients)
        return list(await asyncio.gather(*(next(targets).post("/chat/completions", json=body) for _ in range(count))))
    finally:
        for client in clients:
            await client.aclose()


async def test_rpm_exact_across_three_replicas(replicas: list[Gateway]) -> None:
    tenant = replicas[0].create_tenant("scale-rpm")
    key = replicas[0].create_key(tenant["id"], rpm=20)
    await asyncio.sleep(0.6)  # the other replicas learn the new key at their next sync
    responses = await spread(replicas, key["key"], 60, BODY)
    assert [r.status_code for r in responses].count(200) == 20
    assert {r.status_code for r in responses} == {200, 429}


async def test_budget_across_three_replicas(replicas: list[Gateway]) -> None:
    tenant = replicas[1].create_tenant("scale-budget")
    key = replicas[1].create_key(tenant["id"], budget_usd=0.5, budget_period="total")
    await asyncio.sleep(0.6)
    responses = await spread(replicas, key["key"], 200, {**BODY, "model": "pricey", "max_tokens": 10})
    admitted = [r for r in responses if r.status_code == 200]
    assert admitted and len(admitted) < 200
    deadline = time.monotonic() + 3  # each replica flushes its own usage queue on its own schedule
    while True:
        with replicas[2].admin() as admin:
            spent = admin.get("/admin/usage", params={"key_id": key["id"]}).json()["totals"]["cost_usd"]
            view = admin.get(f"/admin/keys/{key['id']}").json()["usage"]
        if view["spent_usd"] == pytest.approx(spent) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert spent <= 0.5 + 1e-9, "three replicas together overspent the budget"
    assert view["spent_usd"] == pytest.approx(spent), "Redis spend and the usage ledger disagree"


async def test_revocation_reaches_every_replica_within_a_second(replicas: list[Gateway]) -> None:
    tenant = replicas[0].create_tenant("scale-revoke")
    key = replicas[0].create_key(tenant["id"])
    await asyncio.sleep(0.6)
    for gateway in replicas:  # warm every replica's auth cache with the key
        assert (
            httpx.post(
                f"{gateway.v1}/chat/completions", json=BODY, headers={"Authorization": f"Bearer {key['key']}"}
            ).status_code
            == 200
        )
    with replicas[0].admin() as admin:
        assert admin.delete(f"/admin/keys/{key['id']}").status_code == 200
    revoked_at = time.monotonic()
    pending = set(range(3))
    while pending:
        for index in list(pending):
            response = httpx.post(
                f"{replicas[index].v1}/chat/completions", json=BODY, headers={"Authorization": f"Bearer {key['key']}"}
            )
            if response.status_code == 401:
                pending.discard(index)
        assert time.monotonic() - revoked_at < 1.0, f"replicas {sorted(pending)} still accept a revoked key"
    with replicas[2].admin() as admin:  # and a limit changed on one replica binds on the others
        fresh = replicas[2].create_key(tenant["id"])
        admin.patch(f"/admin/keys/{fresh['id']}", json={"rpm": 1})
    await asyncio.sleep(0.6)
    statuses = [r.status_code for r in await spread(replicas, fresh["key"], 3, BODY)]
    assert sorted(statuses) == [200, 429, 429]


def test_idempotent_replay_on_another_replica(replicas: list[Gateway], mock: Process) -> None:
    tenant = replicas[0].create_tenant("scale-idem")
    key = replicas[0].create_key(tenant["id"])
    time.sleep(0.6)
    headers = {"Authorization": f"Bearer {key['key']}", "Idempotency-Key": "cross-replica-1"}
    seen = httpx.get(f"{mock.url}/_mock/stats").json()["requests"].get("/v1/chat/completions", 0)
    first = httpx.post(f"{replicas[0].v1}/chat/completions", json=BODY, headers=headers)
    second = httpx.post(f"{replicas[2].v1}/chat/completions", json=BODY, headers=headers)
    assert first.status_code == second.status_code == 200
    assert second.json() == first.json() and second.headers["idempotent-replayed"] == "true"
    assert httpx.get(f"{mock.url}/_mock/stats").json()["requests"].get("/v1/chat/completions", 0) == seen + 1
    mismatch = httpx.post(f"{replicas[1].v1}/chat/completions", json={**BODY, "temperature": 1}, headers=headers)
    assert mismatch.status_code == 422
