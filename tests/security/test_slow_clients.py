"""Issue 9, class 4: slow clients must not hold sockets forever nor lock new clients out.

Written as the attack against a real ``tenantgate serve``: thousands of connections that send nothing, their
headers a byte at a time, or a body slowly (or not at all), plus idle keep-alive connections. The gateway is
started with its soft open-file limit at 1,024, as on a stock machine, so it must raise the limit itself to
hold them. Every time bound below is a generous margin around a configured timeout, never a performance
target.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support import Gateway, Process, mock_config, start_gateway

HEADER_TIMEOUT = 3.0
BODY_TIMEOUT = 3.0
BODY_TOTAL_TIMEOUT = 5.0
KEEPALIVE_TIMEOUT = 1.5
MARGIN = 10.0  # closing thousands of sockets on a busy 2-core machine: generous
DRIP_EVERY = 0.3
KINDS = ("silent", "header_drip", "body_silent", "body_drip", "keepalive_idle")
EXPECTED_CLOSE = {
    "silent": HEADER_TIMEOUT,
    "header_drip": HEADER_TIMEOUT,
    "body_silent": BODY_TIMEOUT,
    "body_drip": BODY_TOTAL_TIMEOUT,
    "keepalive_idle": KEEPALIVE_TIMEOUT,
}


def raise_own_open_files() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def metric(gateway: Gateway, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    prefix = f"{name}{{{wanted}}} " if wanted else f"{name} "
    for line in httpx.get(f"{gateway.url}/metrics").text.splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    return 0.0


def open_file_limits(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open-file limit in /proc")


@dataclass
class Slow:
    kind: str
    opened: float = 0.0
    closed: float | None = None


async def hold(port: int, slow: Slow, key: str, gate: asyncio.Semaphore, ready: list[int]) -> None:
    """Open one slow connection, behave as ``slow.kind`` says, and note when the server closes it."""
    async with gate:
        slow.opened = time.monotonic()  # before connecting: never later than the server's accept
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    ready.append(1)
    auth = f"authorization: Bearer {key}\r\n"
    drip = b""
    if slow.kind == "header_drip":
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\n")
        drip = b"x-slow: " + b"a" * 200
    elif slow.kind in ("body_silent", "body_drip"):
        head = f"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\n{auth}content-type: application/json\r\n"
        writer.write(f"{head}content-length: 1000\r\n\r\n".encode() + b'{"model": "mock-gpt", ')
        drip = b" " * 900 if slow.kind == "body_drip" else b""
    elif slow.kind == "keepalive_idle":
        writer.write(b"GET /health/live HTTP/1.1\r\nhost: gw\r\n\r\n")
    try:
        if slow.kind == "keepalive_idle":
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            length = next(int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length"))
            await reader.readexactly(length)
        for byte in drip:
            writer.write(bytes([byte]))
            try:
                await asyncio.wait_for(reader.read(65536), DRIP_EVERY)
                break  # an answer (a 408) or EOF: the server is closing the connection
            except TimeoutError:
                continue
        while await reader.read(65536):
            pass
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        slow.closed = time.monotonic()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def served(gateway: Gateway, key: str) -> bool:
    with httpx.Client(base_url=gateway.url, timeout=15) as client:
        health = client.get("/health/live")
        models = client.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
    return health.status_code == 200 and models.status_code == 200


@pytest.fixture(scope="module")
def slow_gateway(mock: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("slow")
    gateway = start_gateway(
        f"sqlite+aiosqlite:///{tmp / 'tg.db'}",
        tmp,
        mock_config(mock.port),
        open_files=1024,  # a stock soft limit: the gateway has to raise it to hold thousands of sockets
        TENANTGATE_CLIENT_HEADER_TIMEOUT=str(HEADER_TIMEOUT),
        TENANTGATE_CLIENT_BODY_TIMEOUT=str(BODY_TIMEOUT),
        TENANTGATE_CLIENT_BODY_TOTAL_TIMEOUT=str(BODY_TOTAL_TIMEOUT),
        TENANTGATE_KEEPALIVE_TIMEOUT=str(KEEPALIVE_TIMEOUT),
    )
    yield gateway
    gateway.process.stop()


async def test_thousands_of_slow_connections_are_closed_while_new_clients_are_served(slow_gateway: Gateway) -> None:
    soft, hard = open_file_limits(slow_gateway.process.proc.pid)
    assert soft == hard, "serve must raise its soft open-file limit to the hard limit"
    key = slow_gateway.new_key("slow-co")
    count = min(3000, raise_own_open_files() - 500, hard - 500)
    assert count >= 1500, "not enough file descriptors here to mount the attack"
    slow = [Slow(KINDS[i % len(KINDS)]) for i in range(count)]
    ready: list[int] = []
    gate = asyncio.Semaphore(256)
    started = time.monotonic()
    tasks = [asyncio.create_task(hold(slow_gateway.process.port, s, key, gate, ready)) for s in slow]
    while len(ready) < count:
        assert time.monotonic() - started < 30, f"only {len(ready)} of {count} slow connections opened"
        await asyncio.sleep(0.05)

    # While they are open, a new client is served.
    assert await asyncio.to_thread(served, slow_gateway, key), "a new client was not served"
    still_open = sum(s.closed is None for s in slow)
    assert still_open >= count // 2, f"only {still_open} slow connections were open when the new client was served"

    # And each kind is closed by the server, after its own timeout.
    done, pending = await asyncio.wait(tasks, timeout=BODY_TOTAL_TIMEOUT + MARGIN + 10)
    for task in pending:
        task.cancel()
    assert not pending, f"{len(pending)} slow connections were never closed"
    for task in done:
        task.result()
    for s in slow:
        assert s.closed is not None
        held = s.closed - s.opened
        expected = EXPECTED_CLOSE[s.kind]
        assert expected - 0.25 <= held <= expected + MARGIN, f"{s.kind} connection closed after {held:.1f}s"
    assert metric(slow_gateway, "tenantgate_connections_closed_total", reason="header_timeout") >= 2 * (count // 5)
    assert metric(slow_gateway, "tenantgate_connections_closed_total", reason="body_timeout") >= 2 * (count // 5)
    assert served(slow_gateway, key)


async def test_at_the_connection_cap_the_oldest_waiting_connections_make_room(mock: Process, tmp_path: Path) -> None:
    """With the cap reached by idle sockets, newcomers still get in, and a request being served is not cut."""
    cap, flood = 200, 700
    raise_own_open_files()
    gateway = start_gateway(
        f"sqlite+aiosqlite:///{tmp_path / 'tg.db'}",
        tmp_path,
        mock_config(mock.port),
        TENANTGATE_MAX_CONNECTIONS=str(cap),
        TENANTGATE_CLIENT_HEADER_TIMEOUT="60",  # nothing times out during the test: only the cap closes
    )
    try:
        key = gateway.new_key("cap-co")
        body = {"model": "mock-gpt", "stream": True, "messages": [{"role": "user", "content": "x"}]}
        body["mock"] = {"chunks": 20, "chunk_delay": 0.15}
        async with httpx.AsyncClient(base_url=gateway.v1, timeout=30) as client:
            async with client.stream(
                "POST", "/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
            ) as stream:
                lines = stream.aiter_lines()
                first = await anext(lines)
                slow = [Slow("silent") for _ in range(flood)]
                ready: list[int] = []
                gate = asyncio.Semaphore(64)
                tasks = [asyncio.create_task(hold(gateway.process.port, s, key, gate, ready)) for s in slow]
                deadline = time.monotonic() + 20
                while len(ready) < flood or sum(s.closed is not None for s in slow) < flood - cap:
                    assert time.monotonic() < deadline, (len(ready), sum(s.closed is not None for s in slow))
                    await asyncio.sleep(0.05)
                assert await asyncio.to_thread(served, gateway, key), "a new client was not served at the cap"
                rest = [line async for line in lines]
            assert first.startswith("data: ") and "data: [DONE]" in rest, "the request being served was cut"
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert metric(gateway, "tenantgate_connections_closed_total", reason="evicted") >= flood - cap
    finally:
        gateway.process.stop()
