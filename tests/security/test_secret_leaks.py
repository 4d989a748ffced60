"""Attack: make the upstream echo the gateway's credential in its error, and read it from the relayed answer.

The mock's ``echo_auth`` fault answers with the request's ``Authorization`` header in the message, ``param`` and
``code``, raw, URL-encoded, base64-encoded, inside a Basic header and as JSON, for any status. Whatever the
status, endpoint or stream flag, no response a tenant receives may carry the backend's secret in any of those
forms, nor anything shaped like a key; the meaning of a 4xx is still relayed.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import re
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import Gateway, Process, mock_config, start_gateway, start_mock

CONFIG_SECRET = "upstream-secret-abc123"  # the session mock's key: not key-shaped, only known exactly
# Registered through the admin API: key-shaped and full of characters that URL and JSON encode differently.
API_SECRET = 'sk-proj-Leak3dV4lue/with+plus=eq&amp%20pct"quote'
KEY_SHAPES = re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}|\btg-[a-z0-9]{12}-[A-Za-z0-9]{43}|Bearer [^\s*\"',;\\]{4,}")
ENDPOINTS: dict[str, dict[str, Any]] = {
    "chat/completions": {"messages": [{"role": "user", "content": "hi"}]},
    "completions": {"prompt": "hi"},
    "embeddings": {"input": "hi"},
    "responses": {"input": "hi"},
}
STATUSES = (400, 404, 409, 413, 422, 401, 403, 429, 500, 503)


def decoded_views(text: str) -> Iterator[str]:
    """The text as a client could read it: raw, URL-decoded, JSON-decoded, and every base64-looking run decoded."""
    yield text
    yield urllib.parse.unquote(text)
    yield urllib.parse.unquote_plus(text)
    with contextlib.suppress(ValueError):
        text_json = json.dumps(json.loads(text), ensure_ascii=False)
        yield text_json
    for run in re.findall(r"[A-Za-z0-9+/_\-]{8,}={0,2}", text):
        for shift in range(4):  # a secret may start anywhere inside a longer base64 run
            chunk = run[shift:].rstrip("=")
            chunk = chunk[: len(chunk) - len(chunk) % 4]
            for alphabet in (None, b"-_"):
                yield _b64(chunk, alphabet)


def _b64(chunk: str, alphabet: bytes | None) -> str:
    try:
        return base64.b64decode(chunk, altchars=alphabet, validate=False).decode("latin-1")
    except (binascii.Error, ValueError):
        return ""


def assert_no_secret(text: str, secrets: tuple[str, ...]) -> None:
    for view in decoded_views(text):
        for secret in secrets:
            assert secret not in view, f"backend secret leaked: {text[:300]}"
            # a long fragment is a leak too (anything the attacker can stitch back together)
            for start in range(0, len(secret) - 12, 6):
                assert secret[start : start + 12] not in view, f"backend secret fragment leaked: {text[:300]}"
    assert not KEY_SHAPES.search(text), f"key-shaped string relayed: {text[:300]}"


@pytest.fixture(scope="module")
def open_mock() -> Iterator[Process]:
    process = start_mock()  # accepts any key, so the API-registered backend's key reaches it
    yield process
    process.stop()


@pytest.fixture(scope="module")
def leaky(mock: Process, open_mock: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("leaks")
    gateway = start_gateway(f"sqlite+aiosqlite:///{tmp / 'tg.db'}", tmp, mock_config(mock.port))
    with gateway.admin() as admin:
        response = admin.post(
            "/admin/backends",
            json={
                "name": "leaky-api",
                "base_url": f"http://127.0.0.1:{open_mock.port}/v1",
                "api_key": API_SECRET,
                "models": [{"name": "leaky-model", "upstream_model": "mock-gpt"}],
            },
        )
        assert response.status_code == 201, response.text
    yield gateway
    gateway.process.stop()


@pytest.fixture(scope="module")
def tenant_key(leaky: Gateway) -> str:
    key = leaky.new_key("leak-attacker")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the registered backend reaches the catalog within the sync interval
        response = httpx.get(f"{leaky.v1}/models/leaky-model", headers={"Authorization": f"Bearer {key}"})
        if response.status_code == 200:
            return key
        time.sleep(0.1)
    raise AssertionError(f"leaky-model never appeared: {response.text}")


@pytest.mark.parametrize("model", ["mock-gpt", "leaky-model"])
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_upstream_errors_never_carry_backend_secrets(
    leaky: Gateway, tenant_key: str, model: str, stream: bool, endpoint: str
) -> None:
    secrets = (CONFIG_SECRET, API_SECRET)
    relayed_4xx = 0
    with httpx.Client(base_url=leaky.v1, headers={"Authorization": f"Bearer {tenant_key}"}, timeout=30) as client:
        for status in STATUSES:
            body = {"model": model, **ENDPOINTS[endpoint], "mock": {"echo_auth": True, "status": status}}
            if stream and endpoint != "embeddings":
                body["stream"] = True
            response = client.post(f"/{endpoint}", json=body)
            assert response.status_code >= 400, response.text
            assert_no_secret(response.text, secrets)
            assert_no_secret(" ".join(f"{k}: {v}" for k, v in response.headers.items()), secrets)
            if status in (400, 404, 409, 413, 422):
                assert response.status_code == status, response.text
                assert "Invalid request" in response.json()["error"]["message"]  # the meaning is still relayed
                relayed_4xx += 1
    assert relayed_4xx == 5


def test_the_mock_really_echoes_the_secret(open_mock: Process) -> None:
    """Guards the test above: without the gateway's scrubbing, the secret is in the body in every form."""
    response = httpx.post(
        f"{open_mock.url}/v1/chat/completions",
        json={"model": "mock-gpt", "messages": [{"role": "user", "content": "x"}], "mock": {"echo_auth": True}},
        headers={"Authorization": f"Bearer {API_SECRET}"},
    )
    assert response.status_code == 400
    with pytest.raises(AssertionError):
        assert_no_secret(response.text, (API_SECRET,))
    text = response.text
    assert urllib.parse.quote(f"Bearer {API_SECRET}", safe="") in text
    assert base64.b64encode(f"Bearer {API_SECRET}".encode()).decode() in text
