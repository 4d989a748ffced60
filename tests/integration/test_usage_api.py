"""Usage analytics over HTTP: the reports (read from the hourly rollups) equal the raw usage records, CSV equals
JSON, and a tenant's own keys see that tenant's figures and nobody else's.

Two fresh tenants make a scripted set of requests; every expected figure is computed here from what
``GET /admin/usage/records`` says about those requests.
"""

from __future__ import annotations

import csv
import io
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.support import ADMIN_KEY, Gateway

MESSAGES = [{"role": "user", "content": "count these words please"}]
MEASURES = ("requests", "prompt_tokens", "completion_tokens", "total_tokens", "cost_usd", "errors")


def chat(gateway: Gateway, key: str, model: str, **extra: Any) -> None:
    body = {"model": model, "messages": MESSAGES, **extra}
    with httpx.Client(timeout=30) as client:
        if body.get("stream"):
            with client.stream("POST", f"{gateway.v1}/chat/completions", json=body, headers=bearer(key)) as response:
                assert response.status_code == 200
                for _ in response.iter_bytes():
                    pass
        else:
            response = client.post(f"{gateway.v1}/chat/completions", json=body, headers=bearer(key))
            assert response.status_code == (502 if "mock" in extra else 200), response.text


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def records(gateway: Gateway, tenant_id: str, expected: int) -> list[dict[str, Any]]:
    """The tenant's raw records, once all ``expected`` have landed (a stream's record follows its last byte)."""
    deadline = time.monotonic() + 10
    with gateway.admin() as admin:
        while True:
            found = admin.get("/admin/usage/records", params={"tenant_id": tenant_id, "limit": 1000}).json()["data"]
            if len(found) >= expected or time.monotonic() > deadline:
                assert len(found) == expected
                return list(found)
            time.sleep(0.1)


