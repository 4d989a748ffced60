"""``/console/usage``: a person's usage (or a managed team's) as stat tiles, two charts and recent requests.

Also the display helpers the other user pages share (money, times, a key as a table row): the numbers are
formatted here, so templates only place text, and every sortable cell carries its raw value in ``data-value``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tenantgate.admin.schemas import query_text
from tenantgate.console.forms import logged_in, page_caller
from tenantgate.console.render import render, secure_headers
from tenantgate.core.errors import GatewayError, InvalidRequest
from tenantgate.people.access import Caller, people_of
from tenantgate.people.service import People
from tenantgate.people.tenancy import MANAGERS
from tenantgate.storage.rows import KeyRow, MembershipRow, UserRow, as_utc, utcnow
from tenantgate.storage.usage import UsageFilter

PLAYGROUND_KEY_NAME: Final = "Playground (console)"
WINDOWS: Final = (7, 30, 90)  # days a usage page may cover
MEASURES: Final = ("requests", "tokens", "cost")
RECENT_ROWS: Final = 50
TOP_MODELS: Final = 12


# ---------- Display helpers (shared by the user pages) ----------


def money(value: float | None) -> str:
    """USD for people: cents when it is at least a cent, else up to six decimals (a request costs little)."""
    if value is None or not math.isfinite(value):
        return "—"
    if value == 0:
        return "$0.00"
    if abs(value) >= 0.01:
        return f"${value:,.2f}"
    return "$" + f"{value:.6f}".rstrip("0")


def count(value: int | float | None) -> str:
    return "—" if value is None else f"{int(value):,}"


def when(value: datetime | str | None) -> str:
    """A UTC time as ``2025-03-05 14:07`` (the tables say UTC in their header)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    moment = as_utc(value)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if moment else ""


def iso(value: datetime | None) -> str:
    moment = as_utc(value)
    return moment.astimezone(UTC).isoformat() if moment else ""


def day_of(value: datetime | None) -> str:
    moment = as_utc(value)
    return moment.astimezone(UTC).strftime("%Y-%m-%d") if moment else ""


def expiry_day(value: datetime | None) -> str:
    """The last day a key works: a key that ends at midnight UTC (as the console sets them) works all the day
    before, which is the day the person picked."""
    moment = as_utc(value)
    if moment is None:
        return ""
    moment = moment.astimezone(UTC)
    if moment.time() == datetime.min.time():
        return (moment - timedelta(days=1)).strftime("%Y-%m-%d")
    return moment.strftime("%Y-%m-%d %H:%M")


def expiry_note(value: datetime | None) -> str:
    """When a key stops working, in words ("At the end of 2031-05-01 (UTC)" for a day picked in the console)."""
    moment = as_utc(value)
    if moment is None:
        return ""
    if moment.astimezone(UTC).time() == datetime.min.time():
        return f"At the end of {expiry_day(moment)} (UTC)"
    return f"On {when(moment).replace(' ', ' at ')} UTC"


def key_status(row: KeyRow, now: datetime) -> str:
    if row.revoked_at is not None:
        return "revoked"
    expires = as_utc(row.expires_at)
    if expires is not None and expires <= now:
        return "expired"
    return "active"


STATUS_BADGE: Final = {"active": "ok", "revoked": "bad", "expired": "warn"}


def limits_text(row: KeyRow) -> list[str]:
    lim = row.limits
    parts = []
    if lim.rpm is not None:
        parts.append(f"{lim.rpm:,} req/min")
    if lim.tpm is not None:
        parts.append(f"{lim.tpm:,} tokens/min")
    if lim.max_concurrency is not None:
        parts.append(f"{lim.max_concurrency:,} at once")
    if lim.budget_usd is not None:
        parts.append(f"{money(lim.budget_usd)} {lim.budget_period or 'monthly'}")
    return parts


def key_view(
    row: KeyRow, tenant_names: dict[str, str], now: datetime, owners: dict[str, str] | None = None
) -> dict[str, Any]:
    """A key as a table row: every cell as text, with the raw values sorting needs."""
    status = key_status(row, now)
    return {
        "id": row.id,
        "name": row.name or "",
        "tenant_id": row.tenant_id,
        "tenant": tenant_names.get(row.tenant_id, row.tenant_id),
        "prefix": f"tg-{row.public_id}-…",
        "models": row.models,
        "limits": limits_text(row),
        "expires": expiry_day(row.expires_at),
        "expires_full": when(row.expires_at),
        "expires_note": expiry_note(row.expires_at),
        "expires_iso": iso(row.expires_at),
        "status": status,
        "badge": STATUS_BADGE[status],
        "created": day_of(row.created_at),
        "created_full": when(row.created_at),
        "created_iso": iso(row.created_at),
        "playground": row.name == PLAYGROUND_KEY_NAME,
        "owner": (owners or {}).get(row.user_id or "", ""),
    }


