"""Class 1: what the upstream can be made to generate is bounded by what was reserved.

Each attack is a request crafted to reserve little while the upstream generates a lot: a small length field
beside a large one (in whichever field the server's dialect reads), several choices, ``best_of``, no length
field at all. Fired 200 at a time against a key with a budget or a TPM limit, the ledger must never show
more spent than allowed. An upstream that ignores the forwarded cap is billed in full, the key is refused
until the excess is paid, and the overshoot is counted.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx

from tests.support import Gateway

HELLO = [{"role": "user", "content": "hello there"}]
MANY = 4000  # tokens the mock generates unless a length field it reads stops it


def _attacks() -> list[tuple[str, dict[str, Any]]]:
    """(endpoint, body) pairs; each would generate ~MANY tokens against a small-looking reservation."""
    chat = {"model": "pricey", "messages": HELLO, "mock": {"chunks": MANY}}
    return [
        ("chat/completions", {**chat, "max_tokens": MANY, "max_output_tokens": 1}),
        (
            "chat/completions",
            {
                **chat,
                "max_tokens": MANY,
                "max_completion_tokens": 1,
                "mock": {"chunks": MANY, "length_field": "max_tokens"},
            },
        ),  # Ollama's dialect: only max_tokens is read
        ("chat/completions", {**chat, "max_tokens": 500, "n": 8}),
        ("chat/completions", chat),  # no length field: the model's maximum output
        ("chat/completions", {**chat, "stream": True, "max_tokens": MANY, "max_output_tokens": 1}),
        (
            "completions",
            {"model": "pricey", "prompt": "hello there", "max_tokens": 500, "best_of": 8, "mock": {"chunks": MANY}},
        ),
        (
            "responses",
            {
                "model": "pricey",
                "input": "hello there",
                "max_output_tokens": 1,
                "max_tokens": MANY,
                "mock": {"chunks": MANY},
            },
        ),
    ]


async def _fire(gateway: Gateway, key: str, requests: list[tuple[str, dict[str, Any]]]) -> list[int]:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(
        base_url=gateway.v1, headers={"Authorization": f"Bearer {key}"}, timeout=60, limits=limits
    ) as client:

        async def one(endpoint: str, body: dict[str, Any]) -> int:
            response = await client.post(f"/{endpoint}", json=body)
            if body.get("stream") and response.status_code == 200:
                assert "[DONE]" in response.text
            return response.status_code

        return await asyncio.gather(*(one(endpoint, body) for endpoint, body in requests))


def _ledger(gateway: Gateway, key_id: str) -> list[dict[str, Any]]:
    with gateway.admin() as admin:
        response = admin.get("/admin/usage/records", params={"key_id": key_id, "limit": 10_000})
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


def _key_usage(gateway: Gateway, key_id: str) -> dict[str, Any]:
    with gateway.admin() as admin:
        return dict(admin.get(f"/admin/keys/{key_id}").json()["usage"])


def test_200_crafted_requests_never_spend_more_than_the_budget(gateway: Gateway) -> None:
    budget = 20.0  # USD; "pricey" costs $0.002 per output token, so ~MANY tokens cost ~$8: two or three fit
    tenant = gateway.create_tenant("budget-attack")
    key = gateway.create_key(tenant["id"], budget_usd=budget, budget_period="total")
    attacks = _attacks()
    statuses = asyncio.run(_fire(gateway, key["key"], [attacks[i % len(attacks)] for i in range(200)]))
    assert set(statuses) <= {200, 429}, statuses
    assert 200 in statuses, "no request was admitted: the test would prove nothing"
    records = _ledger(gateway, key["id"])
    spent = sum(record["cost_usd"] for record in records)
    assert 0 < spent <= budget, f"spent {spent} USD against a {budget} USD budget"
    assert _key_usage(gateway, key["id"])["spent_usd"] <= budget


def test_each_admitted_request_generated_no_more_than_it_reserved(gateway: Gateway) -> None:
    """One at a time, so every attack is admitted: the reply is bounded by the cap the gateway forwarded."""
    tenant = gateway.create_tenant("cap-attack")
    key = gateway.create_key(tenant["id"], budget_usd=1000.0, budget_period="total")
    for endpoint, body in _attacks():
        statuses = asyncio.run(_fire(gateway, key["key"], [(endpoint, body)]))
        assert statuses == [200], (endpoint, body, statuses)
    records = _ledger(gateway, key["id"])
    assert len(records) == len(_attacks())
    for record in records:
        # The largest length field was MANY (or 500 x 8 choices, or the default 4096): never more than that.
        assert record["completion_tokens"] <= 4096, record


def test_200_crafted_requests_never_exceed_the_tpm_limit(gateway: Gateway) -> None:
    tpm = 1000
    tenant = gateway.create_tenant("tpm-attack")
    key = gateway.create_key(tenant["id"], tpm=tpm)
    crafted = [(e, {**b, "model": "mock-gpt"}) for e, b in _attacks()]
    honest = ("chat/completions", {"model": "mock-gpt", "messages": HELLO, "max_tokens": 20, "mock": {"chunks": 20}})
    mix = [crafted[i % len(crafted)] if i % 4 else honest for i in range(200)]
    statuses = asyncio.run(_fire(gateway, key["key"], mix))
    assert set(statuses) <= {200, 429}, statuses
    assert 200 in statuses
    used = sum(r["prompt_tokens"] + r["completion_tokens"] for r in _ledger(gateway, key["id"]))
    assert 0 < used <= tpm, f"{used} tokens in one window against a TPM of {tpm}"


def _overshoot_total(gateway: Gateway) -> float:
    text = httpx.get(f"{gateway.url}/metrics").text
    match = re.search(r'^tenantgate_reservation_overshoot_total\{kind="tokens"\} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def test_an_upstream_that_ignores_the_cap_is_billed_in_full_and_the_key_is_then_refused(gateway: Gateway) -> None:
    tenant = gateway.create_tenant("overshoot")
    key = gateway.create_key(tenant["id"], budget_usd=1.0, budget_period="total")
    before = _overshoot_total(gateway)
    body = {"model": "pricey", "messages": HELLO, "max_tokens": 10, "mock": {"chunks": MANY, "length_field": "none"}}
    assert asyncio.run(_fire(gateway, key["key"], [("chat/completions", body)])) == [200]
    records = _ledger(gateway, key["id"])
    assert [r["completion_tokens"] for r in records] == [MANY]  # what the upstream reported, not the cap
    assert records[0]["cost_usd"] > 1.0
    assert _overshoot_total(gateway) >= before + MANY - 10 - 1000  # the excess beyond the reservation
    honest = {"model": "pricey", "messages": HELLO, "max_tokens": 1}
    assert asyncio.run(_fire(gateway, key["key"], [("chat/completions", honest)])) == [429]
