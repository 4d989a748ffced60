"""The whole gateway on PostgreSQL: keys, routing and exact metering under concurrency."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.pg import reset_postgres
from tests.support import Gateway, Process, mock_config, start_gateway


@pytest.fixture(scope="module")
def pg_gateway(mock: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp: Path = tmp_path_factory.mktemp("pg-gateway")
    gw = start_gateway(
        reset_postgres(),
        tmp,
        mock_config(mock.port),
        TENANTGATE_BOOTSTRAP_KEYS="erp:FormdevINF26-secret-key,extranet:another-key-xyz",
    )
    yield gw
    gw.process.stop()


async def test_burst_metering_on_postgres(pg_gateway: Gateway) -> None:
    tenant = pg_gateway.create_tenant("pg-burst")
    created = pg_gateway.create_key(tenant["id"])
    async with openai.AsyncOpenAI(base_url=pg_gateway.v1, api_key=created["key"], max_retries=0) as client:
        replies = await asyncio.gather(
            *(
                client.chat.completions.create(model="mock-gpt", messages=[{"role": "user", "content": f"n {i}"}])  # type: ignore[arg-type]
                for i in range(50)
            )
        )
    with pg_gateway.admin() as admin:
        totals = admin.get("/admin/usage", params={"key_id": created["id"]}).json()["totals"]
    assert totals["requests"] == 50
    assert totals["prompt_tokens"] == sum(r.usage.prompt_tokens for r in replies if r.usage)
    assert totals["completion_tokens"] == sum(r.usage.completion_tokens for r in replies if r.usage)


def test_bootstrap_keys_from_environment(pg_gateway: Gateway) -> None:
    """Seed 001 style: keys configured by environment only, sent as X-API-Key."""
    client = openai.OpenAI(
        base_url=pg_gateway.v1,
        api_key="unused",
        default_headers={"X-API-Key": "FormdevINF26-secret-key", "Authorization": ""},
    )
    reply = client.chat.completions.create(model="mock-gpt", messages=[{"role": "user", "content": "bonjour"}])  # type: ignore[arg-type]
    assert reply.choices[0].message.content
    with pg_gateway.admin() as admin:
        tenants = {t["name"] for t in admin.get("/admin/tenants").json()["data"]}
        keys = admin.get("/admin/keys").json()["data"]
    assert {"erp", "extranet"} <= tenants
    assert "FormdevINF26-secret-key" not in str(keys)
