"""SIGTERM: not ready at once, no new requests, live streams finish (or end with an error event past the
grace period), usage flushed, exit code 0."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from pathlib import Path

import httpx

from tests.support import Process, mock_config, start_gateway

BODY = {"model": "mock-gpt", "stream": True, "messages": [{"role": "user", "content": "drain"}]}


async def read_stream(
    client: httpx.AsyncClient, body: dict[str, object], started: asyncio.Event, counter: list[int]
) -> list[str]:
    lines: list[str] = []
    async with client.stream("POST", "/chat/completions", json=body) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line:
                lines.append(line)
                if len(lines) == 2:
                    counter.append(1)
                    if len(counter) == 20:
                        started.set()
    return lines


def records_in(database: Path) -> list[tuple[int, int]]:
    with sqlite3.connect(database) as db:
        return list(db.execute("SELECT status, completion_tokens FROM usage_records"))


async def run_streams_and_terminate(
    mock: Process,
    tmp: Path,
    body: dict[str, object],
    grace: str,
) -> tuple[list[list[str]], int, Path, float]:
    database = tmp / "drain.db"
    gateway = start_gateway(
        f"sqlite+aiosqlite:///{database}",
        tmp,
        mock_config(mock.port),
        TENANTGATE_DRAIN_GRACE_SECONDS=grace,
        TENANTGATE_USAGE_FLUSH_INTERVAL="30",
    )
    key = gateway.new_key("drain-co")
    started, counter = asyncio.Event(), []
    async with httpx.AsyncClient(
        base_url=gateway.v1,
        timeout=60,
        limits=httpx.Limits(max_connections=30),
        headers={"Authorization": f"Bearer {key}"},
    ) as client:
        tasks = [asyncio.create_task(read_stream(client, body, started, counter)) for _ in range(20)]
        await asyncio.wait_for(started.wait(), 20)
        gateway.process.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        await asyncio.sleep(0.3)
        try:
            refused = await client.post("/chat/completions", json={**body, "stream": False})
            assert refused.status_code == 503  # still listening during the drain: refused as draining
        except httpx.TransportError:
            pass  # or no longer listening at all: either way no new request is served
        streams = await asyncio.gather(*tasks)
    exit_code = await asyncio.to_thread(gateway.process.proc.wait, 30)
    return streams, exit_code, database, time.monotonic() - signalled


async def test_sigterm_lets_20_live_streams_finish(mock: Process, tmp_path: Path) -> None:
    body = {**BODY, "mock": {"chunks": 20, "chunk_delay": 0.1}}
    streams, exit_code, database, _ = await run_streams_and_terminate(mock, tmp_path, body, "20")
    assert exit_code == 0
    assert all(lines[-1] == "data: [DONE]" for lines in streams), "a stream was cut by the drain"
    records = records_in(database)
    assert len(records) == 20 and all(status == 200 for status, _ in records), "usage lost in the drain"


async def test_streams_past_the_grace_period_end_with_an_error_event(mock: Process, tmp_path: Path) -> None:
    body = {**BODY, "mock": {"chunks": 200, "chunk_delay": 0.1}}
    streams, exit_code, database, took = await run_streams_and_terminate(mock, tmp_path, body, "1")
    assert exit_code == 0 and took < 10
    for lines in streams:
        assert "data: [DONE]" not in lines
        assert '"code": "draining"' in lines[-1]
    records = records_in(database)
    assert len(records) == 20 and all(tokens > 0 for _, tokens in records), "delivered parts must be billed"


def test_readiness_turns_503_when_draining(mock: Process, tmp_path: Path) -> None:
    gateway = start_gateway(
        f"sqlite+aiosqlite:///{tmp_path / 'r.db'}", tmp_path, mock_config(mock.port), TENANTGATE_DRAIN_DELAY_SECONDS="2"
    )
    try:
        assert httpx.get(f"{gateway.url}/health/ready").status_code == 200
        assert httpx.get(f"{gateway.url}/health/live").status_code == 200
        gateway.process.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        ready = httpx.get(f"{gateway.url}/health/ready")
        assert ready.status_code == 503 and "draining" in ready.json()["reasons"]
        assert gateway.process.proc.wait(15) == 0
    finally:
        gateway.process.stop()
