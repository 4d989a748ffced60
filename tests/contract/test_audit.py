"""The audit log behaves the same over SQLite and PostgreSQL: record, filters, paging, masking, newest first."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import httpx
import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine

from tenantgate.admin.audit import router
from tenantgate.admin.auth import admin_actor, record_admin_action
from tenantgate.core.errors import GatewayError
from tenantgate.storage import schema
from tenantgate.storage.audit import MASK, AuditRepo, is_secret_field
from tests.support import ADMIN_KEY


def target() -> str:
    """A target id no other test uses (the module shares one database per dialect)."""
    return f"ten_{secrets.token_hex(6)}"


async def test_record_and_read_back(engine: AsyncEngine) -> None:
    repo, tenant = AuditRepo(engine), target()
    before = datetime.now(UTC)
    when = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    await repo.record("admin", "tenant.create", "tenant", tenant, {"name": "acme", "rpm": 10, "expires_at": when})
    [entry] = await repo.list(target_id=tenant)
    assert entry["actor"] == "admin" and entry["action"] == "tenant.create"
    assert entry["target_type"] == "tenant" and entry["target_id"] == tenant
    assert entry["changes"] == {"name": "acme", "rpm": 10, "expires_at": "2030-01-02T03:04:05+00:00"}
    created = datetime.fromisoformat(entry["created_at"])
    assert created.tzinfo is not None and before - timedelta(seconds=1) <= created <= datetime.now(UTC)
    assert isinstance(entry["id"], int)


async def test_no_changes_is_null(engine: AsyncEngine) -> None:
    repo, key = AuditRepo(engine), target()
    await repo.record("admin", "key.revoke", "key", key, None)
    [entry] = await repo.list(target_type="key", target_id=key)
    assert entry["changes"] is None


async def test_secrets_are_masked_in_the_stored_row(engine: AsyncEngine) -> None:
    repo, backend = AuditRepo(engine), target()
    changes = {
        "api_key": "sk-x",
        "base_url": "http://h/v1",
        "key_id": "key_123",
        "options": {"token": "tok-y", "weight": 2, "headers": [{"password": "pw-z"}]},
        "credential": SecretStr("cred-w"),
        "note": SecretStr("also-secret"),
    }
    await repo.record("admin", "backend.update", "backend", backend, changes)
    [entry] = await repo.list(target_id=backend)
    assert entry["changes"] == {
        "api_key": MASK,
        "base_url": "http://h/v1",
        "key_id": "key_123",
        "options": {"token": MASK, "weight": 2, "headers": [{"password": MASK}]},
        "credential": MASK,
        "note": MASK,
    }
    table = schema.audit_log
    async with engine.connect() as conn:
        raw = await conn.scalar(sa.select(sa.cast(table.c.changes, sa.Text)).where(table.c.target_id == backend))
    assert raw is not None
    for secret in ("sk-x", "tok-y", "pw-z", "cred-w", "also-secret"):
        assert secret not in raw


def test_secret_field_names() -> None:
    for name in ("api_key", "key", "secret", "password", "token", "admin_key", "api_key_encrypted", "accessToken"):
        assert is_secret_field(name), name
    for name in ("key_id", "max_tokens", "models", "name", "public_id", "keys", "tpm"):
        assert not is_secret_field(name), name


async def test_filters(engine: AsyncEngine) -> None:
    repo, tenant, key = AuditRepo(engine), target(), target()
    await repo.record("admin-key:aaaaaaaa", "tenant.create", "tenant", tenant, {"name": "a"})
    await repo.record("admin-key:bbbbbbbb", "tenant.update", "tenant", tenant, {"rpm": 5})
    await repo.record("admin-key:aaaaaaaa", "key.create", "key", key, {"tenant_id": tenant})
    assert [e["action"] for e in await repo.list(target_type="tenant", target_id=tenant)] == [
        "tenant.update",
        "tenant.create",
    ]
    assert [e["target_id"] for e in await repo.list(action="key.create", target_id=key)] == [key]
    mine = await repo.list(actor="admin-key:bbbbbbbb", target_id=tenant)
    assert [e["action"] for e in mine] == ["tenant.update"]
    assert await repo.list(target_type="key", target_id=tenant) == []


async def test_time_range(engine: AsyncEngine) -> None:
    repo, tenant = AuditRepo(engine), target()
    await repo.record("admin", "tenant.create", "tenant", tenant, None)
    now = datetime.now(UTC)
    assert len(await repo.list(target_id=tenant, since=now - timedelta(minutes=1))) == 1
    assert await repo.list(target_id=tenant, since=now + timedelta(minutes=1)) == []
    assert await repo.list(target_id=tenant, until=now - timedelta(minutes=1)) == []
    assert len(await repo.list(target_id=tenant, until=now + timedelta(minutes=1))) == 1
    # The same instant with another offset selects the same rows.
    plus_two = (now - timedelta(minutes=1)).astimezone(timezone(timedelta(hours=2)))
    assert len(await repo.list(target_id=tenant, since=plus_two)) == 1


async def test_newest_first_and_paging(engine: AsyncEngine) -> None:
    repo, tenant = AuditRepo(engine), target()
    for i in range(7):
        await repo.record("admin", "tenant.update", "tenant", tenant, {"rpm": i})
    everything = await repo.list(target_id=tenant)
    assert [e["changes"]["rpm"] for e in everything] == [6, 5, 4, 3, 2, 1, 0]
    ids = [e["id"] for e in everything]
    assert ids == sorted(ids, reverse=True)
    pages: list[list[int]] = []
    before_id: int | None = None
    while True:
        page = await repo.list(target_id=tenant, limit=3, before_id=before_id)
        if not page:
            break
        pages.append([e["changes"]["rpm"] for e in page])
        before_id = page[-1]["id"]
    assert pages == [[6, 5, 4], [3, 2, 1], [0]]


def _app(engine: AsyncEngine) -> FastAPI:
    """The audit router alone, with the two pieces of app state it reads and an OpenAI-shaped error handler."""
    app = FastAPI()
    app.include_router(router)
    app.state.admin = SimpleNamespace(admin_key=SecretStr(ADMIN_KEY))
    app.state.audit = AuditRepo(engine)

    async def gateway_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, GatewayError)
        return JSONResponse(exc.body(), status_code=exc.status)

    app.add_exception_handler(GatewayError, gateway_error)

    @app.post("/admin/_test/{tenant_id}")
    async def action(request: Request, tenant_id: str) -> dict[str, str]:
        await record_admin_action(request, "tenant.update", "tenant", tenant_id, {"rpm": 1, "secret": "s3"})
        return {"actor": admin_actor(request)}

    return app


async def test_router_auth_filters_and_paging(engine: AsyncEngine) -> None:
    tenant = target()
    transport = httpx.ASGITransport(app=_app(engine))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/admin/audit")).status_code == 401
        assert (await client.get("/admin/audit", headers={"Authorization": "Bearer wrong-key"})).status_code == 401
        auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
        for _ in range(3):
            actor = (await client.post(f"/admin/_test/{tenant}", headers=auth)).json()["actor"]
        assert actor.startswith("admin-key:") and len(actor) == len("admin-key:") + 8 and ADMIN_KEY not in actor
        first = (await client.get("/admin/audit", params={"target_id": tenant, "limit": 2}, headers=auth)).json()
        assert first["object"] == "list" and len(first["data"]) == 2
        assert first["data"][0]["actor"] == actor and first["data"][0]["changes"] == {"rpm": 1, "secret": MASK}
        params: dict[str, Any] = {"target_id": tenant, "limit": 2, "before_id": first["next_before_id"]}
        second = (await client.get("/admin/audit", params=params, headers={"X-API-Key": ADMIN_KEY})).json()
        assert len(second["data"]) == 1 and second["next_before_id"] is None
        assert second["data"][0]["id"] < first["data"][-1]["id"]
        for bad in (0, 1001):
            response = await client.get("/admin/audit", params={"limit": bad}, headers=auth)
            assert response.status_code == 422
