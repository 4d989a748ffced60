"""Every bad input gets an OpenAI-shaped JSON error with the right status; no 500s, no stack traces."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import openai
import pytest

from tests.support import Gateway

MESSAGES = [{"role": "user", "content": "hi"}]


def post(
    gateway: Gateway,
    key: str | None,
    body: Any = None,
    *,
    content: bytes | None = None,
    path: str = "chat/completions",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    all_headers = {"Authorization": f"Bearer {key}"} if key else {}
    all_headers.update(headers or {})
    if content is None:
        return httpx.post(f"{gateway.v1}/{path}", json=body, headers=all_headers, timeout=30)
    return httpx.post(f"{gateway.v1}/{path}", content=content, headers=all_headers, timeout=30)


def assert_error(response: httpx.Response, status: int, code: str | None = None, param: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "Traceback" not in error["message"]
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    assert response.headers.get("x-request-id")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "mock-gpt", "messages": "hi"}, "messages"),
        ({"model": "mock-gpt", "messages": []}, "messages"),
        ({"model": "mock-gpt", "messages": MESSAGES, "max_tokens": 0}, "max_tokens"),
        ({"model": "mock-gpt", "messages": MESSAGES, "max_tokens": "12"}, "max_tokens"),
        ({"model": "mock-gpt", "messages": MESSAGES, "max_tokens": True}, "max_tokens"),
        ({"model": "mock-gpt", "messages": MESSAGES, "stream": "yes"}, "stream"),
        ({"model": "mock-gpt", "messages": MESSAGES, "temperature": 7}, "temperature"),
        ({"messages": MESSAGES}, "model"),
        ({"model": 12, "messages": MESSAGES}, "model"),
    ],
)
def test_invalid_parameters_are_400_with_param(gateway: Gateway, api_key: str, body: Any, param: str) -> None:
    assert_error(post(gateway, api_key, body), 400, param=param)


def test_malformed_json_and_non_object(gateway: Gateway, api_key: str) -> None:
    assert_error(post(gateway, api_key, content=b'{"model": "mock-gpt",'), 400, code="invalid_json")
    assert_error(post(gateway, api_key, content=b"[1, 2]"), 400, code="invalid_json")
    assert_error(post(gateway, api_key, content=b"\xff\xfe"), 400, code="invalid_json")


def test_embeddings_and_completions_validation(gateway: Gateway, api_key: str) -> None:
    assert_error(post(gateway, api_key, {"model": "mock-embed"}, path="embeddings"), 400, param="input")
    assert_error(
        post(gateway, api_key, {"model": "mock-embed", "input": "x", "stream": True}, path="embeddings"),
        400,
        param="stream",
    )
    assert_error(post(gateway, api_key, {"model": "mock-gpt"}, path="completions"), 400, param="prompt")


def test_missing_and_bad_keys_are_401(gateway: Gateway, api_key: str) -> None:
    body = {"model": "mock-gpt", "messages": MESSAGES}
    assert_error(post(gateway, None, body), 401, code="missing_api_key")
    assert_error(post(gateway, "tg-nosuchid-secret", body), 401, code="invalid_api_key")
    assert_error(post(gateway, api_key[:-2] + "xx", body), 401, code="invalid_api_key")
    assert_error(post(gateway, "not-a-gateway-key", body), 401, code="invalid_api_key")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=gateway.v1, api_key="tg-abc-def", max_retries=0).models.list()


def test_revoked_key_refused_within_a_second(gateway: Gateway) -> None:
    tenant = gateway.create_tenant("revoke-tenant")
    created = gateway.create_key(tenant["id"])
    body = {"model": "mock-gpt", "messages": MESSAGES}
    assert post(gateway, created["key"], body).status_code == 200  # now cached
    with gateway.admin() as admin:
        assert admin.delete(f"/admin/keys/{created['id']}").json()["revoked"] is True
    deadline = time.monotonic() + 1.0
    while post(gateway, created["key"], body).status_code == 200:
        assert time.monotonic() < deadline, "revoked key still accepted after 1 s"
    assert_error(post(gateway, created["key"], body), 401, code="revoked_api_key")


def test_expired_key_is_401(gateway: Gateway) -> None:
    tenant = gateway.create_tenant("expiry-tenant")
    soon = datetime.now(UTC) + timedelta(seconds=1)
    created = gateway.create_key(tenant["id"], expires_at=soon.isoformat())
    body = {"model": "mock-gpt", "messages": MESSAGES}
    assert post(gateway, created["key"], body).status_code == 200
    time.sleep(max(0.0, (soon - datetime.now(UTC)).total_seconds()) + 0.1)
    assert_error(post(gateway, created["key"], body), 401, code="expired_api_key")


def test_model_outside_allowlist_answers_like_a_model_that_does_not_exist(gateway: Gateway) -> None:
    """A key must not learn which models exist beyond its allowlist: both answers are the same 404."""
    tenant = gateway.create_tenant("allow-tenant")
    key = gateway.create_key(tenant["id"], models=["mock-small"])["key"]
    hidden = post(gateway, key, {"model": "mock-gpt", "messages": MESSAGES})
    missing = post(gateway, key, {"model": "no-such-model", "messages": MESSAGES})
    assert_error(hidden, 404, code="model_not_found", param="model")
    assert_error(missing, 404, code="model_not_found", param="model")
    assert hidden.json()["error"]["message"].replace("mock-gpt", "X") == missing.json()["error"]["message"].replace(
        "no-such-model", "X"
    )
    assert post(gateway, key, {"model": "mock-small", "messages": MESSAGES}).status_code == 200


def test_oversize_body_is_413(gateway: Gateway, api_key: str) -> None:
    big = b'{"model": "mock-gpt", "messages": [{"role": "user", "content": "' + b"a" * (9 * 1024 * 1024) + b'"}]}'
    assert_error(post(gateway, api_key, content=big), 413, code="request_too_large")

    def chunked() -> Any:  # no Content-Length: the cap must hold while reading
        for _ in range(10):
            yield b"a" * (1024 * 1024)

    response = httpx.post(
        f"{gateway.v1}/chat/completions", content=chunked(), headers={"Authorization": f"Bearer {api_key}"}, timeout=30
    )
    assert_error(response, 413, code="request_too_large")


def test_upstream_failure_is_502_without_upstream_body(gateway: Gateway, api_key: str) -> None:
    response = post(gateway, api_key, {"model": "mock-gpt", "messages": MESSAGES, "mock": {"status": 500}})
    assert_error(response, 502, code="upstream_error")
    message = response.json()["error"]["message"]
    assert "Injected" not in message, "the upstream's error body must not reach the client"
    assert "mock-a" in message and "500" in message


def test_upstream_4xx_is_relayed_as_client_error(gateway: Gateway, api_key: str) -> None:
    response = post(gateway, api_key, {"model": "mock-gpt", "messages": MESSAGES, "mock": {"status": 400}})
    assert_error(response, 400)


def test_unknown_path_and_method(gateway: Gateway, api_key: str) -> None:
    assert_error(httpx.get(f"{gateway.url}/v1/nothing-here"), 404)
    response = httpx.get(f"{gateway.v1}/chat/completions", headers={"Authorization": f"Bearer {api_key}"})
    assert_error(response, 405)
