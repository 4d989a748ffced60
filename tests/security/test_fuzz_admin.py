"""Issue 9, class 8: a schema-driven fuzz pass over the admin API (and ``GET /v1/usage``), on SQLite and PostgreSQL.

Schemathesis reads the gateway's own ``/openapi.json`` and generates, for every operation, requests that follow
the schema (positive) and requests that break it (negative: wrong types, out-of-range numbers, NUL bytes and odd
unicode in strings and paths). The property: never a 5xx, and every error is an OpenAI-shaped JSON body.

Bounded and deterministic: ``derandomize`` fixes the examples, a fixed count per operation and mode keeps the
pass to a few seconds per database. Backend URLs are pointed at a closed loopback port before sending, so the
fuzzer never makes the gateway resolve or contact any other host.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st
from schemathesis.core.result import Ok
from schemathesis.generation import GenerationMode

from tests.pg import reset_postgres
from tests.support import ADMIN_KEY, Gateway, Process, mock_config, start_gateway

EXAMPLES_PER_MODE = 12
BACKENDS = [pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)]
CLOSED_LOOPBACK = "127.0.0.1:9"  # discard port, nothing listens: health probes fail at once, locally


@pytest.fixture(scope="module", params=BACKENDS)
def fuzz_gateway(
    request: pytest.FixtureRequest, mock: Process, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """A gateway of its own: the fuzzer creates and deletes tenants, keys and backends at random."""
    tmp: Path = tmp_path_factory.mktemp(f"fuzz-admin-{request.param}")
    url = f"sqlite+aiosqlite:///{tmp / 'tg.db'}" if request.param == "sqlite" else reset_postgres()
    gateway = start_gateway(url, tmp, mock_config(mock.port))
    yield gateway
    gateway.process.stop()


def _local_only(value: Any) -> Any:
    """Every string ``base_url`` that parses as a URL with a host is re-pointed at a closed loopback port."""
    if isinstance(value, dict):
        fixed = {key: _local_only(item) for key, item in value.items()}
        url = fixed.get("base_url")
        if isinstance(url, str):
            try:
                parts = urlsplit(url)
                has_host = bool(parts.hostname)
            except ValueError:
                has_host = False
            if has_host:
                fixed["base_url"] = urlunsplit((parts.scheme, CLOSED_LOOPBACK, parts.path, parts.query, ""))
        return fixed
    if isinstance(value, list):
        return [_local_only(item) for item in value]
    return value


def assert_no_5xx_and_openai_errors(response: httpx.Response, what: str) -> None:
    assert response.status_code < 500, f"{what} -> {response.status_code} {response.text[:500]}"
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body, dict) and set(body) == {"error"}, f"{what} -> {response.text[:500]}"
        error = body["error"]
        assert isinstance(error.get("message"), str) and error["message"], what
        assert isinstance(error.get("type"), str) and error["type"], what
        assert "param" in error and "code" in error, what


def fuzz_operation(client: httpx.Client, operation: Any, auth: dict[str, str]) -> int:
    """Send ``EXAMPLES_PER_MODE`` positive and as many negative examples of one operation; the number sent."""
    strategy = st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )
    sent = 0

    @settings(
        max_examples=2 * EXAMPLES_PER_MODE,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def fuzz(case: Any) -> None:
        nonlocal sent
        kwargs = case.as_transport_kwargs(base_url=str(client.base_url).rstrip("/"))
        headers = {**(kwargs.get("headers") or {}), **auth}
        headers.pop("Content-Length", None)
        body = kwargs.get("json")
        request = client.build_request(
            kwargs["method"],
            kwargs["url"],
            params=kwargs.get("params"),
            headers=headers,
            json=_local_only(body) if body is not None else None,
            content=kwargs.get("data") if body is None else None,
        )
        what = f"{request.method} {request.url} body={body!r}"
        note(what)
        try:
            response = client.send(request)
        except httpx.TransportError as exc:  # a dropped connection is no answer at all
            raise AssertionError(f"{what} -> no response ({exc!r})") from None
        sent += 1
        assert_no_5xx_and_openai_errors(response, what)

    fuzz()
    return sent


def personal_key(gateway: Gateway) -> str:
    """A person's key (for ``/me``): a user made by the admin, logged in, creating a key with its session."""
    with gateway.admin() as admin:
        made = admin.post("/admin/users", json={"email": "fuzz@example.org", "password": "fuzzing passphrase"})
        assert made.status_code == 201, made.text
    with httpx.Client(base_url=gateway.url) as client:
        login = client.post("/auth/login", json={"email": "fuzz@example.org", "password": "fuzzing passphrase"})
        created = client.post("/me/keys", json={"name": "fuzz"}, headers={"x-csrf-token": login.json()["csrf_token"]})
        assert created.status_code == 201, created.text
        return str(created.json()["key"])


def test_admin_api_never_answers_5xx(fuzz_gateway: Gateway) -> None:
    spec = httpx.get(f"{fuzz_gateway.url}/openapi.json").json()
    schema = schemathesis.openapi.from_dict(spec)
    api_key = fuzz_gateway.new_key("fuzz-tenant")
    personal = personal_key(fuzz_gateway)
    operations = [result.ok() for result in schema.get_all_operations() if isinstance(result, Ok)]
    assert len(operations) >= 15, [op.label for op in operations]
    sent = 0
    with httpx.Client(base_url=fuzz_gateway.url, timeout=30) as client:
        for operation in operations:
            key = api_key if operation.path.startswith("/v1/") else ADMIN_KEY  # /v1/usage takes a tenant's key
            if operation.path.startswith("/me"):
                key = personal  # the self-service API takes a person's key
            sent += fuzz_operation(client, operation, {"Authorization": f"Bearer {key}"})
    assert sent >= len(operations) * EXAMPLES_PER_MODE
