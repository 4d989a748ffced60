"""The split deployment over a link that breaks: clients → edge → (a cuttable TCP link) → core with mTLS.

The link is cut (listener closed, every open connection closed) for 2 s in the middle of 20 concurrent streams and
100 plain requests: every client still gets one complete, uncorrupted answer, the upstream generated each answer
once, and the core recorded exactly one usage record per request. A cut longer than the edge's resume timeout
gives an honest error: a 502, or an in-band error event and no ``[DONE]``."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.integration.test_tls import certs, start_tls_gateway, trust
from tests.support import ADMIN_KEY, LOG_DIR, Process, spawn, wait_port_file
from tests.tcp_proxy import TcpProxy

WORDS = 30


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("split-pki")
    assert certs("init", str(directory), "--host", "127.0.0.1", "--client", "edge").returncode == 0
    return directory


@pytest.fixture(scope="module")
def core(tmp_path_factory: pytest.TempPathFactory, mock: Process, pki: Path) -> Iterator[Process]:
    process = start_tls_gateway(tmp_path_factory.mktemp("core"), mock, pki, "--tls-client-ca", str(pki / "ca.crt"))
    yield process
    process.stop()


def start_edge(tmp: Path, pki: Path, core_port: int, resume_timeout: float) -> Process:
    port_file = tmp / f"edge-port-{time.monotonic_ns()}"
    log_path = LOG_DIR / f"edge-{time.monotonic_ns()}.log"
    argv = [sys.executable, "-m", "tenantgate.cli.main", "edge", "--core", f"https://127.0.0.1:{core_port}"]
    argv += ["--cert", str(pki / "edge.crt"), "--key", str(pki / "edge.key"), "--ca", str(pki / "ca.crt")]
    argv += ["--port", "0", "--port-file", str(port_file), "--resume-timeout", str(resume_timeout)]
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        proc = spawn(argv, stdout=log, stderr=subprocess.STDOUT)
    return Process(proc, wait_port_file(port_file, proc), log_path)


def core_admin(core: Process, pki: Path) -> httpx.Client:
    return httpx.Client(
        base_url=f"https://127.0.0.1:{core.port}",
        verify=trust(pki / "ca.crt", (pki / "edge.crt", pki / "edge.key")),
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
        timeout=30,
    )


def new_key(core: Process, pki: Path, name: str) -> tuple[str, str]:
    with core_admin(core, pki) as admin:
        tenant = admin.post("/admin/tenants", json={"name": name}).json()
        key = admin.post("/admin/keys", json={"tenant_id": tenant["id"]}).json()
    return tenant["id"], key["key"]


def body(stream: bool, **mock: float) -> dict[str, object]:
    words = " ".join(f"w{i}" for i in range(WORDS))
    return {"model": "mock-gpt", "messages": [{"role": "user", "content": words}], "stream": stream, "mock": mock}


async def stream_text(client: httpx.AsyncClient, **mock: float) -> tuple[str, bool, list[dict[str, object]]]:
    """The streamed text, whether it ended with [DONE], and any in-band errors."""
    text, done, errors = "", False, []
    async with client.stream("POST", "/v1/chat/completions", json=body(True, chunks=WORDS, **mock)) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                done = True
                continue
            event = orjson.loads(data)
            if "error" in event:
                errors.append(event["error"])
            for choice in event.get("choices") or []:
                text += choice["delta"].get("content") or ""
    return text, done, errors


def mock_requests(mock: Process) -> int:
    return int(httpx.get(f"{mock.url}/_mock/stats").json()["requests"].get("/v1/chat/completions", 0))


async def test_a_two_second_cut_is_invisible_to_clients(
    tmp_path: Path, mock: Process, core: Process, pki: Path
) -> None:
    link = TcpProxy("127.0.0.1", core.port).start()
    edge = start_edge(tmp_path, pki, link.port, resume_timeout=15)
    tenant_id, key = new_key(core, pki, "split-cut")
    expected = " ".join(f"w{i}" for i in range(WORDS))
    httpx.post(f"{mock.url}/_mock/reset")
    try:
        headers = {"authorization": f"Bearer {key}"}
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=edge.url, headers=headers, timeout=60, limits=limits) as client:

            async def plain() -> str:
                response = await client.post("/v1/chat/completions", json=body(False, chunks=WORDS, ttft=1.5))
                assert response.status_code == 200, response.text
                return str(response.json()["choices"][0]["message"]["content"])

            streams = [asyncio.create_task(stream_text(client, chunk_delay=0.1)) for _ in range(20)]
            plains = [asyncio.create_task(plain()) for _ in range(100)]
            await asyncio.sleep(1.0)  # streams are mid-way, plain requests are waiting for their first byte
            await asyncio.to_thread(link.cut)
            await asyncio.sleep(2.0)
            await asyncio.to_thread(link.start)
            stream_results = await asyncio.gather(*streams)
            plain_results = await asyncio.gather(*plains)
        for text, done, errors in stream_results:
            assert (text, done, errors) == (expected, True, [])  # complete, in order, no duplicate, no error
        assert plain_results == [expected] * 100
        assert mock_requests(mock) == 120  # each answer generated once, however often the edge asked
        with core_admin(core, pki) as admin:
            records = admin.get("/admin/usage/records", params={"tenant_id": tenant_id, "limit": 1000}).json()["data"]
        assert len(records) == 120 and all(record["status"] == 200 for record in records)
        assert "Traceback" not in edge.log_text()
    finally:
        edge.stop()
        link.close()


async def test_a_cut_longer_than_the_resume_timeout_is_an_honest_error(
    tmp_path: Path, core: Process, pki: Path
) -> None:
    link = TcpProxy("127.0.0.1", core.port).start()
    edge = start_edge(tmp_path, pki, link.port, resume_timeout=1.5)
    _, key = new_key(core, pki, "split-long-cut")
    try:
        async with httpx.AsyncClient(base_url=edge.url, headers={"authorization": f"Bearer {key}"}, timeout=60) as c:
            stream = asyncio.create_task(stream_text(c, chunk_delay=0.1))
            await asyncio.sleep(1.0)
            await asyncio.to_thread(link.cut)
            text, done, errors = await stream
            assert not done and text and len(text) < len(" ".join(f"w{i}" for i in range(WORDS)))
            assert [error["code"] for error in errors] == ["core_unreachable"]
            refused = await c.post("/v1/chat/completions", json=body(False))
            assert refused.status_code == 502 and refused.json()["error"]["code"] == "core_unreachable"
    finally:
        edge.stop()
        link.close()
