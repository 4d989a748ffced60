"""Issue 9, class 8 (idempotency part): an unreachable idempotency store gives 503, never a 500.

The attack is any client adding an ``Idempotency-Key`` header while the store behind it (Redis with several
replicas, the database otherwise) is down or failing: the store's driver error used to escape as HTTP 500.
The documented fail mode is 503 ``idempotency_unavailable`` (OpenAI-shaped, with ``retry-after``), before any
upstream call, and the gateway must keep serving requests that do not ask for idempotency. Every use of the
store is covered: claim (HTTP), follow, store, abandon, renew and the stream writer (store level).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tenantgate.edge.idempotent import Claimed, Idempotency
from tenantgate.idempotency import (
    DatabaseIdempotencyStore,
    GuardedIdempotencyStore,
    IdempotencyUnavailable,
    IdemScope,
    RedisIdempotencyStore,
    StoredResponse,
    fingerprint,
    new_owner,
)
from tenantgate.storage.database import create_engine
from tests.redis_server import RedisServer
from tests.support import Gateway, Process, closed_port, mock_config, start_gateway

BODY = {"model": "mock-gpt", "messages": [{"role": "user", "content": "once"}]}
SCOPE = IdemScope("ten_x", "key_x", "chat/completions", "order-1")


def post(gateway: Gateway, key: str, idem: str | None, **extra: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    if idem is not None:
        headers["Idempotency-Key"] = idem
    return httpx.post(f"{gateway.v1}/chat/completions", json={**BODY, **extra}, headers=headers, timeout=30)


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "idempotency_unavailable" and error["type"] == "api_error"
    assert error["param"] == "Idempotency-Key" and "Traceback" not in response.text
    assert int(response.headers["retry-after"]) >= 1


@pytest.mark.redis
def test_redis_down_mid_run_gives_503_not_500(redis_server: RedisServer, mock: Process, tmp_path: Path) -> None:
    gateway = start_gateway(
        f"sqlite+aiosqlite:///{tmp_path / 'tg.db'}",
        tmp_path,
        mock_config(mock.port),
        TENANTGATE_REDIS_URL=redis_server.url,
    )
    try:
        key = gateway.new_key("idem-outage")  # no limits: this key never needs the Redis limiter
        assert post(gateway, key, "before").status_code == 200
        redis_server.stop()
        for idem in ("before", "during-1", "during-2"):  # a replay and fresh keys alike
            assert_unavailable(post(gateway, key, idem))
            assert_unavailable(post(gateway, key, f"{idem}-stream", stream=True))
        assert post(gateway, key, None).status_code == 200, "requests without the header must still be served"
        redis_server.start()
        deadline = time.monotonic() + 15
        while post(gateway, key, "after").status_code != 200:
            assert time.monotonic() < deadline, "no recovery after Redis came back"
            time.sleep(0.2)
        assert "Traceback" not in gateway.process.log_text()
    finally:
        gateway.process.stop()


def test_database_error_gives_503_not_500(mock: Process, tmp_path: Path) -> None:
    """The one-process default keeps records in the database; a failing database must answer 503 as well."""
    db = tmp_path / "tg.db"
    gateway = start_gateway(f"sqlite+aiosqlite:///{db}", tmp_path, mock_config(mock.port))
    try:
        key = gateway.new_key("idem-db-broken")
        assert post(gateway, key, "first").status_code == 200
        with sqlite3.connect(db) as conn:  # every idempotency statement now fails inside the database
            conn.execute("DROP TABLE idempotency_events")
            conn.execute("DROP TABLE idempotency_records")
        assert_unavailable(post(gateway, key, "first"))
        assert_unavailable(post(gateway, key, "second", stream=True))
        assert post(gateway, key, None).status_code == 200
    finally:
        gateway.process.stop()


async def test_unreachable_database_store_is_unavailable_at_every_call() -> None:
    engine = create_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{closed_port()}/test")
    store = GuardedIdempotencyStore(DatabaseIdempotencyStore(engine))
    try:
        await _every_call_is_unavailable(store)
    finally:
        await engine.dispose()


@pytest.mark.redis
async def test_stopped_redis_store_is_unavailable_at_every_call(redis_server: RedisServer) -> None:
    inner = RedisIdempotencyStore(redis_server.url, socket_timeout=1.0)
    store = GuardedIdempotencyStore(inner)
    try:
        owner = new_owner()
        claim = await store.begin(SCOPE, fingerprint(BODY), stream=True, lease_seconds=30, owner=owner)
        assert claim.kind == "new"
        await store.append_event(SCOPE, owner, b"data: 1\n\n")
        redis_server.stop()
        await _every_call_is_unavailable(store)
        # The request path on top of it: the follower ends with the error in-band, cleanup never raises.
        idem = Idempotency(inner, ttl_s=60, lease_s=30)
        events = [event async for event in idem.follow(SCOPE, 0, owner)]
        assert len(events) == 1 and b'"code":"idempotency_unavailable"' in events[0]
        claimed = Claimed(idem.store, SCOPE, owner, 60, 30)
        await claimed.store_response(200, {"content-type": "application/json"}, b"{}")
        await claimed.abandon()
        done: list[bool] = []

        async def chunks() -> AsyncIterator[bytes]:
            yield b"data: 2\n\n"

        async def on_done() -> None:
            done.append(True)

        await claimed.generate(chunks(), on_done)  # the stream writer stops cleanly and still releases
        assert done == [True]
    finally:
        await store.close()


async def _every_call_is_unavailable(store: GuardedIdempotencyStore) -> None:
    owner = new_owner()
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "begin": lambda: store.begin(SCOPE, fingerprint(BODY), stream=False, lease_seconds=30, owner=owner),
        "append_event": lambda: store.append_event(SCOPE, owner, b"data: x\n\n"),
        "read_events": lambda: store.read_events(SCOPE, 0, owner=owner),
        "wait_events": lambda: store.wait_events(SCOPE, 0, 0.1, owner=owner),
        "finish": lambda: store.finish(SCOPE, owner, StoredResponse(200, {}, b"{}"), 60),
        "abandon": lambda: store.abandon(SCOPE, owner),
        "renew": lambda: store.renew(SCOPE, owner, 30),
        "purge_expired": lambda: store.purge_expired(),
    }
    for name, call in calls.items():
        if name == "purge_expired" and isinstance(store.inner, RedisIdempotencyStore):
            continue  # Redis expires keys itself: purging never talks to it
        with pytest.raises(IdempotencyUnavailable) as info:
            await asyncio.wait_for(call(), timeout=20)
        assert info.value.status == 503 and info.value.code == "idempotency_unavailable", name
