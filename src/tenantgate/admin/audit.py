"""``GET /admin/audit``: the audit log of admin actions, filtered and paged, behind the admin key.

Also the two helpers the admin handlers use to write it, so every handler names the actor the same way. The
repository comes from ``app.state.audit`` (built by the app factory), not from an import, like every other
service the admin API uses.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from tenantgate.admin.auth import audit_repo, require_admin
from tenantgate.admin.schemas import INT32_MAX, query_text, query_time

router = APIRouter(prefix="/admin", tags=["admin"])


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
    before_id: int | None = Query(
        default=None, ge=1, le=INT32_MAX, description="Entries older than this id (next page)."
    ),
) -> dict[str, Any]:
    """One page of entries; ``next_before_id`` is the ``before_id`` of the next page, null on the last one."""
    rows = await audit_repo(request).list(
        action=query_text(action, "action"),
        target_type=query_text(target_type, "target_type"),
        target_id=query_text(target_id, "target_id"),
        actor=query_text(actor, "actor"),
        since=query_time(since, "since"),
        until=query_time(until, "until"),
        limit=limit + 1,  # one extra row says whether another page exists
        before_id=before_id,
    )
    page = rows[:limit]
    next_before_id = page[-1]["id"] if len(rows) > limit else None
    return {"object": "list", "data": page, "next_before_id": next_before_id}
