"""What the usage ledger records when the upstream step ends without an answer: a gateway fault is a 500, a
client that left is a 499, and either way the reservation is settled (the slot comes back)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from tenantgate.auth.authenticator import Principal
from tenantgate.config.file import GatewayConfig
from tenantgate.edge.disconnect import DisconnectWatch
from tenantgate.edge.metering import RequestTrace
from tenantgate.edge.pipeline import ProxyEndpoint
from tenantgate.edge.request import parse_request
from tenantgate.observability import GatewayMetrics
from tenantgate.routing.catalog import Deployment
from tenantgate.storage.rows import LimitFields

DEPLOYMENT = Deployment("b1", "backend-1", "http://127.0.0.1:1/v1", None, "m", "m", 1.0, 2.0)
NO_LIMITS = LimitFields(None, None, None, None, None)
PRINCIPAL = Principal("key_1", None, "ten_1", "tenant", None, NO_LIMITS, NO_LIMITS)


class _Admission:
    def __init__(self) -> None:
        self.settled: list[Any] = []

    async def reserve(self, *_: Any) -> str:
        return "ticket"

    def caps_output(self, _ticket: Any) -> bool:
        return False

    def headers(self, _ticket: Any) -> dict[str, str]:
        return {}

    async def settle(self, ticket: Any, tokens: int, cost: float) -> None:
        self.settled.append(ticket)


def _gateway(open_upstream: Any) -> tuple[Any, list[Any], _Admission]:
    records: list[Any] = []
    admission = _Admission()
    forwarder = SimpleNamespace(
        plan=lambda *_: [DEPLOYMENT], deadline=lambda _timeout: 0.0, open=open_upstream, health=None
    )
    gateway = SimpleNamespace(
        config=GatewayConfig(),
        settings=SimpleNamespace(log_bodies_tenants=[]),
        catalog=SimpleNamespace(current=None),
        admission=admission,
        forwarder=forwarder,
        usage=SimpleNamespace(record=records.append),
        metrics=GatewayMetrics(),
    )
    return gateway, records, admission


async def _run(open_upstream: Any) -> tuple[list[Any], _Admission, BaseException]:
    gateway, records, admission = _gateway(open_upstream)
    endpoint = ProxyEndpoint(gateway, "chat/completions")
    parsed = parse_request("chat/completions", orjson.dumps({"model": "m", "messages": [{"role": "user"}]}))

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()  # the client never leaves in these tests
        return {}

    watch = DisconnectWatch(receive)
    with pytest.raises(BaseException) as raised:
        await endpoint._run(PRINCIPAL, parsed, "req_1", None, RequestTrace("chat/completions"), watch)
    watch.stop()
    return records, admission, raised.value


async def test_a_gateway_fault_is_recorded_as_500_and_settles() -> None:
    async def broken(*_: Any) -> None:
        raise RuntimeError("a bug in the gateway")

    records, admission, raised = await _run(broken)
    assert isinstance(raised, RuntimeError)
    assert [r.status for r in records] == [500]
    assert admission.settled == ["ticket"]


async def test_a_cancelled_upstream_wait_is_recorded_as_499_and_settles() -> None:
    async def cancelled(*_: Any) -> None:
        raise asyncio.CancelledError

    records, admission, raised = await _run(cancelled)
    assert isinstance(raised, asyncio.CancelledError)
    assert [r.status for r in records] == [499]
    assert admission.settled == ["ticket"]
