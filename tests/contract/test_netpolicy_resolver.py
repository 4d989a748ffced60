"""PolicyResolver inside a real aiohttp client talking to a real aiohttp server on 127.0.0.1.

The loopback server stands in for an internal service: when the policy refuses loopback and the host is
restricted, the connection must never be made; otherwise the same request must succeed (so a failure means the
policy, not a broken setup).
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from tenantgate.backends.netpolicy import BackendURLRefused, NetworkPolicy, PolicyResolver, check_backend_url

NO_LOOPBACK = NetworkPolicy(allow_loopback=False)
LOOPBACK = NetworkPolicy(allow_loopback=True)


@pytest.fixture()
async def port() -> AsyncIterator[int]:
    hits: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(text="internal secret")

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


async def get(resolver: AbstractResolver, url: str) -> str:
    connector = aiohttp.TCPConnector(resolver=resolver, family=socket.AF_INET, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session, session.get(url) as response:
        return await response.text()


async def test_restricted_localhost_is_refused_when_loopback_is_not_allowed(port: int) -> None:
    resolver = PolicyResolver(NO_LOOPBACK, {"localhost"})
    with pytest.raises((aiohttp.ClientConnectorError, aiohttp.ClientOSError)) as info:
        await get(resolver, f"http://localhost:{port}/")
    assert "loopback address 127.0.0.1 is not allowed" in str(info.value)


async def test_restriction_follows_the_callers_set(port: int) -> None:
    restricted: set[str] = set()
    resolver = PolicyResolver(NO_LOOPBACK, restricted)
    assert await get(resolver, f"http://localhost:{port}/") == "internal secret"
    restricted.add("localhost")  # registered afterwards: the next lookup (new connector, no DNS cache) is checked
    with pytest.raises((aiohttp.ClientConnectorError, aiohttp.ClientOSError)):
        await get(PolicyResolver(NO_LOOPBACK, restricted), f"http://localhost:{port}/")


async def test_restricted_localhost_connects_when_loopback_is_allowed(port: int) -> None:
    assert await get(PolicyResolver(LOOPBACK, {"localhost"}), f"http://localhost:{port}/") == "internal secret"


class Rebinding(AbstractResolver):
    """Answers a public address first (registration time), then loopback (connection time): DNS rebinding."""

    def __init__(self) -> None:
        self.answers = ["93.184.216.34", "127.0.0.1"]
        self.calls = 0

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        address = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        return [ResolveResult(hostname=host, host=address, port=port, family=socket.AF_INET, proto=0, flags=0)]

    async def close(self) -> None:
        return None

    async def as_callable(self, host: str, port: int) -> list[str]:
        return [result["host"] for result in await self.resolve(host, port)]


async def test_rebinding_passes_registration_but_the_connection_is_blocked(port: int) -> None:
    url = f"http://rebind.example:{port}/"
    dns = Rebinding()
    await check_backend_url(NO_LOOPBACK, url, dns.as_callable)  # public answer: registration accepts it
    with pytest.raises((aiohttp.ClientConnectorError, aiohttp.ClientOSError)) as info:
        await get(PolicyResolver(NO_LOOPBACK, {"rebind.example"}, resolver=dns), url)
    assert "network policy refuses host 'rebind.example'" in str(info.value)
    assert dns.calls == 2
    with pytest.raises(BackendURLRefused, match="loopback"):  # the rebound answer, had it been checked then
        await check_backend_url(NO_LOOPBACK, url, dns.as_callable)


async def test_without_the_resolver_the_rebinding_reaches_the_internal_service(port: int) -> None:
    """The control for the test above: the attack is real when the host is not restricted."""
    dns = Rebinding()
    await check_backend_url(NO_LOOPBACK, f"http://rebind.example:{port}/", dns.as_callable)
    body = await get(PolicyResolver(NO_LOOPBACK, set(), resolver=dns), f"http://rebind.example:{port}/")
    assert body == "internal secret"


async def test_refused_answers_are_dropped_and_allowed_ones_kept() -> None:
    class Mixed(Rebinding):
        async def resolve(
            self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
        ) -> list[ResolveResult]:
            return [
                ResolveResult(hostname=host, host=ip, port=port, family=socket.AF_INET, proto=0, flags=0)
                for ip in ("127.0.0.1", "93.184.216.34", "169.254.169.254")
            ]

    resolver = PolicyResolver(NO_LOOPBACK, {"mixed.example"}, resolver=Mixed())
    assert [r["host"] for r in await resolver.resolve("mixed.example", 80)] == ["93.184.216.34"]
    assert [r["host"] for r in await resolver.resolve("MIXED.example.", 80)] == ["93.184.216.34"]
    assert len(await resolver.resolve("other.example", 80)) == 3