async def tenant_names(people: People, memberships: list[MembershipRow], rows: list[KeyRow]) -> dict[str, str]:
    """Team names for the keys' tenants: from the memberships, else looked up (a team one has left)."""
    names = {m.tenant_id: m.tenant_name or m.tenant_id for m in memberships}
    for tenant_id in {row.tenant_id for row in rows} - set(names):
        tenant = await people.ctx.repos.tenants.get(tenant_id)
        names[tenant_id] = tenant.name if tenant else tenant_id
    return names


# ---------- What a usage view covers ----------


@dataclass(frozen=True, slots=True)
class Scope:
    tenant_id: str | None
    days: int
    measure: str
    filters: UsageFilter
    manages: bool
    since: datetime


def _choice(request: Request, name: str, allowed: tuple[Any, ...], default: Any) -> Any:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    for option in allowed:
        if raw == str(option):
            return option
    raise InvalidRequest(f"{name} must be one of {', '.join(map(str, allowed))}.", param=name, code="invalid_value")


async def usage_scope(request: Request, user: UserRow) -> Scope:
    """The usage the query asks for and the user may see (400 on a bad parameter, 404 on another's team)."""
    people = people_of(request)
    tenant_id = query_text(request.query_params.get("tenant_id") or None, "tenant_id")
    days = _choice(request, "days", WINDOWS, 30)
    measure = _choice(request, "measure", MEASURES, "requests")
    today = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
    since = today - timedelta(days=days - 1)
    filters = await people.visible_usage(user, tenant_id=tenant_id, key_id=None, base=UsageFilter(since=since))
    manages = tenant_id is not None and (await people.tenancy.role_in(user, tenant_id)) in MANAGERS
    return Scope(tenant_id, days, measure, filters, manages, since)


def _measure(rows: list[dict[str, Any]], measure: str | None) -> tuple[list[dict[str, Any]], str]:
    """Datasets (label, per-row value) for a measure; with none, requests, tokens and cost together."""
    specs: dict[str | None, tuple[list[tuple[str, str]], str]] = {
        "requests": ([("Requests", "requests"), ("Errors", "errors")], "Requests"),
        "tokens": ([("Prompt tokens", "prompt_tokens"), ("Completion tokens", "completion_tokens")], "Tokens"),
        "cost": ([("Cost (USD)", "cost_usd")], "USD"),
        None: ([("Requests", "requests"), ("Tokens", "total_tokens"), ("Cost (USD)", "cost_usd")], ""),
    }
    columns, y_label = specs[measure]
    datasets = [{"label": label, "data": [row[field] for row in rows]} for label, field in columns]
    if measure == "requests" and not any(datasets[1]["data"]):
        datasets.pop()  # no errors: no empty series (nor a legend for it)
    return datasets, y_label


