"""Issue 9, class 8 (admin and storage side): no admin or tenant input may produce a 5xx.

Each test is the attack, run against a real gateway on SQLite and on PostgreSQL (NUL bytes and 32-bit overflows
only fail there): text with NUL or control characters, limits past a 32-bit INTEGER, prices and budgets that are
huge, infinite or NaN, times that overflow when shifted to UTC. The property: a 400 with an OpenAI-shaped body
naming the parameter, and nothing stored that breaks a later read. Costs already stored out of range (written
before the bounds existed) must not break any report either.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from tenantgate.storage import schema
from tenantgate.storage.database import create_engine
from tenantgate.storage.rows import UsageRecord
from tenantgate.storage.usage import UsageFilter, UsageRepo
from tests.pg import reset_postgres
from tests.support import Gateway, Process, mock_config, start_gateway

INT32_MAX = 2**31 - 1
BACKENDS = [pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(scope="module", params=BACKENDS)
def gw(request: pytest.FixtureRequest, mock: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp: Path = tmp_path_factory.mktemp(f"admin-input-{request.param}")
    url = f"sqlite+aiosqlite:///{tmp / 'tg.db'}" if request.param == "sqlite" else reset_postgres()
    gateway = start_gateway(url, tmp, mock_config(mock.port))
    yield gateway
    gateway.process.stop()


@pytest.fixture(scope="module")
def admin(gw: Gateway) -> Iterator[httpx.Client]:
    with gw.admin() as client:
        yield client


@pytest.fixture(scope="module")
def ids(gw: Gateway) -> dict[str, str]:
    """A real tenant, key (with its secret) and backend, so attacks also reach the update routes."""
    tenant = gw.create_tenant("input-attacks")
    key = gw.create_key(tenant["id"])
    with gw.admin() as client:
        backend = client.post(
            "/admin/backends", json={"name": "input-bk", "base_url": "http://127.0.0.1:9/v1", "models": ["input-m"]}
        )
    assert backend.status_code == 201, backend.text
    return {"tenant": tenant["id"], "key": key["id"], "secret": key["key"], "backend": backend.json()["id"]}


def no_non_finite(text: str) -> Any:
    """Parse JSON refusing NaN and Infinity (a strict client would, and the gateway must never send them)."""

    def refuse(constant: str) -> Any:
        raise AssertionError(f"non-finite number {constant} in a response")

    return json.loads(text, parse_constant=refuse)


def assert_refused(response: httpx.Response, param: str) -> None:
    """A 400 whose OpenAI-shaped body names ``param`` (the last part, for nested fields and query parameters)."""
    assert response.status_code == 400, (response.status_code, response.text)
    error = no_non_finite(response.text)["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] is not None and (error["param"] == param or error["param"].endswith("." + param)), error


def _bk(**fields: Any) -> dict[str, Any]:
    return {"name": "bk-attack", "base_url": "http://127.0.0.1:9/v1", "models": ["m"], **fields}


# (method, path template, json body or query params, the parameter the 400 must name)
TEXT_ATTACKS: list[tuple[str, str, dict[str, Any], str]] = [
    ("POST", "/admin/tenants", {"name": "a\x00b"}, "name"),
    ("POST", "/admin/tenants", {"name": "   "}, "name"),
    ("POST", "/admin/tenants", {"name": "x" * 201}, "name"),
    ("POST", "/admin/tenants", {"name": "evil\u202etxt.exe"}, "name"),
    ("POST", "/admin/tenants", {"name": "lone \ud800 surrogate"}, "name"),
    ("PATCH", "/admin/tenants/{tenant}", {"name": "line\nbreak"}, "name"),
    ("POST", "/admin/keys", {"tenant_id": "ten_\x00"}, "tenant_id"),
    ("POST", "/admin/keys", {"tenant_id": "t" * 201}, "tenant_id"),
    ("POST", "/admin/keys", {"tenant_id": "{tenant}", "name": "k\x00"}, "name"),
    ("POST", "/admin/keys", {"tenant_id": "{tenant}", "models": ["gpt\x00"]}, "0"),
    ("POST", "/admin/keys", {"tenant_id": "{tenant}", "models": ["m"] * 1001}, "models"),
    ("PATCH", "/admin/keys/{key}", {"models": ["x" * 201]}, "0"),
    ("PATCH", "/admin/keys/{key}", {"name": "\x7f"}, "name"),
    ("POST", "/admin/backends", _bk(name="b\x00"), "name"),
    ("POST", "/admin/backends", _bk(models=[{"name": "m", "upstream_model": "u\x00"}]), "upstream_model"),
    ("POST", "/admin/backends", _bk(models=[{"name": "\u2028"}]), "name"),
    ("POST", "/admin/backends", _bk(models=["m"] * 1001), "models"),
    ("POST", "/admin/backends", _bk(base_url="http://127.0.0.1:9/v1\x00"), "base_url"),
    ("POST", "/admin/backends", _bk(base_url="http://[::1/v1"), "base_url"),
    ("POST", "/admin/backends", _bk(base_url="http://127.0.0.1:99999/v1"), "base_url"),
    ("POST", "/admin/backends", _bk(base_url="http://user:pw@127.0.0.1:9/v1"), "base_url"),
    ("POST", "/admin/backends", _bk(base_url="http://"), "base_url"),
    ("POST", "/admin/backends", _bk(base_url="http://" + "h" * 2000), "base_url"),
    ("POST", "/admin/backends", _bk(api_key="sk-a\r\nX-Injected: 1"), "api_key"),
    ("PATCH", "/admin/backends/{backend}", {"base_url": "http://\u00e9\x00/v1"}, "base_url"),
    ("PATCH", "/admin/backends/{backend}", {"models": []}, "models"),
    ("GET", "/admin/tenants/a%00b", {}, "tenant_id"),
    ("PATCH", "/admin/tenants/a%00b", {"name": "ok"}, "tenant_id"),
    ("DELETE", "/admin/tenants/a%01b", {}, "tenant_id"),
    ("GET", "/admin/tenants/" + "t" * 201, {}, "tenant_id"),
    ("GET", "/admin/keys/k%00", {}, "key_id"),
    ("DELETE", "/admin/keys/k%00", {}, "key_id"),
    ("GET", "/admin/backends/b%00", {}, "backend_id"),
    ("DELETE", "/admin/backends/b%00", {}, "backend_id"),
    ("GET", "/admin/keys", {"tenant_id": "a\x00b"}, "tenant_id"),
    ("GET", "/admin/usage", {"model": "gpt\x00"}, "model"),
    ("GET", "/admin/usage", {"tenant_id": "\x00"}, "tenant_id"),
    ("GET", "/admin/usage", {"key_id": "k" * 201}, "key_id"),
    ("GET", "/admin/usage", {"group_by": "model\x00"}, "group_by"),
    ("GET", "/admin/usage", {"model": "m\x00", "format": "csv"}, "model"),
    ("GET", "/admin/usage/records", {"key_id": "\x00"}, "key_id"),
    ("GET", "/admin/usage/records", {"model": "\x00"}, "model"),
    ("GET", "/admin/audit", {"actor": "\x00"}, "actor"),
    ("GET", "/admin/audit", {"action": "tenant.create\x00"}, "action"),
    ("GET", "/admin/audit", {"target_type": "\x00"}, "target_type"),
    ("GET", "/admin/audit", {"target_id": "\x00"}, "target_id"),
]


@pytest.mark.parametrize(
    ("method", "path", "data", "param"), TEXT_ATTACKS, ids=[f"{a[0]} {a[1]} {a[3]}" for a in TEXT_ATTACKS]
)
def test_nul_control_chars_and_oversized_text_are_refused_with_param(
    admin: httpx.Client, ids: dict[str, str], method: str, path: str, data: dict[str, Any], param: str
) -> None:
    url = path.format(**ids) if "{" in path else path
    if method in ("GET", "DELETE"):
        response = admin.request(method, url, params=data)
    else:
        body = json.dumps(data).replace("{tenant}", ids["tenant"])  # ASCII, so lone surrogates travel as escapes
        response = admin.request(method, url, content=body, headers=JSON)
    assert_refused(response, param)


@pytest.mark.parametrize("params", [{"model": "m\x00"}, {"key_id": "key_\x00"}, {"group_by": "\x00"}])
def test_tenant_usage_query_is_checked_like_the_admin_one(
    gw: Gateway, ids: dict[str, str], params: dict[str, str]
) -> None:
    response = httpx.get(f"{gw.v1}/usage", params=params, headers={"Authorization": f"Bearer {ids['secret']}"})
    assert_refused(response, next(iter(params)))


@pytest.mark.parametrize("field", ["rpm", "tpm", "max_concurrency"])
def test_limits_past_a_32_bit_integer_are_refused(admin: httpx.Client, ids: dict[str, str], field: str) -> None:
    for value in (2**31, 2**63, 10**40):
        assert_refused(admin.post("/admin/tenants", json={"name": f"big-{field}", field: value}), field)
        assert_refused(admin.patch(f"/admin/tenants/{ids['tenant']}", json={field: value}), field)
        assert_refused(admin.post("/admin/keys", json={"tenant_id": ids["tenant"], field: value}), field)
        assert_refused(admin.patch(f"/admin/keys/{ids['key']}", json={field: value}), field)
    # the bound itself is stored and read back on every database
    created = admin.post("/admin/tenants", json={"name": f"max-{field}", field: INT32_MAX})
    assert created.status_code == 201, created.text
    read = admin.get(f"/admin/tenants/{created.json()['id']}")
    assert read.status_code == 200 and read.json()[field] == INT32_MAX


def test_paging_ids_past_the_id_column_are_refused(admin: httpx.Client) -> None:
    for value in (2**31, 2**63, 10**30):
        assert_refused(admin.get("/admin/audit", params={"before_id": value}), "before_id")
    assert admin.get("/admin/audit", params={"before_id": INT32_MAX}).status_code == 200


# Raw JSON, because 1e999 is infinity once parsed and NaN / Infinity are not JSON at all (Python accepts both).
NON_FINITE = ["1e308", "1e999", "-1e999", "NaN", "Infinity", "-1", "1000000.5"]


JSON = {"content-type": "application/json"}


def raw(template: str, number: str, field: str = "") -> str:
    """A JSON body with ``number`` written as is (``@N``) and a field name (``@F``)."""
    return template.replace("@N", number).replace("@F", field)


@pytest.mark.parametrize("number", NON_FINITE)
def test_prices_must_be_finite_non_negative_and_bounded(admin: httpx.Client, ids: dict[str, str], number: str) -> None:
    create = '{"name": "pricey-@N", "base_url": "http://127.0.0.1:9/v1", "models": [{"name": "p", "@F": @N}]}'
    update = '{"models": [{"name": "p", "@F": @N}]}'
    for field in ("input_price_per_mtok", "output_price_per_mtok"):
        assert_refused(admin.post("/admin/backends", content=raw(create, number, field), headers=JSON), field)
        response = admin.patch(f"/admin/backends/{ids['backend']}", content=raw(update, number, field), headers=JSON)
        assert_refused(response, field)
    # nothing out of range was stored: every report and listing still answers with finite numbers
    for path in ("/admin/backends", "/admin/usage", "/admin/usage/records"):
        response = admin.get(path)
        assert response.status_code == 200, response.text
        no_non_finite(response.text)


@pytest.mark.parametrize("number", ["1e308", "1e999", "NaN", "-1e999", "-0.5", "1e10"])
def test_budgets_and_timeouts_must_be_finite_and_bounded(admin: httpx.Client, ids: dict[str, str], number: str) -> None:
    tenant = raw('{"name": "budget-@N", "budget_usd": @N}', number)
    assert_refused(admin.post("/admin/tenants", content=tenant, headers=JSON), "budget_usd")
    key = raw('{"budget_usd": @N}', number)
    assert_refused(admin.patch(f"/admin/keys/{ids['key']}", content=key, headers=JSON), "budget_usd")
    timeouts = raw('{"timeouts": {"connect": @N}}', number)
    assert_refused(admin.patch(f"/admin/backends/{ids['backend']}", content=timeouts, headers=JSON), "connect")
    for path in ("/admin/tenants", "/admin/keys", "/admin/backends"):
        response = admin.get(path)
        assert response.status_code == 200, response.text
        no_non_finite(response.text)


@pytest.mark.parametrize(
    ("path", "param", "value"),
    [
        ("/admin/usage", "since", "0001-01-01T00:00:00+01:00"),
        ("/admin/usage", "until", "9999-12-31T23:59:59-05:00"),
        ("/admin/usage/records", "since", "0001-01-01T00:30:00+01:00"),
        ("/admin/usage/records", "until", "9999-12-31T23:00:00-01:00"),
        ("/admin/audit", "since", "0001-01-01T00:00:00+14:00"),
        ("/admin/audit", "until", "9999-12-31T23:59:59-12:00"),
    ],
)
def test_times_that_overflow_in_utc_are_refused(admin: httpx.Client, path: str, param: str, value: str) -> None:
    assert_refused(admin.get(path, params={param: value}), param)


@pytest.mark.parametrize(
    "expires_at", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", "2030-01-01T00:00:00"]
)
def test_key_expiry_must_be_an_aware_storable_time(admin: httpx.Client, ids: dict[str, str], expires_at: str) -> None:
    assert_refused(admin.post("/admin/keys", json={"tenant_id": ids["tenant"], "expires_at": expires_at}), "expires_at")
    assert_refused(admin.patch(f"/admin/keys/{ids['key']}", json={"expires_at": expires_at}), "expires_at")
    listed = admin.get("/admin/keys")
    assert listed.status_code == 200, listed.text


# --- costs stored before the bounds existed -------------------------------------------------------------------------


@pytest.fixture()
async def db(gw: Gateway) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(gw.database_url)
    yield engine
    await engine.dispose()


def _hourly(model: str, cost: float, hour: datetime) -> dict[str, Any]:
    return {
        "hour": hour,
        "tenant_id": "ten_legacy",
        "key_id": "key_legacy",
        "model": model,
        "backend": "",
        "requests": 1,
        "prompt_tokens": 10,
        "completion_tokens": 10,
        "cost_usd": cost,
        "errors": 0,
    }


def _record(model: str, cost: float, **changes: Any) -> UsageRecord:
    values: dict[str, Any] = {
        "request_id": "req_legacy",
        "created_at": datetime.now(UTC),
        "tenant_id": "ten_legacy",
        "key_id": "key_legacy",
        "endpoint": "chat/completions",
        "model": model,
        "backend": None,
        "prompt_tokens": 10,
        "completion_tokens": 10,
        "cost_usd": cost,
        "status": 200,
        "latency_ms": 1.0,
        "ttft_ms": None,
        "estimated": False,
        "streamed": False,
        **changes,
    }
    return UsageRecord(**values)


async def test_reports_survive_non_finite_costs_already_stored(
    gw: Gateway, admin: httpx.Client, ids: dict[str, str], db: AsyncEngine
) -> None:
    """Rows written with a price of 1e308 (before prices were bounded): inf, two costs whose sum overflows a double
    (PostgreSQL raises on that), NaN (PostgreSQL only; SQLite cannot store it). Every report still answers 200 with
    finite numbers, and the bad rows show as an obviously huge cost rather than vanishing."""
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    costs = {"legacy-inf": math.inf, "legacy-big-1": 1.7e308, "legacy-big-2": 1.7e308}
    if db.dialect.name == "postgresql":
        costs["legacy-nan"] = math.nan
    async with db.begin() as conn:
        await conn.execute(schema.usage_hourly.insert(), [_hourly(model, cost, hour) for model, cost in costs.items()])
        for model, cost in costs.items():
            row = {name: getattr(_record(model, cost), name) for name in UsageRecord.__dataclass_fields__}
            await conn.execute(schema.usage_records.insert().values(**row))
        # a tenant and a backend written with out-of-range values by an older version
        await conn.execute(
            schema.tenants.update().where(schema.tenants.c.id == ids["tenant"]).values(budget_usd=math.inf)
        )
        models = [
            {"name": "legacy-inf", "upstream_model": "x", "input_price_per_mtok": 1e308, "output_price_per_mtok": 0}
        ]
        await conn.execute(schema.backends.update().where(schema.backends.c.id == ids["backend"]).values(models=models))
    tenant_key = {"Authorization": f"Bearer {ids['secret']}"}
    requests = [
        admin.get("/admin/usage", params={"group_by": "model,tenant,key,hour,day,backend"}),
        admin.get("/admin/usage", params={"group_by": "model", "top": 2}),
        admin.get("/admin/usage", params={"group_by": "model", "format": "csv"}),
        admin.get("/admin/usage", params={"group_by": "", "format": "csv"}),
        admin.get("/admin/usage/records", params={"tenant_id": "ten_legacy"}),
        admin.get("/admin/tenants"),
        admin.get(f"/admin/tenants/{ids['tenant']}"),
        admin.get(f"/admin/backends/{ids['backend']}"),
        admin.get("/admin/backends"),
        httpx.get(f"{gw.v1}/usage", headers=tenant_key),
    ]
    for response in requests:
        assert response.status_code == 200, (response.request.url, response.text)
        if response.headers["content-type"].startswith("application/json"):
            no_non_finite(response.text)
        else:  # CSV: every measure cell is a finite number
            rows = list(csv.reader(io.StringIO(response.text)))[1:]
            assert rows and all(math.isfinite(float(cell)) for row in rows for cell in row[-6:]), response.text
    report = requests[0].json()
    by_model = {row["model"]: row["cost_usd"] for row in report["by_model"]}
    for model in costs:
        assert math.isfinite(by_model[model]) and by_model[model] >= 1e12, (model, by_model)  # huge, not hidden
    assert math.isfinite(report["totals"]["cost_usd"])
    backend = requests[7].json()
    assert backend["models"][0]["input_price_per_mtok"] <= 1e6


async def test_storage_bounds_what_it_writes(db: AsyncEngine) -> None:
    """The usage writer's last line: a record with an infinite or NaN cost, NUL bytes, lone surrogates or
    over-long text must not fail its batch (it would be retried, and fail, forever), and an hourly rollup already
    near the largest double must not overflow when the next batch is added (PostgreSQL raises on that)."""
    repo = UsageRepo(db)
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    async with db.begin() as conn:
        await conn.execute(schema.usage_hourly.insert(), [_hourly("near-max", 1.7e308, hour)])
    records = [
        _record("near-max", 1.7e308, created_at=hour),
        _record("inf-cost", math.inf),
        _record("nan-cost", math.nan),
        _record("nul\x00model\ud800", 1.0, backend="bk\x00", request_id="r" * 100),
        _record("m" * 500, -1.0),
    ]
    await repo.insert_many(records)
    report = await repo.summary(UsageFilter(tenant_id="ten_legacy"), ["model"])
    costs = {row["model"]: row["cost_usd"] for row in report["by_model"]}
    assert all(math.isfinite(cost) and cost >= 0 for cost in costs.values()), costs
    assert any(model.startswith("nul") and "\x00" not in model for model in costs), costs
    stored = await repo.records(UsageFilter(tenant_id="ten_legacy"), limit=100)
    assert all(math.isfinite(row["cost_usd"]) and 0 <= row["cost_usd"] <= 1e15 for row in stored)
    # filters holding a value no row can hold match nothing instead of failing the query
    assert (await repo.summary(UsageFilter(model="a\x00b"), ["model"]))["by_model"] == []
    assert await repo.records(UsageFilter(key_id="\x00"), limit=1) == []
    async with db.connect() as conn:
        found = await conn.scalar(sa.select(sa.func.count()).select_from(schema.usage_records))
    assert found
