"""Attack: with body logging on for a tenant, hide credentials in request bodies and look for them in the logs.

Secrets go under credential-named fields (any case and separator) at any depth of dicts and lists, and as
key-shaped strings inside free text. None may reach a log line; the body itself is still logged (the feature
works), and the gateway keeps answering. The bodies are generated from a fixed seed, so a failure reproduces.
"""

from __future__ import annotations

import json
import random
import string
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import Gateway, Process, mock_config, start_gateway

FIELD_NAMES = (
    "authorization",
    "Authorization",
    "api_key",
    "apiKey",
    "API-KEY",
    "x-api-key",
    "X-Api-Key",
    "password",
    "db_password",
    "secret",
    "client_secret",
    "token",
    "access_token",
    "refreshToken",
    "id_token",
    "github_token",
    "cookie",
    "Set-Cookie",
    "key",
    "private_key",
    "credentials",
)


def random_secret(rng: random.Random) -> str:
    return "Zq" + "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(22))


def shaped(rng: random.Random, secret: str) -> str:
    """A key-shaped string carrying ``secret`` (what a user pastes into a prompt)."""
    return rng.choice(
        [
            f"sk-{secret}",
            f"sk-ant-api03-{secret}",
            f"sk-proj-{secret}",
            f"Bearer {secret}",
            f"tg-{secret[:12].lower()}-{secret}",
        ]
    )


def nest(rng: random.Random, value: Any, depth: int) -> Any:
    for _ in range(depth):
        value = rng.choice([[value], {"wrap": value}, {"items": ["noise", value, 3]}, {"meta": {"inner": value}}])
    return value


def crafted_body(rng: random.Random, secrets: list[str]) -> dict[str, Any]:
    named = random_secret(rng)
    in_text = random_secret(rng)
    secrets += [named, in_text]
    field = rng.choice(FIELD_NAMES)
    return {
        "model": "mock-gpt",
        "messages": [
            {"role": "system", "content": "visible-marker please keep this text"},
            {"role": "user", "content": f"here is my key {shaped(rng, in_text)} ok?"},
        ],
        "metadata": nest(rng, {field: named, "visible": "visible-marker"}, rng.randint(0, 10)),
    }


@pytest.fixture(scope="module")
def logging_gateway(mock: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, str]]:
    tmp = tmp_path_factory.mktemp("bodylog")
    database = f"sqlite+aiosqlite:///{tmp / 'tg.db'}"
    first = start_gateway(database, tmp, mock_config(mock.port))
    try:
        tenant = first.create_tenant("logged-tenant")
        key = str(first.create_key(tenant["id"])["key"])
    finally:
        first.process.stop()
    gateway = start_gateway(
        database, tmp, mock_config(mock.port), TENANTGATE_LOG_BODIES_TENANTS=json.dumps([tenant["id"]])
    )
    yield gateway, key
    gateway.process.stop()


def request_lines(gateway: Gateway, count: int) -> list[str]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = [line for line in gateway.process.log_text().splitlines() if '"request_body"' in line]
        if len(lines) >= count:
            return lines
        time.sleep(0.05)
    raise AssertionError(f"expected {count} body log lines:\n{gateway.process.log_text()[-2000:]}")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_secrets_in_logged_bodies_are_masked_at_any_depth(logging_gateway: tuple[Gateway, str], seed: int) -> None:
    gateway, key = logging_gateway
    rng = random.Random(seed)
    secrets: list[str] = []
    before = len(request_lines(gateway, 0))
    with httpx.Client(base_url=gateway.v1, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
        for _ in range(30):
            response = client.post("/chat/completions", json=crafted_body(rng, secrets))
            assert response.status_code == 200, response.text
    lines = request_lines(gateway, before + 30)
    log = gateway.process.log_text()
    for secret in secrets:
        assert secret not in log, f"secret {secret} logged: {[line for line in lines if secret in line][:1]}"
    assert key not in log
    new_lines = lines[before:]
    assert all("visible-marker please keep this text" in line for line in new_lines)  # bodies are still logged
    assert all(json.loads(line)["request_body"]["model"] == "mock-gpt" for line in new_lines)


def test_a_huge_logged_body_is_bounded_in_the_log(logging_gateway: tuple[Gateway, str]) -> None:
    """A body with very many fields and a long string must not become a huge log line."""
    gateway, key = logging_gateway
    before = len(request_lines(gateway, 0))
    body = {
        "model": "mock-gpt",
        "messages": [{"role": "user", "content": "x " * 200_000}],
        "metadata": {f"field{i}": [i, {"password": f"pw-{i}-secret-value"}] for i in range(20_000)},
    }
    response = httpx.post(
        f"{gateway.v1}/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=60
    )
    assert response.status_code == 200, response.text
    line = request_lines(gateway, before + 1)[before]
    assert len(line) < 400_000, len(line)  # the body is ~1.4 MB of JSON
    assert "secret-value" not in line
