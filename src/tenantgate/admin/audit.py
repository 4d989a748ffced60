"""``GET /admin/audit``: the audit log of admin actions, filtered and paged, behind the admin key.

Also the two helpers the admin handlers use to write it, so every handler names the actor the same way. The
repository comes from ``app.state.audit`` (built by the app factory), not from an import, like every other
service the admin API uses.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from tenantgate.admin.api import require_admin
from tenantgate.storage.audit import AuditRepo

router = APIRouter(prefix="/admin", tags=["admin"])


def audit_repo(request: Request) -> AuditRepo:
    repo: AuditRepo = request.app.state.audit
    return repo


def admin_actor(request: Request) -> str:
    """``admin-key:<first 8 hex digits of sha256(key)>`` for the admin key the request presented.

    The digest prefix tells entries made with an old and a rotated admin key apart without storing either key;
    8 hex digits identify, they do not help anyone guess a 16+ character key.
    """
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


@router.get(
    "/audit",
    summary="Audit log of admin actions, newest first",
    dependencies=[Depends(require_admin)],
)
async def list_audit(
    request: Request,
    action: str | None = Query(default=None, description="e.g. tenant.create, key.revoke, backend.update"),
    target_type: str | None = Query(default=None, description="e.g. tenant, key, backend"),
    target_id: str | None = None,
    actor: str | None = None,
    since: datetime | None = Query(default=None, description="Start (inclusive), ISO 8601."),
    until: datetime | None = Query(default=None, description="End (exclusive), ISO 8601."),
    limit: int = Query(default=100, ge=1, le=1000),
    before_id: int | None = Query(default=None, ge=1, description="Entries older than this id (next page)."),
) -> dict[str, Any]:
    """One page of entries; ``next_before_id`` is the ``before_id`` of the next page, null on the last one."""
    rows = await audit_repo(request).list(
        action=action,
        target_type=target_type,
        target_id=target_id,
        actor=actor,
        since=since,
        until=until,
        limit=limit + 1,  # one extra row says whether another page exists
        before_id=before_id,
    )
    page = rows[:limit]
    next_before_id = page[-1]["id"] if len(rows) > limit else None
    return {"object": "list", "data": page, "next_before_id": next_before_id}
