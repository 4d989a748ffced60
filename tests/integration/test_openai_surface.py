"""The OpenAI surface, driven by the official openai SDK (sync and async, plain and streaming)."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.support import Gateway

MESSAGES = [{"role": "user", "content": "tell me about gateways"}]


def test_chat_plain_sync(gateway: Gateway, api_key: str) -> None:
    client = openai.OpenAI(base_url=gateway.v1, api_key=api_key)
    reply = client.chat.completions.create(model="mock-gpt", messages=MESSAGES)  # type: ignore[arg-type]
    assert reply.choices[0].message.content == "tell me about gateways tell me about gateways"
    assert reply.usage is not None and reply.usage.completion_tokens == 8
    assert reply.usage.prompt_tokens > 0


async def test_chat_plain_async(gateway: Gateway, api_key: str) -> None:
    async with openai.AsyncOpenAI(base_url=gateway.v1, api_key=api_key) as client:
        reply = await client.chat.completions.create(model="mock-small", messages=MESSAGES, max_tokens=3)  # type: ignore[arg-type]
    assert reply.choices[0].message.content == "tell me about"
    assert reply.choices[0].finish_reason == "length"


def test_stream_without_include_usage_strips_usage_chunk(gateway: Gateway, api_key: str) -> None:
    client = openai.OpenAI(base_url=gateway.v1, api_key=api_key)
    chunks = list(client.chat.completions.create(model="mock-gpt", messages=MESSAGES, stream=True))  # type: ignore[arg-type]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "tell me about gateways tell me about gateways"
    assert all(c.usage is None for c in chunks), "the usage-only chunk the gateway asked for must be stripped"
    assert all(c.choices for c in chunks)


async def test_stream_with_include_usage_keeps_usage_chunk(gateway: Gateway, api_key: str) -> None:
    async with openai.AsyncOpenAI(base_url=gateway.v1, api_key=api_key) as client:
        stream = await client.chat.completions.create(
            model="mock-gpt",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},  # type: ignore[arg-type]
        )
        chunks = [chunk async for chunk in stream]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8


def test_stream_arrives_chunk_by_chunk(gateway: Gateway, api_key: str) -> None:
    """With 0.2 s between upstream chunks, the first event must reach the client long before the last."""
    body = {"model": "mock-gpt", "messages": MESSAGES, "stream": True, "mock": {"chunk_delay": 0.2, "chunks": 5}}
    headers = {"Authorization": f"Bearer {api_key}"}
    import time

    arrivals = []
    with httpx.stream("POST", f"{gateway.v1}/chat/completions", json=body, headers=headers, timeout=10) as resp:
        for line in resp.iter_lines():
            if line.startswith("data:"):
                arrivals.append(time.monotonic())
    assert len(arrivals) >= 6
    assert arrivals[-1] - arrivals[0] > 0.6, "events were buffered and delivered together"


def test_completions_plain_and_stream(gateway: Gateway, api_key: str) -> None:
    client = openai.OpenAI(base_url=gateway.v1, api_key=api_key)
    reply = client.completions.create(model="mock-gpt", prompt="once upon a time")
    assert reply.choices[0].text.startswith("once upon a time")
    assert reply.usage is not None and reply.usage.completion_tokens == 8
    text = "".join(
        c.choices[0].text for c in client.completions.create(model="mock-gpt", prompt="a b", stream=True) if c.choices
    )
    assert text.split() == ["a", "b"] * 4


def test_embeddings(gateway: Gateway, api_key: str) -> None:
    client = openai.OpenAI(base_url=gateway.v1, api_key=api_key)
    result = client.embeddings.create(model="mock-embed", input=["one", "two words"])
    assert [item.index for item in result.data] == [0, 1]
    assert len(result.data[0].embedding) == 8
    assert result.usage.prompt_tokens > 0


def test_responses_plain_and_stream(gateway: Gateway, api_key: str) -> None:
    client = openai.OpenAI(base_url=gateway.v1, api_key=api_key)
    reply = client.responses.create(model="mock-gpt", input="hello responses api")
    assert reply.output_text.startswith("hello responses api")
    assert reply.usage is not None and reply.usage.output_tokens == 8
    events = list(client.responses.create(model="mock-gpt", input="hi", stream=True))
    assert events[-1].type == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta").split() == ["hi"] * 8


def test_models_lists_only_allowed(gateway: Gateway) -> None:
    tenant = gateway.create_tenant("models-tenant")
    limited = gateway.create_key(tenant["id"], models=["mock-small"])["key"]
    everything = gateway.create_key(tenant["id"])["key"]
    ids = [m.id for m in openai.OpenAI(base_url=gateway.v1, api_key=everything).models.list()]
    assert ids == ["gpt-public", "mock-embed", "mock-gpt", "mock-small", "pricey"]
    limited_client = openai.OpenAI(base_url=gateway.v1, api_key=limited)
    assert [m.id for m in limited_client.models.list()] == ["mock-small"]
    assert limited_client.models.retrieve("mock-small").id == "mock-small"
    with pytest.raises(openai.NotFoundError):
        limited_client.models.retrieve("mock-gpt")


def test_x_api_key_header_and_request_id(gateway: Gateway, api_key: str) -> None:
    response = httpx.post(
        f"{gateway.v1}/chat/completions",
        headers={"X-API-Key": api_key},
        json={"model": "mock-gpt", "messages": MESSAGES},
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"].startswith("req_")
    assert httpx.get(f"{gateway.url}/health").headers["x-request-id"]


def test_unknown_fields_forwarded_and_model_rewritten(gateway: Gateway, api_key: str, mock_stats: httpx.Client) -> None:
    client = openai.OpenAI(base_url=gateway.v1, api_key=api_key)
    client.chat.completions.create(
        model="gpt-public",
        messages=MESSAGES,  # type: ignore[arg-type]
        extra_body={"vendor_option": {"x": 1}},
        seed=7,
    )
    last = mock_stats.get("/_mock/stats").json()["last_body"]
    assert last["model"] == "mock-gpt"
    assert last["vendor_option"] == {"x": 1} and last["seed"] == 7


def test_client_key_never_reaches_upstream(gateway: Gateway, api_key: str, mock_stats: httpx.Client) -> None:
    client = openai.OpenAI(base_url=gateway.v1, api_key=api_key)
    client.chat.completions.create(model="mock-gpt", messages=MESSAGES)  # type: ignore[arg-type]
    list(client.chat.completions.create(model="mock-gpt", messages=MESSAGES, stream=True))  # type: ignore[arg-type]
    stats = mock_stats.get("/_mock/stats").json()
    assert stats["seen_authorization"] == ["Bearer upstream-secret-abc123"]
    assert api_key not in str(stats["last_headers"])


def test_health(gateway: Gateway) -> None:
    body = httpx.get(f"{gateway.url}/health").json()
    assert body["status"] == "ok" and body["database"] == "ok"
