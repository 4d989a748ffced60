"""The mock upstream behaves like an OpenAI provider (checked with the official SDK) and its faults work."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import struct
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from tenantgate.mock.common import STATS_KEY, MockOptions, MockStats
from tenantgate.mock.serve import start_mock

CHAT: list[Any] = [{"role": "system", "content": "Be brief"}, {"role": "user", "content": "alpha beta gamma"}]
# 8 words cycled from the last user message; prompt = (2 + 3) + (3 + 3) words+framing.
REPLY = "alpha beta gamma alpha beta gamma alpha beta"
USAGE = {"prompt_tokens": 11, "completion_tokens": 8, "total_tokens": 19}


@dataclass
class Mock:
    runner: Any
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def stats(self) -> MockStats:
        stats: MockStats = self.runner.app[STATS_KEY]
        return stats


@contextlib.asynccontextmanager
async def _started(options: MockOptions) -> AsyncIterator[Mock]:
    runner, port = await start_mock(options)
    try:
        yield Mock(runner, port)
    finally:
        await runner.cleanup()


@pytest.fixture
async def upstream() -> AsyncIterator[Mock]:
    async with _started(MockOptions()) as started:
        yield started


@pytest.fixture
async def sdk(upstream: Mock) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=f"{upstream.url}/v1", api_key="x", max_retries=0)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _events(resp: aiohttp.ClientResponse) -> list[bytes]:
    """The raw SSE events of a response, in order, including a final ``[DONE]`` if one was sent."""
    body = await resp.read()
    return [e for e in body.split(b"\n\n") if e]


def _data(event: bytes) -> Any:
    line = next(x for x in event.split(b"\n") if x.startswith(b"data: "))
    return orjson.loads(line[6:]) if line != b"data: [DONE]" else "[DONE]"


async def _wait_for(predicate: Callable[[], bool]) -> None:
    """Stats change when the server notices a disconnect, a moment after the client acts."""
    for _ in range(200):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached within 2s")


# --- OpenAI compatibility, through the official SDK -------------------------------------------------------


async def test_models_list_and_retrieve(sdk: openai.AsyncOpenAI) -> None:
    page = await sdk.models.list()
    assert [m.id for m in page.data] == ["mock-gpt", "mock-small", "mock-embed"]
    assert all(m.owned_by == "mock" and m.object == "model" for m in page.data)
    assert (await sdk.models.retrieve("mock-small")).id == "mock-small"
    with pytest.raises(openai.NotFoundError) as err:
        await sdk.models.retrieve("gpt-nope")
    assert err.value.code == "model_not_found"


async def test_chat_plain(sdk: openai.AsyncOpenAI) -> None:
    done = await sdk.chat.completions.create(model="mock-small", messages=CHAT)
    assert done.object == "chat.completion" and done.id.startswith("chatcmpl-")
    assert done.model == "mock-small"
    assert done.choices[0].message.role == "assistant"
    assert done.choices[0].message.content == REPLY
    assert done.choices[0].finish_reason == "stop"
    assert done.usage is not None and done.usage.model_dump(include=set(USAGE)) == USAGE


async def test_chat_max_tokens_cuts_with_length(sdk: openai.AsyncOpenAI) -> None:
    done = await sdk.chat.completions.create(model="mock-gpt", messages=CHAT, max_tokens=3)
    assert done.choices[0].message.content == "alpha beta gamma"
    assert done.choices[0].finish_reason == "length"
    assert done.usage is not None and done.usage.completion_tokens == 3
    done = await sdk.chat.completions.create(
        model="mock-gpt",
        messages=CHAT,
        max_completion_tokens=2,
    )
    assert done.choices[0].message.content == "alpha beta"


async def test_chat_stream_without_usage(sdk: openai.AsyncOpenAI) -> None:
    stream = await sdk.chat.completions.create(model="mock-gpt", messages=CHAT, stream=True)
    chunks = [c async for c in stream]
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].choices[0].delta.content == ""
    words = [c.choices[0].delta.content for c in chunks[1:-1]]
    assert len(words) == 8 and "".join(w or "" for w in words) == REPLY
    assert words[0] == "alpha " and words[-1] == "beta"
    assert chunks[-1].choices[0].finish_reason == "stop" and chunks[-1].choices[0].delta.content is None
    assert all(c.usage is None and c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1


async def test_chat_stream_include_usage(sdk: openai.AsyncOpenAI, upstream: Mock, http: aiohttp.ClientSession) -> None:
    stream = await sdk.chat.completions.create(
        model="mock-gpt",
        messages=CHAT,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.model_dump(include=set(USAGE)) == USAGE
    assert chunks[-2].choices[0].finish_reason == "stop"

    # On the wire, every earlier chunk carries an explicit "usage": null, and [DONE] closes the stream.
    body = {"model": "mock-gpt", "messages": CHAT, "stream": True, "stream_options": {"include_usage": True}}
    async with http.post(f"{upstream.url}/v1/chat/completions", json=body) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = [_data(e) for e in await _events(resp)]
    assert events[-1] == "[DONE]"
    assert all("usage" in e and e["usage"] is None for e in events[:-2])
    assert events[-2]["usage"] == USAGE


async def test_completions_plain_and_stream(sdk: openai.AsyncOpenAI) -> None:
    done = await sdk.completions.create(model="mock-gpt", prompt="one two three", max_tokens=5)
    assert done.object == "text_completion" and done.id.startswith("cmpl-")
    assert done.choices[0].text == "one two three one two"
    assert done.choices[0].finish_reason == "length"
    assert done.usage is not None and (done.usage.prompt_tokens, done.usage.completion_tokens) == (3, 5)

    stream = await sdk.completions.create(
        model="mock-gpt", prompt="one two three", stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "one two three one two three one two"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8


async def test_embeddings_deterministic_in_both_encodings(
    sdk: openai.AsyncOpenAI, upstream: Mock, http: aiohttp.ClientSession
) -> None:
    # The SDK asks for base64 unless an encoding is given, so this covers both wire formats.
    b64 = await sdk.embeddings.create(model="mock-embed", input=["hello world", "other", "hello world"])
    flt = await sdk.embeddings.create(model="mock-embed", input=["hello world"], encoding_format="float")
    vectors = [d.embedding for d in b64.data]
    assert [d.index for d in b64.data] == [0, 1, 2]
    assert all(len(v) == 8 for v in vectors)
    assert vectors[0] == vectors[2] == flt.data[0].embedding
    assert vectors[0] != vectors[1]
    assert abs(sum(x * x for x in vectors[0]) - 1.0) < 1e-5
    assert b64.usage.prompt_tokens == 5 and b64.usage.total_tokens == 5
    body = {"model": "mock-embed", "input": "hello world", "encoding_format": "base64"}
    async with http.post(f"{upstream.url}/v1/embeddings", json=body) as resp:
        raw = (await resp.json())["data"][0]["embedding"]
    assert isinstance(raw, str) and list(struct.unpack("<8f", base64.b64decode(raw))) == vectors[0]
    tokens = await sdk.embeddings.create(model="mock-embed", input=[[1, 2, 3], [4]], dimensions=16)
    assert [len(d.embedding) for d in tokens.data] == [16, 16] and tokens.usage.prompt_tokens == 4


async def test_responses_plain_and_stream(sdk: openai.AsyncOpenAI, upstream: Mock, http: aiohttp.ClientSession) -> None:
    done = await sdk.responses.create(model="mock-gpt", input="red green", instructions="be kind")
    assert done.id.startswith("resp_") and done.status == "completed"
    assert done.output_text == "red green red green red green red green"
    assert done.usage is not None
    assert (done.usage.input_tokens, done.usage.output_tokens, done.usage.total_tokens) == (10, 8, 18)

    body = {"model": "mock-gpt", "input": "red green", "stream": True}
    async with http.post(f"{upstream.url}/v1/responses", json=body) as resp:
        events = await _events(resp)
    names = [e.split(b"\n")[0].removeprefix(b"event: ").decode() for e in events]
    payloads = [_data(e) for e in events]
    assert names[0] == "response.created" and names[-1] == "response.completed"
    assert [p["type"] for p in payloads] == names  # event name and payload type agree
    assert "[DONE]" not in payloads
    deltas = [p["delta"] for p in payloads if p["type"] == "response.output_text.delta"]
    assert len(deltas) == 8 and "".join(deltas) == "red green red green red green red green"
    assert payloads[-1]["response"]["usage"] == {"input_tokens": 5, "output_tokens": 8, "total_tokens": 13}

    # The SDK's own stream parser accepts the sequence too.
    stream = await sdk.responses.create(model="mock-gpt", input="red green", stream=True)
    types = [e.type async for e in stream]
    assert types[0] == "response.created" and types[-1] == "response.completed"


async def test_api_key_required_and_authorization_recorded() -> None:
    async with _started(MockOptions(api_key="sekrit")) as upstream:
        for key, ok in (("wrong", False), ("sekrit", True)):
            async with openai.AsyncOpenAI(base_url=f"{upstream.url}/v1", api_key=key, max_retries=0) as client:
                if ok:
                    assert (await client.models.list()).data
                else:
                    with pytest.raises(openai.AuthenticationError) as err:
                        await client.models.list()
                    assert err.value.code == "invalid_api_key"
        assert upstream.stats.seen_authorization == ["Bearer wrong", "Bearer sekrit"]


# --- Errors and fault injection, over raw HTTP ----------------------------------------------------------


async def test_invalid_json_and_unknown_model(upstream: Mock, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{upstream.url}/v1/chat/completions", data=b"{not json") as resp:
        assert resp.status == 400
        error = (await resp.json())["error"]
    assert error["type"] == "invalid_request_error" and error["param"] is None and error["code"] is None
    assert error["message"]
    body = {"model": "gpt-unknown", "messages": CHAT}
    async with http.post(f"{upstream.url}/v1/chat/completions", json=body) as resp:
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "model_not_found"
    async with http.get(f"{upstream.url}/v1/nothing-here") as resp:
        assert resp.status == 404 and "error" in await resp.json()
    async with http.get(f"{upstream.url}/health") as resp:
        assert await resp.json() == {"status": "ok"}


async def test_injected_status(upstream: Mock, http: aiohttp.ClientSession) -> None:
    body: dict[str, Any] = {"model": "mock-gpt", "messages": CHAT}
    url = f"{upstream.url}/v1/chat/completions"
    async with http.post(url, json=body, headers={"x-mock-status": "503"}) as resp:
        assert resp.status == 503
        assert (await resp.json())["error"]["type"] == "server_error"
    async with http.post(url, json=body, headers={"x-mock-status": "429"}) as resp:
        assert resp.status == 429 and resp.headers["retry-after"] == "1"
        assert (await resp.json())["error"]["type"] == "rate_limit_error"
    # The body's "mock" object wins over headers (a gateway forwards bodies but may drop x- headers).
    async with http.post(url, json={**body, "mock": {"status": 500}}, headers={"x-mock-status": "429"}) as resp:
        assert resp.status == 500 and "retry-after" not in resp.headers
    async with http.post(url, json=body, headers={"x-mock-status": "teapot"}) as resp:
        assert resp.status == 400 and (await resp.json())["error"]["param"] == "mock"
    assert upstream.stats.completed == 4 and upstream.stats.in_flight == 0


async def test_die_after_truncates_the_stream(upstream: Mock, http: aiohttp.ClientSession) -> None:
    body = {"model": "mock-gpt", "messages": CHAT, "stream": True}
    received = b""
    async with http.post(f"{upstream.url}/v1/chat/completions", json=body, headers={"x-mock-die-after": "3"}) as resp:
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            async for line in resp.content:
                received += line
    events = [_data(e) for e in received.split(b"\n\n") if e]
    assert [e["choices"][0]["delta"] for e in events] == [
        {"role": "assistant", "content": ""},
        {"content": "alpha "},
        {"content": "beta "},
        {"content": "gamma "},
    ]
    assert all(e["choices"][0]["finish_reason"] is None for e in events)  # no terminating chunk, no [DONE]
    # A non-streaming request with die_after gets no response at all.
    with pytest.raises(aiohttp.ClientConnectionError):
        async with http.post(
            f"{upstream.url}/v1/chat/completions", json={**body, "stream": False, "mock": {"die_after": 0}}
        ) as resp:
            await resp.read()
    await _wait_for(lambda: upstream.stats.aborted == 2)
    assert upstream.stats.completed == 0 and upstream.stats.cancelled == 0


async def test_omit_usage(upstream: Mock, http: aiohttp.ClientSession) -> None:
    url, headers = f"{upstream.url}/v1/chat/completions", {"x-mock-omit-usage": "1"}
    async with http.post(url, json={"model": "mock-gpt", "messages": CHAT}, headers=headers) as resp:
        plain = await resp.json()
    assert "usage" not in plain and plain["choices"][0]["message"]["content"] == REPLY
    body = {"model": "mock-gpt", "messages": CHAT, "stream": True, "stream_options": {"include_usage": True}}
    async with http.post(url, json=body, headers=headers) as resp:
        events = [_data(e) for e in await _events(resp)]
    assert events[-1] == "[DONE]"
    assert not any("usage" in e for e in events[:-1])
    assert events[-2]["choices"][0]["finish_reason"] == "stop"
    async with http.post(
        f"{upstream.url}/v1/responses", json={"model": "mock-gpt", "input": "x"}, headers=headers
    ) as r:
        assert "usage" not in await r.json()


async def test_stall_until_client_gives_up(upstream: Mock, http: aiohttp.ClientSession) -> None:
    body = {"model": "mock-gpt", "messages": CHAT, "stream": True, "mock": {"stall": True}}
    async with http.post(f"{upstream.url}/v1/chat/completions", json=body) as resp:
        assert resp.status == 200  # headers arrived
        first = await resp.content.readuntil(b"\n\n")
        assert _data(first)["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(resp.content.readuntil(b"\n\n"), 0.3)
        assert upstream.stats.in_flight == 1
    # Leaving the block closes the connection; the mock sees the cancellation.
    await _wait_for(lambda: upstream.stats.cancelled == 1)
    assert upstream.stats.in_flight == 0 and upstream.stats.completed == 0

    # A plain request stalls after its headers; a client timeout cancels it the same way.
    with pytest.raises(TimeoutError):
        async with http.post(
            f"{upstream.url}/v1/embeddings",
            json={"model": "mock-embed", "input": "x"},
            headers={"x-mock-stall": "true"},
            timeout=aiohttp.ClientTimeout(total=0.3),
        ) as resp:
            await resp.read()
    await _wait_for(lambda: upstream.stats.cancelled == 2)


async def test_timing_and_chunk_count(upstream: Mock, http: aiohttp.ClientSession) -> None:
    url = f"{upstream.url}/v1/chat/completions"
    started = time.monotonic()
    async with http.post(url, json={"model": "mock-gpt", "messages": CHAT}, headers={"x-mock-ttft": "0.2"}) as resp:
        await resp.read()
    assert time.monotonic() - started >= 0.2

    body = {"model": "mock-gpt", "messages": CHAT, "stream": True}
    headers = {"x-mock-chunk-delay": "0.05", "x-mock-chunks": "20"}
    arrivals: list[float] = []
    async with http.post(url, json=body, headers=headers) as resp:
        async for line in resp.content:
            if line.startswith(b"data: {"):
                arrivals.append(time.monotonic())
    assert len(arrivals) == 1 + 20 + 1
    assert arrivals[-2] - arrivals[1] >= 19 * 0.05 * 0.9  # deltas really are spaced out, not batched
    # Body options win over headers.
    async with http.post(url, json={**body, "mock": {"chunks": 2}}, headers=headers) as resp:
        events = [_data(e) for e in await _events(resp)]
    assert len(events) == 1 + 2 + 1 + 1


async def test_max_in_flight_under_concurrency(upstream: Mock, http: aiohttp.ClientSession) -> None:
    async def one() -> int:
        body = {"model": "mock-gpt", "messages": CHAT, "mock": {"ttft": 0.2}}
        async with http.post(f"{upstream.url}/v1/chat/completions", json=body) as resp:
            await resp.read()
            return resp.status

    assert await asyncio.gather(*(one() for _ in range(5))) == [200] * 5
    assert upstream.stats.max_in_flight == 5 and upstream.stats.in_flight == 0 and upstream.stats.completed == 5


async def test_stats_endpoint_and_reset(upstream: Mock, http: aiohttp.ClientSession) -> None:
    body = {"model": "mock-gpt", "messages": CHAT, "user": "u1"}
    headers = {"Authorization": "Bearer upstream-key", "X-Trace": "abc"}
    async with http.post(f"{upstream.url}/v1/chat/completions", json=body, headers=headers) as resp:
        assert resp.status == 200
    async with http.get(f"{upstream.url}/v1/models") as resp:
        assert resp.status == 200
    async with http.get(f"{upstream.url}/_mock/stats") as resp:
        stats = await resp.json()
    assert stats["requests"] == {"/v1/chat/completions": 1, "/v1/models": 1}
    assert "x-trace" not in stats["last_headers"]  # the last request was GET /v1/models
    assert stats["seen_authorization"] == ["Bearer upstream-key"]
    assert stats["last_body"] == body and stats["completed"] == 1

    async with http.post(f"{upstream.url}/v1/chat/completions", json=body, headers=headers) as resp:
        assert resp.status == 200
    assert upstream.stats.last_headers["x-trace"] == "abc"
    assert upstream.stats.last_headers["authorization"] == "Bearer upstream-key"

    async with http.post(f"{upstream.url}/_mock/reset") as resp:
        assert resp.status == 200
    async with http.get(f"{upstream.url}/_mock/stats") as resp:
        stats = await resp.json()
    assert stats["requests"] == {} and stats["seen_authorization"] == [] and stats["completed"] == 0
    assert stats["last_body"] is None


async def test_module_entry_point_serves_and_stops_on_sigterm(http: aiohttp.ClientSession) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tenantgate.mock.upstream",
        "--port",
        "0",
        "--chunks",
        "3",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 10)
        url = line.decode().split()[-1]
        body = {"model": "mock-gpt", "messages": CHAT}
        async with http.post(f"{url}/v1/chat/completions", json=body) as resp:
            assert (await resp.json())["choices"][0]["message"]["content"] == "alpha beta gamma"
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
