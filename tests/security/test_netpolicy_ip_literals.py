"""Attack: register backends by IP literal (and numeric-looking names) while loopback is allowed, then tighten
the policy and restart. The policy must hold on every connect, for requests and health probes alike.

aiohttp never asks a resolver about an IP literal, so a resolver-only check let these through. Each spelling
below reaches the loopback server when the policy allows it (so a refusal means the policy, not a broken
setup), and none of them may reach it when the host is restricted and loopback is not allowed.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from tenantgate.backends.netpolicy import NetworkPolicy, host_key
from tenantgate.backends.upstream import UpstreamClient, UpstreamFailure
from tenantgate.routing.catalog import Deployment
from tests.support import Gateway, Process, start_gateway, start_mock

# Every spelling that reaches 127.0.0.1 (or ::1) here; aiohttp itself refuses non-canonical IPv4 (127.1, 2130706433).
IPV4_SPELLINGS = ("127.0.0.1", "[::ffff:127.0.0.1]", "0x7f.0.0.1", "0x7f.1", "localhost")
IPV6_SPELLINGS = ("[::1]", "[0:0:0:0:0:0:0:1]")
NO_LOOPBACK = NetworkPolicy(allow_loopback=False)


@pytest.fixture()
async def loopback_server() -> AsyncIterator[tuple[int, int, list[str]]]:
    """One server on 127.0.0.1 and ::1 (an internal service); returns both ports and the paths it was asked for."""
    hits: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.json_response({"data": []})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    await web.TCPSite(runner, "::1", 0).start()
    try:
        yield int(runner.addresses[0][1]), int(runner.addresses[1][1]), hits
    finally:
        await runner.cleanup()


def deployment(base_url: str) -> Deployment:
    return Deployment("b1", "internal", base_url, None, "m", "m", 0.0, 0.0)


async def client(policy: NetworkPolicy | None, restricted: set[str]) -> UpstreamClient:
    upstream = UpstreamClient(
        connect_timeout=2, read_timeout=5, max_connections=10, network_policy=policy, restricted_hosts=restricted
    )
    await upstream.start()
    return upstream


def spellings(v4_port: int, v6_port: int) -> list[str]:
    return [f"http://{host}:{v4_port}/v1" for host in IPV4_SPELLINGS] + [
        f"http://{host}:{v6_port}/v1" for host in IPV6_SPELLINGS
    ]


async def test_every_spelling_reaches_the_server_when_allowed(loopback_server: tuple[int, int, list[str]]) -> None:
    v4, v6, hits = loopback_server
    urls = spellings(v4, v6)
    upstream = await client(NetworkPolicy(allow_loopback=True), {host_key(url) for url in urls})
    try:
        for url in urls:
            response = await upstream.post(deployment(url), "chat/completions", b"{}")
            response.release()
            await upstream.probe(url, None, 5)
    finally:
        await upstream.close()
    assert len(hits) == 2 * len(urls)


async def test_restricted_literals_are_refused_on_every_connect(loopback_server: tuple[int, int, list[str]]) -> None:
    v4, v6, hits = loopback_server
    urls = spellings(v4, v6)
    restricted: set[str] = set()
    upstream = await client(NO_LOOPBACK, restricted)
    try:
        # Connected (and pooled) while unrestricted, like a config-file backend...
        response = await upstream.post(deployment(urls[0]), "chat/completions", b"{}")
        response.release()
        assert len(hits) == 1
        # ...then every spelling is registered through the API (the set is read at each connect).
        restricted.update(host_key(url) for url in urls)
        await upstream.close()
        upstream = await client(NO_LOOPBACK, restricted)
        for url in urls:
            with pytest.raises(UpstreamFailure) as info:
                await upstream.post(deployment(url), "chat/completions", b"{}")
            assert info.value.kind == "connect"
            with pytest.raises(Exception, match="network policy refuses"):
                await upstream.probe(url, None, 5)
            with pytest.raises(Exception, match="network policy refuses"):
                await upstream.get_json(f"{url}/models", None)
    finally:
        await upstream.close()
    assert len(hits) == 1, f"the policy let a connection through: {hits}"


@pytest.mark.parametrize("host", ["127.1", "2130706433", "0177.0.0.1", "127.0.0.1.", "[::127.0.0.1]", "0.0.0.0"])
async def test_other_numeric_forms_never_connect(host: str, loopback_server: tuple[int, int, list[str]]) -> None:
    v4, _, hits = loopback_server
    url = f"http://{host}:{v4}/v1"
    upstream = await client(NO_LOOPBACK, {host_key(url)})
    try:
        with pytest.raises(UpstreamFailure):
            await upstream.post(deployment(url), "chat/completions", b"{}")
    finally:
        await upstream.close()
    assert hits == []


# --- The reported scenario, end to end: registered with loopback allowed, restarted with it disallowed ---------

ROUTING = "routing:\n  health_check_interval: 0.2\n  health_check_timeout: 1\n"


@pytest.fixture()
def internal() -> Iterator[Process]:
    process = start_mock()
    yield process
    process.stop()


def wait_model(gateway: Gateway, key: str, model: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if httpx.get(f"{gateway.v1}/models/{model}", headers={"Authorization": f"Bearer {key}"}).status_code == 200:
            return
        time.sleep(0.1)
    raise AssertionError(f"{model} never reached the catalog")


def test_tightened_policy_applies_to_ip_literal_backends_after_restart(internal: Process, tmp_path: Path) -> None:
    database = f"sqlite+aiosqlite:///{tmp_path / 'tg.db'}"
    hosts = {
        "lit-v4": "127.0.0.1",
        "lit-mapped": "[::ffff:127.0.0.1]",
        "lit-hex": "0x7f.0.0.1",
        "lit-name": "localhost",
    }
    chat = {"messages": [{"role": "user", "content": "hello"}]}

    permissive = start_gateway(database, tmp_path, ROUTING)
    try:
        key = permissive.new_key("literal-tenant")
        with permissive.admin() as admin:
            for model, host in hosts.items():
                response = admin.post(
                    "/admin/backends",
                    json={
                        "name": model,
                        "base_url": f"http://{host}:{internal.port}/v1",
                        "models": [{"name": model, "upstream_model": "mock-gpt"}],
                    },
                )
                assert response.status_code == 201, response.text
        for model in hosts:
            wait_model(permissive, key, model)
            response = httpx.post(
                f"{permissive.v1}/chat/completions",
                json={"model": model, **chat},
                headers={"Authorization": f"Bearer {key}"},
                timeout=30,
            )
            assert response.status_code == 200, f"{model}: {response.text}"  # reachable while allowed
    finally:
        permissive.process.stop()

    with httpx.Client(base_url=internal.url) as mock_admin:
        mock_admin.post("/_mock/reset")
    strict = start_gateway(database, tmp_path, ROUTING, TENANTGATE_BACKEND_ALLOW_LOOPBACK="false")
    try:
        for model in hosts:
            wait_model(strict, key, model)
            for _ in range(3):
                response = httpx.post(
                    f"{strict.v1}/chat/completions",
                    json={"model": model, **chat},
                    headers={"Authorization": f"Bearer {key}"},
                    timeout=30,
                )
                assert response.status_code >= 500, f"{model}: {response.text}"
        time.sleep(1.0)  # several health-check rounds
        with httpx.Client(base_url=internal.url) as mock_admin:
            stats = mock_admin.get("/_mock/stats").json()
    finally:
        strict.process.stop()
    assert stats["requests"] == {}, f"a disallowed backend was contacted: {stats['requests']}"
