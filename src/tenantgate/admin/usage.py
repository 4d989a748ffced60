"""Usage analytics: ``GET /admin/usage`` for admins, ``GET /v1/usage`` for a tenant's own keys, raw records.

Both reports read the hourly rollups (never the raw ledger), so ``since``/``until`` work at hour granularity:
a bucket is included when its hour start is in [``since`` floored to the hour, ``until``). Hour-aligned ranges
are therefore exact. The tenant route shares the admin route's options and shape but pins the tenant filter to
the caller's own tenant, so no query parameter can reach another tenant's figures.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from tenantgate.admin.api import Admin, AdminServices, services
from tenantgate.admin.schemas import query_text, query_time
from tenantgate.auth.authenticator import Principal
from tenantgate.core.errors import InvalidRequest, NotFound
from tenantgate.edge.pipeline import presented_key
from tenantgate.storage.usage import GROUPS, UsageFilter

router = APIRouter(prefix="/admin", tags=["usage"])
tenant_router = APIRouter(prefix="/v1", tags=["usage"])

CSV_MEASURES = ("requests", "prompt_tokens", "completion_tokens", "total_tokens", "cost_usd", "errors")


@dataclass(frozen=True, slots=True)
class ReportOptions:
    """The query options both usage reports share."""

    since: datetime | None
    until: datetime | None
    groups: list[str]
    top: int | None
    format: Literal["json", "csv"]


def report_options(
    since: datetime | None = Query(
        default=None, description="Start, ISO 8601; floored to its hour (a bucket counts by its hour start)."
    ),
    until: datetime | None = Query(default=None, description="End (exclusive) for hour starts, ISO 8601."),
    group_by: str = Query(
        default="model,day", max_length=200, description=f"Comma-separated, from {', '.join(GROUPS)}."
    ),
    top: int | None = Query(default=None, ge=1, le=10_000, description="Only the N largest groups (cost, requests)."),
    format: Literal["json", "csv"] = Query(
        default="json", description="csv: one row per group of the first group_by, or the totals without one."
    ),
) -> ReportOptions:
    query_time(since, "since")
    query_time(until, "until")
    query_text(group_by, "group_by")
    groups = [group.strip() for group in group_by.split(",") if group.strip()]
    unknown = [group for group in groups if group not in GROUPS]
    if unknown:
        raise InvalidRequest(f"Unknown group_by value(s): {', '.join(unknown)}.", param="group_by")
    if len(set(groups)) != len(groups):
        raise InvalidRequest("group_by names a group twice.", param="group_by")
    return ReportOptions(since, until, groups, top, format)


Options = Annotated[ReportOptions, Depends(report_options)]


def _filters(
    tenant_id: str | None, key_id: str | None, model: str | None, since: datetime | None, until: datetime | None
) -> UsageFilter:
    """The filters of a report, each checked: ``400`` naming the one that holds NUL or control characters, is too
    long to match anything stored, or is a time out of range."""
    return UsageFilter(
        query_text(tenant_id, "tenant_id"),
        query_text(key_id, "key_id"),
        query_text(model, "model"),
        query_time(since, "since"),
        query_time(until, "until"),
    )


# A cell a spreadsheet would run as a formula (or that hides one after a tab or line break) starts with one of
# these; such text cells get a leading ' so the spreadsheet shows the text instead (OWASP "CSV injection").
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\n")


def csv_cell(value: Any) -> Any:
    """One CSV cell: ``None`` as empty, numbers as they are, text neutralised when it could start a formula."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def to_csv(report: dict[str, Any], groups: list[str]) -> str:
    """The first group's rows (or the totals alone) as CSV with a header row; numbers as JSON would print them."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")  # RFC 4180; so a CR or LF in a cell gets it quoted
    if groups:
        group = groups[0]
        writer.writerow([group, *CSV_MEASURES])
        for row in report[f"by_{group}"]:
            writer.writerow([csv_cell(row[group]), *(csv_cell(row[name]) for name in CSV_MEASURES)])
    else:
        writer.writerow(CSV_MEASURES)
        writer.writerow([csv_cell(report["totals"][name]) for name in CSV_MEASURES])
    return buffer.getvalue()


async def _report(admin: AdminServices, filters: UsageFilter, options: ReportOptions) -> Response | dict[str, Any]:
    await admin.flush_usage()  # this replica's queued records first, so a report right after a request sees it
    report = await admin.usage.summary(filters, options.groups, options.top)
    if options.format == "csv":
        return Response(
            to_csv(report, options.groups),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": 'attachment; filename="usage.csv"'},
        )
    return report


@router.get("/usage", summary="Usage totals and breakdowns (hourly rollups)", response_model=None)
async def usage(
    admin: Admin,
    options: Options,
    tenant_id: str | None = None,
    key_id: str | None = None,
    model: str | None = None,
) -> Response | dict[str, Any]:
    filters = _filters(tenant_id, key_id, model, options.since, options.until)
    return await _report(admin, filters, options)


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
    filters = _filters(tenant_id, key_id, model, since, until)
    await admin.flush_usage()
    records = await admin.usage.records(filters, limit)
    return {"object": "list", "data": records}


async def caller(request: Request) -> Principal:
    """The principal of the API key on the request (``Authorization: Bearer`` or ``X-API-Key``)."""
    principal: Principal = await request.app.state.gateway.auth.authenticate(presented_key(request))
    return principal


@tenant_router.get("/usage", summary="Your tenant's usage totals and breakdowns", response_model=None)
async def tenant_usage(
    request: Request,
    principal: Annotated[Principal, Depends(caller)],
    options: Options,
    key_id: str | None = Query(default=None, description="Only this key (one of your tenant's keys)."),
    model: str | None = None,
) -> Response | dict[str, Any]:
    """The same report as ``GET /admin/usage``, always filtered to the calling key's tenant."""
    admin = services(request)
    filters = _filters(principal.tenant_id, key_id, model, options.since, options.until)
    if key_id is not None:
        key = await admin.keys.get(key_id)
        if key is None or key.tenant_id != principal.tenant_id:  # one answer for both: ids are not confirmed
            raise NotFound(f"No key with id '{key_id}'.", param="key_id", code="key_not_found")
    return await _report(admin, filters, options)
