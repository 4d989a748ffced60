"""Admin usage analytics: a table, a chart (``chart.json`` for console.js) and a CSV link, by tenant, model,
backend, day, hour or key over a date range.

The page goes through the usage API's own option parsing and report (``report_options``, ``_filters``,
``_report``), so the page, its chart and the CSV download at ``/admin/usage?format=csv`` agree on every figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final
from urllib.parse import urlencode

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from tenantgate.admin.auth import AdminServices
from tenantgate.admin.schemas import query_text
from tenantgate.admin.usage import _filters, _report, report_options
from tenantgate.console.admin_common import acting, error_flash
from tenantgate.console.forms import logged_in, page_caller
from tenantgate.console.render import render, secure_headers
from tenantgate.core.errors import GatewayError, InvalidRequest
from tenantgate.people.access import Caller

# The report's groups the page offers (storage's GROUPS also has tenant_id and key_id, aliases of tenant and key).
GROUPS: Final = (
    ("day", "Day"),
    ("hour", "Hour"),
    ("tenant", "Tenant"),
    ("model", "Model"),
    ("backend", "Backend"),
    ("key", "API key"),
)
MEASURES: Final = (
    ("requests", "Requests"),
    ("total_tokens", "Tokens"),
    ("cost_usd", "Cost (USD)"),
    ("errors", "Errors"),
)
DEFAULT_DAYS: Final = 30
MAX_FILLED_DAYS: Final = 400


@dataclass(frozen=True, slots=True)
class UsageQuery:
    group: str
    since: date | None
    until: date | None  # inclusive (the whole day)
    top: int | None
    tenant_id: str | None
    measure: str

    @property
    def since_at(self) -> datetime | None:
        return datetime.combine(self.since, time(), UTC) if self.since else None

    @property
    def until_at(self) -> datetime | None:
        """The report's exclusive end: midnight after the last day asked for."""
        return datetime.combine(self.until + timedelta(days=1), time(), UTC) if self.until else None

    def page_params(self) -> dict[str, str]:
        params = {"group": self.group, "measure": self.measure}
        params |= {
            "since": self.since.isoformat() if self.since else "",
            "until": self.until.isoformat() if self.until else "",
        }
        params |= {"top": str(self.top) if self.top else "", "tenant_id": self.tenant_id or ""}
        return params

    def csv_params(self) -> dict[str, str]:
        params = {"format": "csv", "group_by": self.group}
        if self.since_at:
            params["since"] = self.since_at.isoformat()
        if self.until_at:
            params["until"] = self.until_at.isoformat()
        if self.top:
            params["top"] = str(self.top)
        if self.tenant_id:
            params["tenant_id"] = self.tenant_id
        return params


def _day(params: QueryParams, name: str, label: str) -> date | None:
    text = params.get(name, "").strip()
    if not text:
        return None
    try:
        day: date | None = date.fromisoformat(text)
    except ValueError:
        day = None
    if day is None or not 1 <= day.year <= 9997:
        raise InvalidRequest(
            f"{label}: use a date (YYYY-MM-DD) between the years 1 and 9997.", param=name, code="invalid_value"
        )
    return day


def usage_query(params: QueryParams) -> UsageQuery:
    """The page's filters from its query string (the first visit shows the last 30 days by day)."""
    if "group" not in params:
        today = datetime.now(UTC).date()
        return UsageQuery("day", today - timedelta(days=DEFAULT_DAYS - 1), today, None, None, "requests")
    group = params.get("group", "day")
    if group not in dict(GROUPS):
        raise InvalidRequest("Group by: choose one of the listed groups.", param="group", code="invalid_value")
    measure = params.get("measure", "requests")
    if measure not in dict(MEASURES):
        raise InvalidRequest("Chart: choose one of the listed measures.", param="measure", code="invalid_value")
    since, until = _day(params, "since", "Since"), _day(params, "until", "Until")
    if since and until and since > until:
        raise InvalidRequest("Since: must be on or before Until.", param="since", code="invalid_value")
    top_text = params.get("top", "").strip()
    top = None
    if top_text:
        if not top_text.isdigit() or not 1 <= int(top_text) <= 10_000:
            raise InvalidRequest("Top: a whole number from 1 to 10000.", param="top", code="invalid_value")
        top = int(top_text)
    tenant_id = query_text(params.get("tenant_id", "").strip() or None, "tenant_id")
    return UsageQuery(group, since, until, top, tenant_id, measure)


