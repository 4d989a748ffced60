"""Issue 9, class 3 (header part): the header section is capped (431, connection closed, counted), in one read
or trickled in pieces, and a 10 MB ``Authorization`` header neither reaches the application nor grows memory.

Against a real ``tenantgate serve`` with the default cap (32 KiB for the request line and all header fields).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import Gateway, Process, mock_config, start_gateway

CAP = 32 * 1024  # the default TENANTGATE_MAX_HEADER_BYTES
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def gateway_431(mock: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("headers")
    gateway = start_gateway(f"sqlite+aiosqlite:///{tmp / 'tg.db'}", tmp, mock_config(mock.port))
    yield gateway
    gateway.process.stop()


async def exchange(port: int, request: bytes, piece: int | None = None) -> tuple[int, bool]:
    """Send ``request`` (in ``piece``-byte writes if given); the answer's status and whether it closed after."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        with contextlib.suppress(ConnectionError):
            if piece is None:
                writer.write(request)
                await writer.drain()
            else:
                for start in range(0, len(request), piece):
                    writer.write(request[start : start + piece])
                    await writer.drain()
                    await asyncio.sleep(0.001)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        status = int(head.split(b" ", 2)[1])
        length = next(int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length"))
        await reader.readexactly(length)
        try:
            closed = await asyncio.wait_for(reader.read(1), 2) == b""  # under the 5 s keep-alive
        except ConnectionError:
            closed = True
        except TimeoutError:
            closed = False
        return status, closed
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def request(*headers: tuple[str, str], path: str = "/v1/models") -> bytes:
    lines = [f"GET {path} HTTP/1.1", "host: gw", *(f"{name}: {value}" for name, value in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def rejected_count(gateway: Gateway) -> float:
    for line in httpx.get(f"{gateway.url}/metrics").text.splitlines():
        if line.startswith('tenantgate_connections_closed_total{reason="header_too_large"} '):
            return float(line.split()[-1])
    return 0.0


def memory_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(rest.split()[0])
    return fields


async def test_headers_over_the_cap_get_431_and_the_connection_closes(gateway_431: Gateway) -> None:
    port = gateway_431.process.port
    key = gateway_431.new_key("hdr-co")
    before = rejected_count(gateway_431)
    big = "a" * (CAP + 1024)
    attacks = {
        "one big header, one read": (request(("authorization", f"Bearer {big}")), None),
        "one big header, trickled": (request(("authorization", f"Bearer {big}")), 700),
        "many small headers": (request(*((f"x-h{i}", "v" * 40) for i in range(1000))), None),
        "a huge URL": (request(path="/v1/models?q=" + big), None),
        "big header then a body in the same read": (
            request(("x-big", big), ("content-length", "5")).replace(b"GET", b"POST") + b"hello",
            None,
        ),
    }
    for name, (raw, piece) in attacks.items():
        assert await exchange(port, raw, piece) == (431, True), name
    assert rejected_count(gateway_431) - before == len(attacks)

    # Under the cap: served as usual (the key is valid, the padding header is ignored).
    near = request(("authorization", f"Bearer {key}"), ("x-pad", "p" * (CAP - 1024)))
    status, closed = await exchange(port, near)
    assert status == 200 and not closed
    with httpx.Client(base_url=gateway_431.url) as client:
        assert client.get("/health/live").status_code == 200
        # A big body is not a big header: a request whose headers and body arrive in one read is served.
        body = {"model": "mock-gpt", "messages": [{"role": "user", "content": "x" * (4 * CAP)}]}
        answer = client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
        assert answer.status_code == 200, answer.text


async def test_a_10mb_authorization_header_does_not_grow_memory(gateway_431: Gateway) -> None:
    pid = gateway_431.process.proc.pid
    port = gateway_431.process.port
    huge = request(("authorization", "Bearer " + "k" * (10 * MIB)))
    assert await exchange(port, huge) == (431, True)  # warm-up: buffers the first attack allocates stay
    before = memory_kib(pid)
    results = await asyncio.gather(*(exchange(port, huge) for _ in range(10)))
    after = memory_kib(pid)
    assert results == [(431, True)] * 10
    # Ten 10 MB headers at once: buffering any one of them whole would show; 32 MiB is a generous margin for
    # the reads in flight and the allocator.
    grown_mib = (after["VmHWM"] - before["VmHWM"]) / 1024
    assert grown_mib < 32, f"peak RSS grew by {grown_mib:.0f} MiB"
    assert httpx.get(f"{gateway_431.url}/health/live").status_code == 200
