"""Idempotency-Key: replays without a second upstream call or charge, 422 on a different body, and stream
resumption by a second connection while the upstream generates once."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import httpx
import openai

from tests.support import Gateway, Process

BODY = {"model": "mock-gpt", "messages": [{"role": "user", "content": "exactly once please"}]}


def completions_seen(mock: Process) -> int:
    return int(httpx.get(f"{mock.url}/_mock/stats").json()["requests"].get("/v1/chat/completions", 0))


def usage_records(gateway: Gateway, key_id: str) -> list[dict[str, Any]]:
    with gateway.admin() as admin:
        return list(admin.get("/admin/usage/records", params={"key_id": key_id}).json()["data"])


def post(gateway: Gateway, key: str, body: dict[str, Any], idem: str, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.v1}/chat/completions",
        json=body,
        timeout=30,
        headers={"Authorization": f"Bearer {key}", "Idempotency-Key": idem, **headers},
    )


def test_plain_replay_is_not_charged_twice(gateway: Gateway, mock: Process) -> None:
    tenant = gateway.create_tenant("idem-plain")
    key = gateway.create_key(tenant["id"])
    before = completions_seen(mock)
    first = post(gateway, key["key"], BODY, "order-1")
    second = post(gateway, key["key"], BODY, "order-1")
    assert first.status_code == second.status_code == 200
    assert second.json() == first.json()
    assert second.headers["idempotent-replayed"] == "true"
    assert completions_seen(mock) == before + 1
    assert len(usage_records(gateway, key["id"])) == 1
    other_body = post(gateway, key["key"], {**BODY, "temperature": 1}, "order-1")
    assert other_body.status_code == 422 and other_body.json()["error"]["code"] == "idempotency_key_reused"
    # The SDK sends the header through extra_headers and gets the same answer.
    client = openai.OpenAI(base_url=gateway.v1, api_key=key["key"])
    replay = client.chat.completions.create(
        model="mock-gpt",
        messages=BODY["messages"],  # type: ignore[arg-type]
        extra_headers={"Idempotency-Key": "order-1"},
    )
    assert replay.id == first.json()["id"]


def test_failed_requests_are_not_stored(gateway: Gateway) -> None:
    tenant = gateway.create_tenant("idem-failed")
    key = gateway.create_key(tenant["id"])
    failing = post(gateway, key["key"], {**BODY, "mock": {"status": 500}}, "k-fail")
    assert failing.status_code == 502
    invalid = post(gateway, key["key"], {**BODY, "max_tokens": -1}, "k-invalid")
    assert invalid.status_code == 400
    assert post(gateway, key["key"], {**BODY, "max_tokens": 3}, "k-invalid").status_code == 200
    assert post(gateway, key["key"], {**BODY, "mock": {"status": 500}}, "k-fail").status_code == 502


async def test_concurrent_copies_reach_the_upstream_once(gateway: Gateway, mock: Process) -> None:
    tenant = gateway.create_tenant("idem-race")
    key = gateway.create_key(tenant["id"])
    before = completions_seen(mock)
    body = {**BODY, "mock": {"ttft": 0.5}}
    async with httpx.AsyncClient(
        base_url=gateway.v1, timeout=30, headers={"Authorization": f"Bearer {key['key']}", "Idempotency-Key": "race-1"}
    ) as client:
        responses = await asyncio.gather(*(client.post("/chat/completions", json=body) for _ in range(8)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) >= 1 and set(statuses) <= {200, 409}
    assert all(r.headers.get("retry-after") for r in responses if r.status_code == 409)
    assert completions_seen(mock) == before + 1
    assert len(usage_records(gateway, key["id"])) == 1


def test_stream_replay_and_resumption_after_a_network_cut(gateway: Gateway, mock: Process) -> None:
    tenant = gateway.create_tenant("idem-stream")
    key = gateway.create_key(tenant["id"])
    before = completions_seen(mock)
    body = {**BODY, "stream": True, "mock": {"chunks": 30, "chunk_delay": 0.05}}
    raw = httpx.Request("POST", f"{gateway.v1}/chat/completions", json=body).content
    # First connection: read a few events, then the "network drops".
    sock = socket.create_connection(("127.0.0.1", gateway.process.port))
    sock.sendall(
        (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key['key']}\r\n"
            f"Idempotency-Key: conf-42\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(raw)}\r\n\r\n"
        ).encode()
        + raw
    )
    received = b""
    while received.count(b"\nid: ") + received.startswith(b"id: ") < 5 and b"id: 4\n" not in received:
        received += sock.recv(65536)
    sock.close()
    # Second connection, same key and body, resuming after the last event it saw.
    with httpx.stream(
        "POST",
        f"{gateway.v1}/chat/completions",
        json=body,
        timeout=30,
        headers={"Authorization": f"Bearer {key['key']}", "Idempotency-Key": "conf-42", "Last-Event-ID": "4"},
    ) as resumed:
        assert resumed.status_code == 200
        lines = [line for line in resumed.iter_lines() if line]
    ids = [int(line[4:]) for line in lines if line.startswith("id: ")]
    assert ids and ids[0] == 5 and ids == list(range(5, 5 + len(ids)))
    assert lines[-1] == "data: [DONE]"
    assert completions_seen(mock) == before + 1, "the upstream generated once"
    # A later retry replays the whole finished stream, still without calling the upstream.
    with httpx.stream(
        "POST",
        f"{gateway.v1}/chat/completions",
        json=body,
        timeout=30,
        headers={"Authorization": f"Bearer {key['key']}", "Idempotency-Key": "conf-42"},
    ) as again:
        replayed = [line for line in again.iter_lines() if line]
    text = "".join(line for line in replayed if '"content"' in line)
    assert replayed[-1] == "data: [DONE]" and text.count('"content":"exactly') == 10
    assert completions_seen(mock) == before + 1
    deadline = time.monotonic() + 3
    while not (records := usage_records(gateway, key["id"])):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert len(records) == 1 and records[0]["status"] == 200 and records[0]["completion_tokens"] == 30