async def usage_report(admin: AdminServices, query: UsageQuery) -> dict[str, Any]:
    options = report_options(
        since=query.since_at, until=query.until_at, group_by=query.group, top=query.top, format="json"
    )
    report = await _report(admin, _filters(query.tenant_id, None, None, options.since, options.until), options)
    assert isinstance(report, dict)
    return report


async def _names(admin: AdminServices, group: str) -> dict[str, str]:
    """Readable names for tenant and key ids (ids stay in the CSV)."""
    if group == "tenant":
        return {row.id: row.name for row in await admin.tenants.list()}
    if group == "key":
        return {row.id: row.name or f"tg-{row.public_id}-…" for row in await admin.keys.list()}
    return {}


def _rows(report: dict[str, Any], query: UsageQuery, names: dict[str, str]) -> list[dict[str, Any]]:
    rows = []
    for row in report[f"by_{query.group}"]:
        value = row[query.group]
        label = "(none)" if value is None else names.get(value, value)
        if query.group == "hour" and value:
            label = value[:16].replace("T", " ")
        rows.append({**row, "value": value, "label": label})
    if query.group in ("day", "hour"):
        rows.sort(key=lambda r: r["value"] or "")
    return rows


def _filled_days(rows: list[dict[str, Any]], query: UsageQuery) -> list[dict[str, Any]]:
    """A day chart over a known range shows the quiet days too (as zeros)."""
    if query.group != "day" or not (query.since and query.until) or query.top:
        return rows
    if (query.until - query.since).days > MAX_FILLED_DAYS:
        return rows
    by_day = {row["value"]: row for row in rows}
    days = [query.since + timedelta(days=n) for n in range((query.until - query.since).days + 1)]
    zero = {name: 0 for name, _ in MEASURES}
    return [{**zero, **by_day.get(d.isoformat(), {}), "label": f"{d:%b} {d.day}"} for d in days]


def _tenant_options(tenants: list[Any]) -> list[tuple[str, str]]:
    return [(row.id, row.name) for row in tenants]


async def _usage_view(request: Request, caller: Caller) -> Response:
    admin = acting(request, caller)
    tenants = _tenant_options(await admin.tenants.list())
    try:
        query = usage_query(request.query_params)
        report = await usage_report(admin, query)
    except GatewayError as exc:
        return render(
            request,
            "admin_usage.html",
            status=exc.status,
            caller=caller,
            notice=error_flash(exc.message, exc.param),
            invalid=exc.param,
            query=None,
            params=dict(request.query_params),
            groups=GROUPS,
            measures=MEASURES,
            tenants=tenants,
        )
    rows = _rows(report, query, await _names(admin, query.group))
    return render(
        request,
        "admin_usage.html",
        caller=caller,
        query=query,
        params=query.page_params(),
        totals=report["totals"],
        rows=rows,
        group_label=dict(GROUPS)[query.group],
        measure_label=dict(MEASURES)[query.measure],
        groups=GROUPS,
        measures=MEASURES,
        tenants=tenants,
        chart_url="/console/admin/usage/chart.json?" + urlencode(query.page_params()),
        csv_url="/admin/usage?" + urlencode(query.csv_params()),
    )


@logged_in
async def usage_page(request: Request, caller: Caller) -> Response:
    return await _usage_view(request, caller)


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return secure_headers(JSONResponse(body, status_code=status))


async def usage_chart(request: Request) -> Response:
    """``{"type", "labels", "datasets": [{"label", "data"}], "y_label"}`` for console.js's charts."""
    caller = await page_caller(request)
    if caller is None or not caller.user.is_admin:
        denied = {"error": {"message": "Log in as a platform admin.", "code": "admin_required"}}
        return _json(denied, 401 if caller is None else 403)
    admin = acting(request, caller)
    try:
        query = usage_query(request.query_params)
        report = await usage_report(admin, query)
    except GatewayError as exc:
        return _json(exc.body(), exc.status)
    rows = _filled_days(_rows(report, query, await _names(admin, query.group)), query)
    label = dict(MEASURES)[query.measure]
    return _json(
        {
            "type": "line" if query.group in ("day", "hour") else "bar",
            "labels": [row["label"] for row in rows],
            "datasets": [{"label": label, "data": [row[query.measure] for row in rows]}],
            "y_label": label,
        }
    )


ROUTES: list[BaseRoute] = [
    Route("/console/admin/usage", usage_page, methods=["GET"]),
    Route("/console/admin/usage/chart.json", usage_chart, methods=["GET"]),
]
