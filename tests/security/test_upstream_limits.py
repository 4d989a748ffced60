"""Classes 9 and 10: an upstream's answer is bounded in memory, and a client that leaves frees its slot.

9: a non-streamed answer larger than ``max_upstream_body_bytes`` is refused with a clear 502 rather than
buffered whole, and that does not count against the backend's health (the request asked for it).
10: a client that disconnects from a slow non-streamed request cancels the upstream call at once, frees its
concurrency slot, and is recorded as 499, not as a success.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import Gateway, Process, mock_config, start_gateway

HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def capped(mock: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp: Path = tmp_path_factory.mktemp("capped")
    gw = start_gateway(
        f"sqlite+aiosqlite:///{tmp / 'tg.db'}",
        tmp,
        mock_config(mock.port),
        TENANTGATE_MAX_UPSTREAM_BODY_BYTES=str(64 * 1024),
    )
    yield gw
    gw.process.stop()


def test_an_oversized_upstream_answer_is_a_502_not_a_buffer(capped: Gateway) -> None:
    key = capped.new_key("big-answers")
    headers = {"Authorization": f"Bearer {key}"}
    big = {"model": "mock-gpt", "messages": HELLO, "mock": {"chunks": 50_000}}  # ~600 KB of JSON
    for _ in range(8):  # more than the failures that would eject a backend
        response = httpx.post(f"{capped.v1}/chat/completions", json=big, headers=headers, timeout=60)
        assert response.status_code == 502, response.text
        error = response.json()["error"]
        assert error["code"] == "upstream_response_too_large"
        assert "hello" not in response.text
    small = {"model": "mock-gpt", "messages": HELLO, "max_tokens": 3}
    response = httpx.post(f"{capped.v1}/chat/completions", json=small, headers=headers, timeout=60)
    assert response.status_code == 200, "the backend was treated as broken for an answer the client asked for"
    stream = httpx.post(f"{capped.v1}/chat/completions", json={**big, "stream": True}, headers=headers, timeout=60)
    assert stream.status_code == 200 and "[DONE]" in stream.text  # streams are relayed, never buffered whole


def test_a_client_leaving_a_slow_request_cancels_it_and_frees_its_slot(
    gateway: Gateway, mock_stats: httpx.Client
) -> None:
    tenant = gateway.create_tenant("leaver")
    key = gateway.create_key(tenant["id"], max_concurrency=1)
    headers = {"Authorization": f"Bearer {key['key']}"}
    slow = {"model": "mock-gpt", "messages": HELLO, "mock": {"ttft": 30}}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{gateway.v1}/chat/completions", json=slow, headers=headers, timeout=1.0)
    deadline = time.monotonic() + 10
    while mock_stats.get("/_mock/stats").json()["cancelled"] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mock_stats.get("/_mock/stats").json()["cancelled"] == 1, "the upstream call kept running"
    quick = {"model": "mock-gpt", "messages": HELLO, "max_tokens": 2}
    response = httpx.post(f"{gateway.v1}/chat/completions", json=quick, headers=headers, timeout=10)
    assert response.status_code == 200, f"the slot was still held: {response.text}"
    with gateway.admin() as admin:
        records = admin.get("/admin/usage/records", params={"key_id": key["id"]}).json()["data"]
    assert sorted(r["status"] for r in records) == [200, 499]
