"""``serve --workers 2`` with Redis: two processes on one port, limits exact across them (priced and free
models), a clean drain on SIGTERM, and a refusal to start without Redis."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import REDIS_URL, Gateway, Process, _spawn, gateway_env, mock_config


@pytest.fixture(scope="module")
def workers(mock: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("workers")
    config = tmp / "config.yaml"
    config.write_text(mock_config(mock.port))
    database = f"sqlite+aiosqlite:///{tmp / 'workers.db'}"
    env = gateway_env(database, tmp, TENANTGATE_REDIS_URL=REDIS_URL)
    args = [sys.executable, "-m", "tenantgate.cli.main", "serve", "--workers", "2", "--config", str(config)]
    process = _spawn(args, env, "gateway-workers", "/health")
    yield Gateway(process, database, env)
    assert process.stop() == 0  # SIGTERM: both workers drain and the supervisor exits cleanly


def seen_workers(gateway: Gateway) -> set[int]:
    seen: set[int] = set()
    for _ in range(200):  # a new connection each time: the kernel spreads them over the workers
        with httpx.Client(base_url=gateway.url) as client:
            seen.add(client.get("/health").json()["worker"])
        if seen == {1, 2}:
            break
    return seen


async def burst(gateway: Gateway, key: str, model: str, count: int) -> list[int]:
    body = {"model": model, "messages": [{"role": "user", "content": "workers"}]}

    async def one() -> int:
        async with httpx.AsyncClient(base_url=gateway.v1, headers={"authorization": f"Bearer {key}"}) as client:
            return (await client.post("/chat/completions", json=body, timeout=30)).status_code

    return list(await asyncio.gather(*(one() for _ in range(count))))


@pytest.mark.parametrize("model", ["mock-gpt", "mock-small"])  # priced, and free (no budget arithmetic)
async def test_rpm_is_exact_across_workers(workers: Gateway, model: str) -> None:
    assert seen_workers(workers) == {1, 2}
    key = workers.new_key(f"workers-{model}", rpm=10)
    codes = await burst(workers, key, model, 30)
    assert codes.count(200) == 10 and codes.count(429) == 20, codes


def test_workers_need_redis(tmp_path: Path) -> None:
    env = gateway_env(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}", tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "tenantgate.cli.main", "serve", "--workers", "2", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "needs TENANTGATE_REDIS_URL" in result.stderr
