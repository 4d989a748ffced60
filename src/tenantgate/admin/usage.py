"""Usage analytics for admins: totals, breakdowns and raw records from the usage ledger."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query

from tenantgate.admin.api import Admin
from tenantgate.core.errors import InvalidRequest
from tenantgate.storage.usage import GROUPS, UsageFilter

router = APIRouter(prefix="/admin", tags=["usage"])


@router.get("/usage", summary="Usage totals and breakdowns")
async def usage(
    admin: Admin,
    tenant_id: str | None = None,
    key_id: str | None = None,
    model: str | None = None,
    since: datetime | None = Query(default=None, description="Start (inclusive), ISO 8601."),
    until: datetime | None = Query(default=None, description="End (exclusive), ISO 8601."),
    group_by: str = Query(default="model,day", description=f"Comma-separated, from {', '.join(GROUPS)}."),
) -> dict[str, Any]:
    groups = [group for group in group_by.split(",") if group]
    unknown = [group for group in groups if group not in GROUPS]
    if unknown:
        raise InvalidRequest(f"Unknown group_by value(s): {', '.join(unknown)}.", param="group_by")
    await admin.flush_usage()
    filters = UsageFilter(tenant_id, key_id, model, since, until)
    return await admin.usage.summary(filters, groups)


@router.get("/usage/records", summary="Raw usage records, newest first")
async def usage_records(
    admin: Admin,
    tenant_id: str | None = None,
    key_id: str | None = None,
    model: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = Query(default=100, ge=1, le=10_000),
) -> dict[str, Any]:
    await admin.flush_usage()
    records = await admin.usage.records(UsageFilter(tenant_id, key_id, model, since, until), limit)
    return {"object": "list", "data": records}
