"""Stream failure modes: upstream dying mid-stream, clients disconnecting, stalled upstreams."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.support import Gateway, Process, mock_config, start_gateway

MESSAGES = [{"role": "user", "content": "one two three four"}]


def sse_lines(gateway: Gateway, key: str, body: dict[str, object]) -> list[str]:
    with httpx.stream(
        "POST", f"{gateway.v1}/chat/completions", json=body, timeout=15, headers={"Authorization": f"Bearer {key}"}
    ) as response:
        assert response.status_code == 200
        return [line for line in response.iter_lines() if line]


def test_upstream_death_mid_stream_gives_error_event_and_no_done(gateway: Gateway, api_key: str) -> None:
    body = {"model": "mock-gpt", "messages": MESSAGES, "stream": True, "mock": {"die_after": 3}}
    lines = sse_lines(gateway, api_key, body)
    assert "data: [DONE]" not in lines
    assert '"error"' in lines[-1] and "upstream_stream" in lines[-1]
    contents = [line for line in lines if '"content"' in line]
    assert len(contents) >= 3, "the delivered part must reach the client before the error"


def test_sdk_raises_on_mid_stream_death(gateway: Gateway, api_key: str) -> None:
    client = openai.OpenAI(base_url=gateway.v1, api_key=api_key)
    stream = client.chat.completions.create(
        model="mock-gpt",
        messages=MESSAGES,
        stream=True,  # type: ignore[arg-type]
        extra_body={"mock": {"die_after": 2}},
    )
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass


def _raw_stream_request(port: int, key: str, body: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock.sendall(head + body)
    return sock


def _wait_stats(mock_stats: httpx.Client, field: str, value: int, timeout: float = 5.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        stats: dict[str, object] = mock_stats.get("/_mock/stats").json()
        if stats[field] == value or time.monotonic() > deadline:
            return stats
        time.sleep(0.05)


@pytest.mark.parametrize(
    "fault",
    [
        b'{"chunk_delay": 0.5, "chunks": 40}',  # a slow stream
        b'{"stall": true}',  # the upstream sends nothing more: the gateway must still notice the client leave
    ],
)
def test_client_disconnect_cancels_upstream(
    gateway: Gateway, api_key: str, mock_stats: httpx.Client, fault: bytes
) -> None:
    body = (
        b'{"model": "mock-gpt", "stream": true, "messages": [{"role": "user", "content": "x"}], "mock": ' + fault + b"}"
    )
    sock = _raw_stream_request(gateway.process.port, api_key, body)
    assert b"200" in sock.recv(4096)
    assert _wait_stats(mock_stats, "in_flight", 1)["in_flight"] == 1
    sock.close()
    stats = _wait_stats(mock_stats, "cancelled", 1, timeout=2.0)
    assert stats["cancelled"] == 1 and stats["in_flight"] == 0, stats


@pytest.fixture(scope="module")
def short_timeout_gateway(mock: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp: Path = tmp_path_factory.mktemp("short-timeout")
    gw = start_gateway(
        f"sqlite+aiosqlite:///{tmp / 'tg.db'}", tmp, mock_config(mock.port), TENANTGATE_UPSTREAM_READ_TIMEOUT="0.5"
    )
    yield gw
    gw.process.stop()


def test_slow_upstream_is_504(short_timeout_gateway: Gateway) -> None:
    key = short_timeout_gateway.new_key("timeout-tenant")
    response = httpx.post(
        f"{short_timeout_gateway.v1}/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "mock-gpt", "messages": MESSAGES, "mock": {"ttft": 2}},
        timeout=10,
    )
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"


def test_stalled_stream_ends_with_error_event(short_timeout_gateway: Gateway) -> None:
    key = short_timeout_gateway.new_key("stall-tenant")
    lines = sse_lines(
        short_timeout_gateway, key, {"model": "mock-gpt", "messages": MESSAGES, "stream": True, "mock": {"stall": True}}
    )
    assert "data: [DONE]" not in lines
    assert "upstream_timeout" in lines[-1]
