"""Who may use the admin API, the services it works with, and the audit trail of what admins did."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from pydantic import SecretStr

from tenantgate.backends.netpolicy import NetworkPolicy
from tenantgate.config.file import Defaults
from tenantgate.core.errors import AuthenticationFailed, Forbidden, ServiceUnavailable
from tenantgate.core.secrets import CredentialCipher, same_secret
from tenantgate.storage.audit import AuditRepo
from tenantgate.storage.repos import BackendRepo, KeyRepo, TenantRepo
from tenantgate.storage.rows import LimitFields
from tenantgate.storage.usage import UsageRepo


@dataclass(slots=True)
class AdminServices:
    admin_key: SecretStr | None
    tenants: TenantRepo
    keys: KeyRepo
    backends: BackendRepo
    usage: UsageRepo
    cipher: CredentialCipher
    reload: Callable[[], Awaitable[None]]
    list_backends: Callable[[], Awaitable[list[Any]]]
    flush_usage: Callable[[], Awaitable[None]]
    defaults: Defaults
    limits_usage: Callable[[str, LimitFields], Awaitable[dict[str, Any] | None]]
    backend_health: Callable[[str], Any]
    network_policy: NetworkPolicy


def services(request: Request) -> AdminServices:
    admin: AdminServices = request.app.state.admin
    return admin


async def require_admin(request: Request) -> AdminServices:
    """The admin key, or a platform admin (``is_admin``) by session (with CSRF on writes) or personal key."""
    admin = services(request)
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip() if scheme.lower() == "bearer" else request.headers.get("x-api-key", "")
    if admin.admin_key is not None and token and same_secret(token, admin.admin_key.get_secret_value()):
        return admin
    if getattr(request.app.state, "people", None) is not None:
        from tenantgate.people.access import find_caller  # people builds on the admin API's schemas

        caller = await find_caller(request)
        if caller is not None:
            if not caller.user.is_admin:
                raise Forbidden("Only platform admins may use the admin API.", code="admin_required")
            request.state.actor = f"user:{caller.user.email}"
            return admin
    if admin.admin_key is None:
        raise ServiceUnavailable(
            "The admin API is disabled: set TENANTGATE_ADMIN_KEY or log in as a platform admin.",
            code="admin_disabled",
        )
    raise AuthenticationFailed("Invalid admin key.", code="invalid_admin_key")


Admin = Annotated[AdminServices, Depends(require_admin)]


def audit_repo(request: Request) -> AuditRepo:
    repo: AuditRepo = request.app.state.audit
    return repo


def admin_actor(request: Request) -> str:
    """``admin-key:<first 8 hex digits of sha256(key)>`` for the admin key the request presented.

    The digest prefix tells entries made with an old and a rotated admin key apart without storing either key;
    8 hex digits identify, they do not help anyone guess a 16+ character key. A platform admin acting by session
    or personal key is ``user:<email>``.
    """
    actor = getattr(request.state, "actor", None)
    if isinstance(actor, str):
        return actor
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip() if scheme.lower() == "bearer" else request.headers.get("x-api-key", "")
    if not token:
        return "admin"
    return f"admin-key:{hashlib.sha256(token.encode()).hexdigest()[:8]}"


async def record_admin_action(
    request: Request,
    action: str,
    target_type: str,
    target_id: str | None,
    changes: Mapping[str, Any] | None = None,
) -> None:
    """Append one entry for an admin action that has just succeeded (secrets are masked by the repository)."""
    await audit_repo(request).record(admin_actor(request), action, target_type, target_id, changes)
