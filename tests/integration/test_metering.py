"""Metering: one usage record per request, exact totals under concurrency, estimates when usage is missing."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import httpx
import openai

from tests.support import Gateway

MESSAGES = [{"role": "user", "content": "count these words please"}]


def usage(gateway: Gateway, **params: str) -> dict[str, Any]:
    with gateway.admin() as admin:
        response = admin.get("/admin/usage", params=params)
    assert response.status_code == 200, response.text
    return dict(response.json())


def records(gateway: Gateway, key_id: str) -> list[dict[str, Any]]:
    with gateway.admin() as admin:
        return list(admin.get("/admin/usage/records", params={"key_id": key_id}).json()["data"])


async def test_usage_totals_exact_after_50_concurrent_requests(gateway: Gateway) -> None:
    tenant = gateway.create_tenant("burst-tenant")
    created = gateway.create_key(tenant["id"])
    async with openai.AsyncOpenAI(base_url=gateway.v1, api_key=created["key"], max_retries=0) as client:

        async def one(index: int) -> Any:
            if index % 2:
                return await client.chat.completions.create(
                    model="mock-gpt",
                    messages=MESSAGES,  # type: ignore[arg-type]
                    max_tokens=1 + index % 7,
                )
            stream = await client.chat.completions.create(
                model="mock-gpt",
                messages=MESSAGES,
                stream=True,  # type: ignore[arg-type]
                stream_options={"include_usage": True},
            )
            return [chunk async for chunk in stream][-1]

        replies = await asyncio.gather(*(one(i) for i in range(50)))
    prompt = sum(r.usage.prompt_tokens for r in replies)
    completion = sum(r.usage.completion_tokens for r in replies)
    totals = usage(gateway, key_id=created["id"])["totals"]
    assert totals["requests"] == 50
    assert totals["prompt_tokens"] == prompt
    assert totals["completion_tokens"] == completion
    assert abs(totals["cost_usd"] - (prompt * 1.0 + completion * 2.0) / 1e6) < 1e-9
    by_tenant = usage(gateway, tenant_id=tenant["id"], group_by="model")
    assert by_tenant["by_model"] == [{"model": "mock-gpt", **totals}]


def test_record_fields_for_a_stream(gateway: Gateway) -> None:
    tenant = gateway.create_tenant("record-tenant")
    created = gateway.create_key(tenant["id"])
    client = openai.OpenAI(base_url=gateway.v1, api_key=created["key"])
    list(client.chat.completions.create(model="gpt-public", messages=MESSAGES, stream=True))  # type: ignore[arg-type]
    [record] = records(gateway, created["id"])
    assert record["model"] == "gpt-public" and record["backend"] == "mock-a"
    assert record["status"] == 200 and record["streamed"] and not record["estimated"]
    assert record["completion_tokens"] == 8 and record["prompt_tokens"] > 0
    assert record["cost_usd"] == (record["prompt_tokens"] * 3.0 + 8 * 4.0) / 1e6
    assert record["ttft_ms"] is not None and record["latency_ms"] >= record["ttft_ms"]
    assert record["tenant_id"] == tenant["id"] and record["request_id"].startswith("req_")


def test_missing_usage_is_estimated_offline(gateway: Gateway) -> None:
    tenant = gateway.create_tenant("estimate-tenant")
    created = gateway.create_key(tenant["id"])
    client = openai.OpenAI(base_url=gateway.v1, api_key=created["key"])
    plain = client.chat.completions.create(
        model="mock-gpt",
        messages=MESSAGES,  # type: ignore[arg-type]
        extra_body={"mock": {"omit_usage": True}},
    )
    assert plain.usage is None
    list(
        client.chat.completions.create(
            model="mock-gpt",
            messages=MESSAGES,
            stream=True,  # type: ignore[arg-type]
            extra_body={"mock": {"omit_usage": True}},
        )
    )
    found = records(gateway, created["id"])
    assert len(found) == 2
    for record in found:
        assert record["estimated"] is True
        assert record["completion_tokens"] >= 8  # eight words, at least one token each
        assert record["prompt_tokens"] >= 4


def test_failed_upstream_call_is_recorded(gateway: Gateway) -> None:
    tenant = gateway.create_tenant("failed-tenant")
    created = gateway.create_key(tenant["id"])
    response = httpx.post(
        f"{gateway.v1}/chat/completions",
        headers={"Authorization": f"Bearer {created['key']}"},
        json={"model": "mock-gpt", "messages": MESSAGES, "mock": {"status": 503}},
    )
    assert response.status_code == 502
    [record] = records(gateway, created["id"])
    assert record["status"] == 502 and record["completion_tokens"] == 0 and record["cost_usd"] == 0


def test_abandoned_stream_is_billed_for_what_was_delivered(gateway: Gateway) -> None:
    tenant = gateway.create_tenant("abandon-tenant")
    created = gateway.create_key(tenant["id"])
    body = (
        b'{"model": "mock-gpt", "stream": true, "messages": [{"role": "user", "content": "alpha"}],'
        b' "mock": {"chunk_delay": 0.1, "chunks": 50}}'
    )
    sock = socket.create_connection(("127.0.0.1", gateway.process.port))
    sock.sendall(
        (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {created['key']}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body
    )
    received = b""
    while received.count(b'"content":"alpha') < 4:
        received += sock.recv(65536)
    sock.close()
    deadline = time.monotonic() + 5
    while not (found := records(gateway, created["id"])):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    [record] = found
    assert record["status"] == 499
    assert record["estimated"] is True
    assert 4 <= record["completion_tokens"] < 50
