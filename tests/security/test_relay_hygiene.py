"""Class 11 (relay and pipeline parts): what a client sees is the gateway's promise, not the backend's.

The model name is the one the client asked for (not an alias's upstream name), a stream whose upstream sends
a non-JSON ``data:`` line ends with an in-band error and no ``[DONE]``, and a non-Bearer ``Authorization``
header (a proxy's Basic credentials) does not hide a key sent in ``X-API-Key``.
"""

from __future__ import annotations

import json

import httpx
from openai import OpenAI

from tests.support import Gateway

HELLO = [{"role": "user", "content": "hello there"}]


def _events(text: str) -> list[str]:
    return [line[6:] for line in text.splitlines() if line.startswith("data: ")]


def test_answers_name_the_model_the_client_asked_for(gateway: Gateway, api_key: str) -> None:
    client = OpenAI(base_url=gateway.v1, api_key=api_key)
    whole = client.chat.completions.create(model="gpt-public", messages=HELLO, max_tokens=3)  # type: ignore[arg-type]
    assert whole.model == "gpt-public"
    chunks = list(
        client.chat.completions.create(model="gpt-public", messages=HELLO, max_tokens=3, stream=True)  # type: ignore[arg-type]
    )
    assert chunks and {chunk.model for chunk in chunks} == {"gpt-public"}
    response = client.responses.create(model="gpt-public", input="hello there", max_output_tokens=3)
    assert response.model == "gpt-public"


def test_a_non_json_stream_event_ends_the_stream_with_an_error(gateway: Gateway, api_key: str) -> None:
    body = {"model": "mock-gpt", "messages": HELLO, "stream": True, "mock": {"bad_event": True, "chunks": 5}}
    response = httpx.post(
        f"{gateway.v1}/chat/completions", json=body, headers={"Authorization": f"Bearer {api_key}"}, timeout=30
    )
    assert response.status_code == 200
    events = _events(response.text)
    assert "this is not json" not in response.text
    assert "[DONE]" not in events
    assert json.loads(events[-1])["error"]["code"] == "upstream_invalid_stream"


def test_basic_authorization_does_not_hide_an_x_api_key(gateway: Gateway, api_key: str) -> None:
    headers = {"Authorization": "Basic dXNlcjpwYXNz", "X-API-Key": api_key}
    body = {"model": "mock-gpt", "messages": HELLO, "max_tokens": 2}
    response = httpx.post(f"{gateway.v1}/chat/completions", json=body, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    missing = httpx.post(f"{gateway.v1}/chat/completions", json=body, headers={"Authorization": "Basic eDp5"})
    assert missing.status_code == 401


def test_an_in_band_upstream_error_never_carries_the_backend_credential(gateway: Gateway, api_key: str) -> None:
    body = {"model": "mock-gpt", "messages": HELLO, "stream": True, "mock": {"error_event": True, "chunks": 3}}
    response = httpx.post(
        f"{gateway.v1}/chat/completions", json=body, headers={"Authorization": f"Bearer {api_key}"}, timeout=30
    )
    assert response.status_code == 200
    errors = [json.loads(e)["error"] for e in _events(response.text) if e != "[DONE]" and "error" in json.loads(e)]
    assert errors and "overloaded while serving" in errors[0]["message"]  # the meaning still comes through
    assert "upstream-secret-abc123" not in response.text  # mock_config's backend key