def day_series(by_day: list[dict[str, Any]], since: datetime, days: int) -> list[dict[str, Any]]:
    """One row per day of the window, zeros where nothing happened (so the axis shows the whole window)."""
    found = {str(row["day"])[:10]: row for row in by_day}
    empty = {"requests": 0, "errors": 0, "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "cost_usd": 0.0}
    rows = []
    for offset in range(days):
        day: date = (since + timedelta(days=offset)).date()
        rows.append({**empty, **found.get(day.isoformat(), {}), "day": day})
    return rows


async def chart_spec(request: Request, user: UserRow, by: str, measure: str | None) -> dict[str, Any]:
    scope = await usage_scope(request, user)
    people = people_of(request)
    await people.ctx.flush_usage()
    if by == "day":
        summary = await people.ctx.repos.usage.summary(scope.filters, ("day",))
        rows = day_series(summary["by_day"], scope.since, scope.days)
        labels = [f"{row['day']:%b} {row['day'].day}" for row in rows]
        chart_type = "bar"
    else:
        summary = await people.ctx.repos.usage.summary(scope.filters, ("model",), top=TOP_MODELS)
        rows = summary["by_model"]
        labels = [row["model"] for row in rows]
        chart_type = "bar"
    datasets, y_label = _measure(rows, measure)
    if not any(value for dataset in datasets for value in dataset["data"]):
        labels, datasets = [], []  # nothing to draw: console.js shows the canvas's "empty" message instead
    spec: dict[str, Any] = {"type": chart_type, "labels": labels, "datasets": datasets, "y_label": y_label}
    if measure != "requests" and measure != "tokens":
        spec["integer"] = False  # money on the axis: keep decimal ticks
    return spec


def _json(body: dict[str, Any], status: int = 200) -> Response:
    response = JSONResponse(body, status_code=status)
    return secure_headers(response)


async def usage_chart(request: Request) -> Response:
    """``GET /console/usage/chart.json?by=day|model[&measure=][&days=][&tenant_id=]``: a chart spec for console.js."""
    caller = await page_caller(request)
    if caller is None:
        return _json({"error": {"message": "Log in first.", "code": "not_authenticated"}}, 401)
    try:
        by = _choice(request, "by", ("day", "model"), None)
        if by is None:
            raise InvalidRequest("by must be day or model.", param="by", code="invalid_value")
        measure = _choice(request, "measure", MEASURES, None)
        return _json(await chart_spec(request, caller.user, by, measure))
    except GatewayError as exc:
        return _json({"error": {"message": exc.message, "code": exc.code}}, exc.status)


def record_view(record: dict[str, Any], key_names: dict[str, str]) -> dict[str, Any]:
    status = int(record["status"])
    latency = record.get("latency_ms")
    return {
        "time": when(record["created_at"]),
        "time_iso": record["created_at"] or "",
        "model": record["model"],
        "key": key_names.get(record["key_id"], record["key_id"]),
        "status": status,
        "badge": "ok" if status < 400 else ("warn" if status in (408, 429, 499) else "bad"),
        "prompt_tokens": record["prompt_tokens"],
        "completion_tokens": record["completion_tokens"],
        "cost": money(record["cost_usd"]),
        "cost_raw": record["cost_usd"],
        "latency": "—" if latency is None else f"{latency:,.0f} ms",
        "latency_raw": "" if latency is None else latency,
        "streamed": record["streamed"],
    }


@logged_in
async def usage_page(request: Request, caller: Caller) -> Response:
    people = people_of(request)
    user = caller.user
    scope = await usage_scope(request, user)
    await people.ctx.flush_usage()
    summary = await people.ctx.repos.usage.summary(scope.filters, ())
    records = await people.ctx.repos.usage.records(scope.filters, RECENT_ROWS)
    profile = await people.profile(user, None)
    memberships = await people.ctx.repos.memberships.of_user(user.id)
    keys = (
        await people.keys.of_tenant(user, scope.tenant_id)
        if scope.manages and scope.tenant_id
        else await people.keys.mine(user)
    )
    names = {row.id: row.name or row.id for row in keys}
    totals = summary["totals"]
    spend = profile["spend"]
    team_name = next((m.tenant_name for m in memberships if m.tenant_id == scope.tenant_id), None)
    if scope.tenant_id and team_name is None:  # a platform admin looking at a team it is not in
        tenant = await people.ctx.repos.tenants.get(scope.tenant_id)
        team_name = tenant.name if tenant else scope.tenant_id
    scope_query = urlencode({"days": scope.days, **({"tenant_id": scope.tenant_id} if scope.tenant_id else {})})
    return render(
        request,
        "user_usage.html",
        caller=caller,
        scope=scope,
        team_name=team_name,
        memberships=memberships,
        managers=MANAGERS,
        windows=WINDOWS,
        measures=(("requests", "Requests"), ("tokens", "Tokens"), ("cost", "Cost")),
        scope_query=scope_query,
        totals={
            "requests": count(totals["requests"]),
            "errors": count(totals["errors"]),
            "tokens": count(totals["total_tokens"]),
            "prompt_tokens": count(totals["prompt_tokens"]),
            "completion_tokens": count(totals["completion_tokens"]),
            "cost": money(totals["cost_usd"]),
        },
        spend={
            "period": spend["period"],
            "spent": money(spend["spent_usd"]),
            "budget": money(spend["budget_usd"]) if spend["budget_usd"] is not None else None,
            "over": spend["budget_usd"] is not None and spend["spent_usd"] >= spend["budget_usd"],
            "ends": when(spend["period_end"]) if spend["period_end"] else None,
        },
        records=[record_view(record, names) for record in records],
        recent_rows=RECENT_ROWS,
    )