def sums(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    chosen = list(rows)
    prompt = sum(r["prompt_tokens"] for r in chosen)
    completion = sum(r["completion_tokens"] for r in chosen)
    return {
        "requests": len(chosen),
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "cost_usd": sum(r["cost_usd"] for r in chosen),
        "errors": sum(1 for r in chosen if r["status"] >= 400),
    }


def hour_of(record: dict[str, Any]) -> str:
    created = datetime.fromisoformat(record["created_at"]).astimezone(UTC)
    return created.replace(minute=0, second=0, microsecond=0).isoformat()


GROUP_FIELD = {"tenant": "tenant_id", "key": "key_id", "model": "model", "backend": "backend"}


def grouped(rows: list[dict[str, Any]], group: str) -> dict[Any, dict[str, Any]]:
    by: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by[hour_of(row) if group == "hour" else row[GROUP_FIELD[group]]].append(row)
    return {value: sums(members) for value, members in by.items()}


def assert_same(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert {k: got[k] for k in MEASURES if k != "cost_usd"} == {k: want[k] for k in MEASURES if k != "cost_usd"}
    assert got["cost_usd"] == pytest.approx(want["cost_usd"], abs=1e-9)


def assert_groups(report: dict[str, Any], group: str, want: dict[Any, dict[str, Any]]) -> None:
    rows = report[f"by_{group}"]
    assert sorted(row[group] for row in rows) == sorted(want)
    for row in rows:
        assert_same(row, want[row[group]])


@pytest.fixture(scope="module")
def scripted(gateway: Gateway) -> dict[str, Any]:
    """Tenant A (keys a1, a2) and tenant B (key b1) after a fixed set of requests, with their raw records."""
    suffix = uuid.uuid4().hex[:8]
    tenant_a, tenant_b = gateway.create_tenant(f"usage-a-{suffix}"), gateway.create_tenant(f"usage-b-{suffix}")
    a1, a2 = gateway.create_key(tenant_a["id"]), gateway.create_key(tenant_a["id"])
    b1 = gateway.create_key(tenant_b["id"])
    for max_tokens in (3, 5, 8):
        chat(gateway, a1["key"], "mock-gpt", max_tokens=max_tokens)
    chat(gateway, a1["key"], "mock-gpt", stream=True)
    chat(gateway, a1["key"], "mock-gpt", mock={"status": 503})  # an error record
    chat(gateway, a2["key"], "gpt-public")
    chat(gateway, a2["key"], "gpt-public", max_tokens=2)
    chat(gateway, a2["key"], "mock-small")
    chat(gateway, b1["key"], "mock-gpt")
    chat(gateway, b1["key"], "pricey")
    return {
        "a": tenant_a,
        "b": tenant_b,
        "a1": a1,
        "a2": a2,
        "b1": b1,
        "records_a": records(gateway, tenant_a["id"], 8),
        "records_b": records(gateway, tenant_b["id"], 2),
    }


def admin_usage(gateway: Gateway, **params: Any) -> dict[str, Any]:
    with gateway.admin() as admin:
        response = admin.get("/admin/usage", params=params)
    assert response.status_code == 200, response.text
    return dict(response.json())


def tenant_usage(gateway: Gateway, key: str, **params: Any) -> httpx.Response:
    return httpx.get(f"{gateway.v1}/usage", params=params, headers=bearer(key), timeout=30)


def test_admin_groups_equal_the_raw_records(gateway: Gateway, scripted: dict[str, Any]) -> None:
    mine = scripted["records_a"]
    report = admin_usage(gateway, tenant_id=scripted["a"]["id"], group_by="key,model,hour,backend,tenant")
    assert_same(report["totals"], sums(mine))
    assert report["totals"]["errors"] == 1
    for group in ("key", "model", "hour", "backend", "tenant"):
        assert_groups(report, group, grouped(mine, group))
    assert len(report["by_key"]) == 2 and len(report["by_model"]) == 3
    everyone = admin_usage(gateway, group_by="tenant")  # other tests' tenants too: compare ours only
    rows = {row["tenant"]: row for row in everyone["by_tenant"]}
    for tenant, found in (("a", mine), ("b", scripted["records_b"])):
        assert_same(rows[scripted[tenant]["id"]], sums(found))
    # the names the API had before rollups still work
    legacy = admin_usage(gateway, key_id=scripted["a1"]["id"], group_by="tenant_id,key_id,model,day")
    assert_same(legacy["by_key_id"][0], sums(r for r in mine if r["key_id"] == scripted["a1"]["id"]))
    assert [row["tenant_id"] for row in legacy["by_tenant_id"]] == [scripted["a"]["id"]]


def test_top_and_time_range(gateway: Gateway, scripted: dict[str, Any]) -> None:
    mine = scripted["records_a"]
    by_key = grouped(mine, "key")
    richest = max(by_key, key=lambda key: (by_key[key]["cost_usd"], by_key[key]["requests"]))
    top = admin_usage(gateway, tenant_id=scripted["a"]["id"], group_by="key", top=1)
    assert [row["key"] for row in top["by_key"]] == [richest]
    assert_same(top["totals"], sums(mine))
    hours = sorted({hour_of(r) for r in mine})
    first = datetime.fromisoformat(hours[0])
    ranged = admin_usage(gateway, tenant_id=scripted["a"]["id"], since=first.isoformat(), group_by="hour")
    assert_same(ranged["totals"], sums(mine))
    before = admin_usage(gateway, tenant_id=scripted["a"]["id"], until=first.isoformat(), group_by="hour")
    assert before["totals"]["requests"] == 0 and before["by_hour"] == []


def parse_csv(response: httpx.Response) -> list[dict[str, str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(response.text)))


def test_csv_matches_json(gateway: Gateway, scripted: dict[str, Any]) -> None:
    params = {"tenant_id": scripted["a"]["id"], "group_by": "model,key"}
    report = admin_usage(gateway, **params)
    with gateway.admin() as admin:
        rows = parse_csv(admin.get("/admin/usage", params={**params, "format": "csv"}))
        totals = parse_csv(admin.get("/admin/usage", params={**params, "group_by": "", "format": "csv"}))
    assert rows and list(rows[0]) == ["model", *MEASURES]
    assert [
        {"model": row["model"], **{k: float(row[k]) if k == "cost_usd" else int(row[k]) for k in MEASURES}}
        for row in rows
    ] == report["by_model"]
    assert len(totals) == 1 and list(totals[0]) == list(MEASURES)
    assert {k: float(v) if k == "cost_usd" else int(v) for k, v in totals[0].items()} == report["totals"]


def test_tenant_key_sees_only_its_tenant(gateway: Gateway, scripted: dict[str, Any]) -> None:
    key_a, mine, theirs = scripted["a2"]["key"], scripted["records_a"], scripted["records_b"]
    response = tenant_usage(gateway, key_a, group_by="tenant,key,model,hour")
    assert response.status_code == 200, response.text
    report = response.json()
    assert_same(report["totals"], sums(mine))
    assert [row["tenant"] for row in report["by_tenant"]] == [scripted["a"]["id"]]
    for group in ("key", "model", "hour"):
        assert_groups(report, group, grouped(mine, group))
    # naming tenant B changes nothing; naming B's key is refused as unknown
    assert tenant_usage(gateway, key_a, tenant_id=scripted["b"]["id"]).json()["totals"] == report["totals"]
    refused = tenant_usage(gateway, key_a, key_id=scripted["b1"]["id"])
    assert refused.status_code == 404
    assert refused.json()["error"]["code"] == "key_not_found"
    assert "totals" not in refused.json()
    narrowed = tenant_usage(gateway, key_a, key_id=scripted["a1"]["id"]).json()
    assert_same(narrowed["totals"], sums(r for r in mine if r["key_id"] == scripted["a1"]["id"]))
    other = tenant_usage(gateway, scripted["b1"]["key"], group_by="key").json()
    assert_same(other["totals"], sums(theirs))
    assert [row["key"] for row in other["by_key"]] == [scripted["b1"]["id"]]
    rows = parse_csv(tenant_usage(gateway, key_a, group_by="key", format="csv"))
    assert sorted(row["key"] for row in rows) == sorted({scripted["a1"]["id"], scripted["a2"]["id"]})


def test_tenant_usage_errors_are_openai_shaped(gateway: Gateway, scripted: dict[str, Any]) -> None:
    missing = httpx.get(f"{gateway.v1}/usage", timeout=30)
    assert missing.status_code == 401 and missing.json()["error"]["type"] == "authentication_error"
    as_admin = tenant_usage(gateway, ADMIN_KEY)  # the admin key is not an API key
    assert as_admin.status_code == 401 and "totals" not in as_admin.json()
    bad_group = tenant_usage(gateway, scripted["a1"]["key"], group_by="user")
    assert bad_group.status_code == 400 and bad_group.json()["error"]["param"] == "group_by"
    bad_format = tenant_usage(gateway, scripted["a1"]["key"], format="xml")
    assert bad_format.status_code == 400 and bad_format.json()["error"]["type"] == "invalid_request_error"
    with gateway.admin() as admin:
        bad_top = admin.get("/admin/usage", params={"top": 0})
    assert bad_top.status_code == 400 and bad_top.json()["error"]["type"] == "invalid_request_error"
