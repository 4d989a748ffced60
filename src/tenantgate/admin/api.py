"""The admin API under ``/admin``: tenants, keys, backends and usage, behind ``TENANTGATE_ADMIN_KEY``.

Writes go to storage (which bumps the config version) and then reload this replica's snapshot at once; other
replicas follow within the sync interval.
"""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import APIRouter, Request

from tenantgate.admin.auth import Admin, AdminServices, record_admin_action, require_admin, services
from tenantgate.admin.schemas import (
    BackendCreate,
    BackendUpdate,
    KeyCreate,
    KeyUpdate,
    TenantCreate,
    TenantUpdate,
    backend_out,
    key_out,
    path_id,
    query_text,
    tenant_out,
    to_models,
)
from tenantgate.auth.keys import generate_key
from tenantgate.backends.netpolicy import BackendURLRefused, check_backend_url
from tenantgate.core.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
)
from tenantgate.storage.repos import DuplicateName
from tenantgate.storage.rows import BackendRow, KeyRow, TenantRow

__all__ = ["Admin", "AdminServices", "require_admin", "router", "services"]

router = APIRouter(prefix="/admin", tags=["admin"])


def _changes(model: Any) -> dict[str, Any]:
    changes: dict[str, Any] = model.model_dump(exclude_unset=True)
    return changes


T = TypeVar("T")


def _found(row: T | None, what: str, row_id: str) -> T:
    """The row, or a 404 naming what was not found (also when it vanished between two statements)."""
    if row is None:
        raise NotFound(f"No {what} with id '{row_id}'.", code=f"{what}_not_found")
    return row


@router.post("/tenants", status_code=201, summary="Create a tenant")
async def create_tenant(body: TenantCreate, admin: Admin, request: Request) -> dict[str, Any]:
    try:
        row = await admin.tenants.create(body.name, body.limit_fields(admin.defaults.tenant_limits))
    except DuplicateName as exc:
        raise Conflict(str(exc), param="name") from None
    await record_admin_action(request, "tenant.create", "tenant", row.id, body.model_dump())
    return tenant_out(row)


@router.get("/tenants", summary="List tenants")
async def list_tenants(admin: Admin) -> dict[str, Any]:
    return {"object": "list", "data": [tenant_out(row) for row in await admin.tenants.list()]}


async def _tenant(admin: AdminServices, tenant_id: str) -> TenantRow:
    path_id(tenant_id, "tenant_id")
    return _found(await admin.tenants.get(tenant_id), "tenant", tenant_id)


@router.get("/tenants/{tenant_id}", summary="Get a tenant")
async def get_tenant(tenant_id: str, admin: Admin) -> dict[str, Any]:
    """The tenant, with its current usage against each limit (``usage``; null when it has no limit)."""
    row = await _tenant(admin, tenant_id)
    return {**tenant_out(row), "usage": await admin.limits_usage(f"tenant:{row.id}", row.limits)}


@router.patch("/tenants/{tenant_id}", summary="Update a tenant's name or limits")
async def update_tenant(tenant_id: str, body: TenantUpdate, admin: Admin, request: Request) -> dict[str, Any]:
    await _tenant(admin, tenant_id)
    try:
        row = await admin.tenants.update(tenant_id, _changes(body))
    except DuplicateName as exc:
        raise Conflict(str(exc), param="name") from None
    await admin.reload()
    await record_admin_action(request, "tenant.update", "tenant", tenant_id, _changes(body))
    return tenant_out(_found(row, "tenant", tenant_id))


@router.delete("/tenants/{tenant_id}", summary="Delete a tenant and its keys")
async def delete_tenant(tenant_id: str, admin: Admin, request: Request) -> dict[str, Any]:
    await _tenant(admin, tenant_id)
    await admin.tenants.delete(tenant_id)
    await admin.reload()
    await record_admin_action(request, "tenant.delete", "tenant", tenant_id, None)
    return {"id": tenant_id, "deleted": True}


@router.post("/keys", status_code=201, summary="Create an API key (the key is shown only in this response)")
async def create_key(body: KeyCreate, admin: Admin, request: Request) -> dict[str, Any]:
    if await admin.tenants.get(body.tenant_id) is None:
        raise InvalidRequest(f"No tenant with id '{body.tenant_id}'.", param="tenant_id", code="tenant_not_found")
    new = generate_key()
    row = await admin.keys.create(
        tenant_id=body.tenant_id,
        public_id=new.public_id,
        secret_hash=new.secret_hash,
        name=body.name,
        models=body.models,
        expires_at=body.expires_at,
        limits=body.limit_fields(admin.defaults.key_limits),
    )
    await record_admin_action(request, "key.create", "key", row.id, body.model_dump(mode="json"))
    return {**key_out(row), "key": new.plaintext}


