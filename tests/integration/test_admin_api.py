"""The admin API: auth, tenants, keys, runtime backend registration, secrets never returned or stored plain."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import openai

from tests.support import Gateway, Process


def test_admin_requires_the_admin_key(gateway: Gateway, api_key: str) -> None:
    assert httpx.get(f"{gateway.url}/admin/tenants").status_code == 401
    bad = httpx.get(f"{gateway.url}/admin/tenants", headers={"Authorization": "Bearer wrong-admin-key-123456"})
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_admin_key"
    as_client = httpx.get(f"{gateway.url}/admin/tenants", headers={"Authorization": f"Bearer {api_key}"})
    assert as_client.status_code == 401


def test_tenant_crud(gateway: Gateway) -> None:
    with gateway.admin() as admin:
        created = admin.post("/admin/tenants", json={"name": "crud-tenant"})
        assert created.status_code == 201
        tenant = created.json()
        assert tenant["id"].startswith("ten_") and tenant["name"] == "crud-tenant"
        assert admin.post("/admin/tenants", json={"name": "crud-tenant"}).status_code == 409
        assert admin.post("/admin/tenants", json={}).status_code == 400
        assert admin.get(f"/admin/tenants/{tenant['id']}").json()["name"] == "crud-tenant"
        renamed = admin.patch(f"/admin/tenants/{tenant['id']}", json={"name": "crud-renamed"}).json()
        assert renamed["name"] == "crud-renamed"
        assert any(t["id"] == tenant["id"] for t in admin.get("/admin/tenants").json()["data"])
        key = admin.post("/admin/keys", json={"tenant_id": tenant["id"]}).json()
        assert admin.delete(f"/admin/tenants/{tenant['id']}").json()["deleted"] is True
        assert admin.get(f"/admin/tenants/{tenant['id']}").status_code == 404
        assert admin.get(f"/admin/keys/{key['id']}").status_code == 404
    response = httpx.post(
        f"{gateway.v1}/chat/completions",
        headers={"Authorization": f"Bearer {key['key']}"},
        json={"model": "mock-gpt", "messages": [{"role": "user", "content": "x"}]},
    )
    assert response.status_code == 401


def test_keys_are_shown_once_and_listed_without_secret(gateway: Gateway) -> None:
    tenant = gateway.create_tenant("keys-tenant")
    created = gateway.create_key(tenant["id"], name="ci", models=["mock-gpt"])
    assert created["key"].startswith(f"tg-{created['prefix'].split('-')[1]}-")
    with gateway.admin() as admin:
        listed = admin.get("/admin/keys", params={"tenant_id": tenant["id"]}).json()["data"]
        fetched = admin.get(f"/admin/keys/{created['id']}").json()
        bad_tenant = admin.post("/admin/keys", json={"tenant_id": "ten_missing"})
        naive_expiry = admin.post("/admin/keys", json={"tenant_id": tenant["id"], "expires_at": "2030-01-01T00:00:00"})
    assert [k["id"] for k in listed] == [created["id"]]
    secret = created["key"].split("-", 2)[2]
    assert secret not in str(listed) and secret not in str(fetched)
    assert "key" not in fetched and fetched["models"] == ["mock-gpt"] and fetched["name"] == "ci"
    assert bad_tenant.status_code == 400 and bad_tenant.json()["error"]["param"] == "tenant_id"
    assert naive_expiry.status_code == 400


def test_register_backend_at_runtime_and_round_robin(gateway: Gateway, mock: Process, api_key: str) -> None:
    second = {
        "name": "mock-b",
        "base_url": f"http://127.0.0.1:{mock.port}/v1",
        "api_key": "upstream-secret-abc123",
        "models": [
            "runtime-model-src",
            {"name": "rr-model", "upstream_model": "mock-small", "input_price_per_mtok": 1, "output_price_per_mtok": 1},
        ],
    }
    third = {**second, "name": "mock-c", "models": [{"name": "rr-model", "upstream_model": "mock-small"}]}
    client = openai.OpenAI(base_url=gateway.v1, api_key=api_key)
    with gateway.admin() as admin:
        created = admin.post("/admin/backends", json=second)
        assert created.status_code == 201, created.text
        assert admin.post("/admin/backends", json=third).status_code == 201
        assert admin.post("/admin/backends", json={**second, "base_url": "ftp://x"}).status_code == 400
        listed = admin.get("/admin/backends").json()["data"]
        names = {b["name"]: b for b in listed}
        assert names["mock-b"]["has_api_key"] is True and names["mock-a"]["source"] == "config"
        assert "upstream-secret-abc123" not in str(listed)
        tenant = gateway.create_tenant("rr-tenant")
        key = gateway.create_key(tenant["id"])
        for _ in range(6):
            client.chat.completions.create(model="rr-model", messages=[{"role": "user", "content": "x"}])  # type: ignore[arg-type]
        rr_client = openai.OpenAI(base_url=gateway.v1, api_key=key["key"])
        for _ in range(4):
            rr_client.chat.completions.create(model="rr-model", messages=[{"role": "user", "content": "x"}])  # type: ignore[arg-type]
        backends = admin.get("/admin/usage", params={"key_id": key["id"], "group_by": "backend"}).json()["by_backend"]
        assert sorted((b["backend"], b["requests"]) for b in backends) == [("mock-b", 2), ("mock-c", 2)]
        disabled = admin.patch(f"/admin/backends/{created.json()['id']}", json={"enabled": False})
        assert disabled.json()["enabled"] is False
        for _ in range(3):
            rr_client.chat.completions.create(model="rr-model", messages=[{"role": "user", "content": "x"}])  # type: ignore[arg-type]
        backends = admin.get("/admin/usage", params={"key_id": key["id"], "group_by": "backend"}).json()["by_backend"]
        assert sorted((b["backend"], b["requests"]) for b in backends) == [("mock-b", 2), ("mock-c", 5)]
        for backend in listed:
            if backend["source"] == "api" and backend["name"] in ("mock-b", "mock-c"):
                assert admin.delete(f"/admin/backends/{backend['id']}").status_code == 200
    try:
        client.chat.completions.create(model="rr-model", messages=[{"role": "user", "content": "x"}])  # type: ignore[arg-type]
        raise AssertionError("a deleted backend's model must be gone")
    except openai.NotFoundError:
        pass


def test_secrets_are_not_stored_in_plain_text(gateway: Gateway, mock: Process) -> None:
    tenant = gateway.create_tenant("plaintext-tenant")
    created = gateway.create_key(tenant["id"])
    with gateway.admin() as admin:
        backend = admin.post(
            "/admin/backends",
            json={
                "name": "secret-check",
                "base_url": f"http://127.0.0.1:{mock.port}/v1",
                "api_key": "sk-upstream-very-secret-999",
                "models": ["secret-model"],
            },
        ).json()
    path = Path(gateway.database_url.split("///", 1)[1])
    raw = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    secret = created["key"].split("-", 2)[2]
    assert secret.encode() not in raw
    assert b"sk-upstream-very-secret-999" not in raw
    with sqlite3.connect(path) as db:
        stored_hash = db.execute("SELECT secret_hash FROM api_keys WHERE id = ?", (created["id"],)).fetchone()[0]
        encrypted = db.execute("SELECT api_key_encrypted FROM backends WHERE id = ?", (backend["id"],)).fetchone()[0]
    assert len(stored_hash) == 64 and encrypted and "very-secret" not in encrypted
    with gateway.admin() as admin:
        assert admin.delete(f"/admin/backends/{backend['id']}").status_code == 200


def test_usage_group_by_validation(gateway: Gateway) -> None:
    with gateway.admin() as admin:
        response = admin.get("/admin/usage", params={"group_by": "nonsense"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "group_by"


def test_openapi_docs(gateway: Gateway) -> None:
    spec = httpx.get(f"{gateway.url}/openapi.json").json()
    assert "/admin/tenants" in spec["paths"] and "/admin/backends" in spec["paths"]
    assert httpx.get(f"{gateway.url}/docs").status_code == 200