@router.get("/keys", summary="List API keys (never their secrets)")
async def list_keys(admin: Admin, tenant_id: str | None = None) -> dict[str, Any]:
    query_text(tenant_id, "tenant_id")
    return {"object": "list", "data": [key_out(row) for row in await admin.keys.list(tenant_id)]}


async def _key(admin: AdminServices, key_id: str) -> KeyRow:
    path_id(key_id, "key_id")
    return _found(await admin.keys.get(key_id), "key", key_id)


@router.get("/keys/{key_id}", summary="Get an API key")
async def get_key(key_id: str, admin: Admin) -> dict[str, Any]:
    """The key (never its secret), with its current usage against each limit (``usage``)."""
    row = await _key(admin, key_id)
    return {**key_out(row), "usage": await admin.limits_usage(f"key:{row.id}", row.limits)}


@router.patch("/keys/{key_id}", summary="Update a key's name, models, expiry or limits")
async def update_key(key_id: str, body: KeyUpdate, admin: Admin, request: Request) -> dict[str, Any]:
    await _key(admin, key_id)
    row = await admin.keys.update(key_id, _changes(body))
    await admin.reload()
    await record_admin_action(request, "key.update", "key", key_id, body.model_dump(mode="json", exclude_unset=True))
    return key_out(_found(row, "key", key_id))


@router.delete("/keys/{key_id}", summary="Revoke an API key")
async def revoke_key(key_id: str, admin: Admin, request: Request) -> dict[str, Any]:
    await _key(admin, key_id)
    row = await admin.keys.revoke(key_id)
    await admin.reload()
    await record_admin_action(request, "key.revoke", "key", key_id, None)
    return key_out(_found(row, "key", key_id))


async def _check_url(admin: AdminServices, url: str) -> None:
    """The SSRF policy: scheme, host and every resolved address must be allowed (checked again at connect)."""
    try:
        await check_backend_url(admin.network_policy, url)
    except BackendURLRefused as exc:
        raise InvalidRequest(str(exc), param="base_url", code="backend_url_refused") from None


@router.post("/backends", status_code=201, summary="Register a model server")
async def create_backend(body: BackendCreate, admin: Admin, request: Request) -> dict[str, Any]:
    await _check_url(admin, body.base_url)
    encrypted = admin.cipher.encrypt(body.api_key) if body.api_key else None
    try:
        row = await admin.backends.create(
            name=body.name,
            base_url=body.base_url,
            api_key_encrypted=encrypted,
            models=to_models(body.models),
            options=body.options(),
        )
    except DuplicateName as exc:
        raise Conflict(str(exc), param="name") from None
    await admin.reload()
    await record_admin_action(request, "backend.create", "backend", row.id, body.model_dump(mode="json"))
    return backend_out(row, admin.backend_health(row.id))


@router.get("/backends", summary="List backends (config-file ones are read-only)")
async def list_backends(admin: Admin) -> dict[str, Any]:
    rows = await admin.list_backends()
    return {"object": "list", "data": [backend_out(row, admin.backend_health(row.id)) for row in rows]}


async def _backend(admin: AdminServices, backend_id: str) -> BackendRow:
    """A stored backend; config-file backends are read-only and not found here."""
    path_id(backend_id, "backend_id")
    return _found(await admin.backends.get(backend_id), "backend", backend_id)


@router.get("/backends/{backend_id}", summary="Get a backend")
async def get_backend(backend_id: str, admin: Admin) -> dict[str, Any]:
    row = await _backend(admin, backend_id)
    return backend_out(row, admin.backend_health(row.id))


@router.patch("/backends/{backend_id}", summary="Update a backend")
async def update_backend(backend_id: str, body: BackendUpdate, admin: Admin, request: Request) -> dict[str, Any]:
    await _backend(admin, backend_id)
    if body.base_url is not None:
        await _check_url(admin, body.base_url)
    changes = _changes(body)
    if "models" in changes:
        changes["models"] = to_models(body.models or [])
    routing = {name: changes.pop(name) for name in ("weight", "priority", "timeouts") if name in changes}
    if routing:
        current = await _backend(admin, backend_id)
        changes["options"] = {**current.options, **routing}
    if "api_key" in changes:
        secret = changes.pop("api_key")
        changes["api_key_encrypted"] = admin.cipher.encrypt(secret) if secret else None
    row = await admin.backends.update(backend_id, changes)
    await admin.reload()
    await record_admin_action(
        request, "backend.update", "backend", backend_id, body.model_dump(mode="json", exclude_unset=True)
    )
    found = _found(row, "backend", backend_id)
    return backend_out(found, admin.backend_health(found.id))


@router.delete("/backends/{backend_id}", summary="Remove a backend")
async def delete_backend(backend_id: str, admin: Admin, request: Request) -> dict[str, Any]:
    await _backend(admin, backend_id)
    await admin.backends.delete(backend_id)
    await admin.reload()
    await record_admin_action(request, "backend.delete", "backend", backend_id, None)
    return {"id": backend_id, "deleted": True}
