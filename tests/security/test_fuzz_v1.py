"""Issue 9, class 8: fuzzing the OpenAI-compatible ``/v1`` API with a valid key, on SQLite and PostgreSQL.

Two passes per database. A fixed corpus of known-nasty bodies (deep nesting, NUL bytes, lone surrogates, numbers
past 64 bits, ``NaN`` and ``Infinity`` literals, wrong top-level types, broken JSON) sent to every endpoint; then
Hypothesis-generated bodies: a valid request of each endpoint with fields replaced by arbitrary JSON, or any JSON
value at all, plus malformed headers. The property: never a 5xx; every error is an OpenAI-shaped JSON body.

Deterministic (``derandomize``) and bounded (a fixed number of examples, each answered by the local mock upstream).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st

from tests.pg import reset_postgres
from tests.support import Gateway, Process, mock_config, start_gateway

EXAMPLES_PER_ENDPOINT = 40
HEADER_EXAMPLES = 60
BACKENDS = [pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)]
ENDPOINTS = ["chat/completions", "completions", "embeddings", "responses"]
VALID: dict[str, dict[str, Any]] = {
    "chat/completions": {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8},
    "completions": {"model": "mock-gpt", "prompt": "hi", "max_tokens": 8},
    "embeddings": {"model": "mock-embed", "input": "hi"},
    "responses": {"model": "mock-gpt", "input": "hi", "max_output_tokens": 8},
}
FIELDS = [
    "model",
    "messages",
    "prompt",
    "input",
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "n",
    "best_of",
    "stream",
    "stream_options",
    "temperature",
    "stop",
    "tools",
    "tool_choice",
    "response_format",
    "logit_bias",
    "user",
    "encoding_format",
    "dimensions",
    "instructions",
]


@pytest.fixture(scope="module", params=BACKENDS)
def fuzz_target(
    request: pytest.FixtureRequest, mock: Process, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Gateway, str]]:
    tmp: Path = tmp_path_factory.mktemp(f"fuzz-v1-{request.param}")
    url = f"sqlite+aiosqlite:///{tmp / 'tg.db'}" if request.param == "sqlite" else reset_postgres()
    gateway = start_gateway(url, tmp, mock_config(mock.port))
    yield gateway, gateway.new_key("fuzz-v1")
    gateway.process.stop()


def check(response: httpx.Response, what: str) -> None:
    """Never a 5xx; an error is ``{"error": {"message", "type", "param", "code"}}``."""
    assert response.status_code < 500, f"{what} -> {response.status_code} {response.text[:300]}"
    if response.status_code >= 400:
        try:
            body = response.json()
        except ValueError:
            raise AssertionError(f"{what} -> {response.status_code} non-JSON error {response.text[:300]!r}") from None
        assert isinstance(body, dict) and isinstance(body.get("error"), dict), f"{what} -> {response.text[:300]}"
        error = body["error"]
        assert isinstance(error.get("message"), str) and error["message"], what
        assert isinstance(error.get("type"), str) and error["type"], what
        assert "param" in error and "code" in error, what


def send(
    client: httpx.Client,
    method: str,
    path: str,
    content: bytes | None,
    headers: dict[str, Any],
    *,
    fuzzing: bool = True,
) -> None:
    what = f"{method} {path} headers={headers!r} body={(content or b'')[:300]!r}"
    if fuzzing:
        note(what)  # shown with the falsifying example
    try:
        response = client.request(method, path, content=content, headers=headers)
    except httpx.TransportError as exc:
        raise AssertionError(f"{what} -> no response ({exc!r})") from None
    check(response, what)


def dumps(value: Any) -> bytes:
    """JSON as a lenient client writes it: NaN and Infinity literals, lone surrogates as escapes, no depth limit."""
    return json.dumps(value, allow_nan=True).encode()


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# The fixed corpus: (name, raw body). Each is sent to every endpoint.
CORPUS: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("broken-json", b'{"model": "mock-gpt", "messages": ['),
    ("not-utf8", b'{"model": "\xff\xfe"}'),
    ("null", b"null"),
    ("list", b"[]"),
    ("string", b'"mock-gpt"'),
    ("number", b"1e999"),
    ("nul-model", dumps({"model": "mock-gpt\x00", "messages": [{"role": "user", "content": "hi"}]})),
    ("nul-content", dumps({"model": "mock-gpt", "messages": [{"role": "user", "content": "a\x00b"}], "input": "\x00"})),
    ("surrogate", dumps({"model": "mock-gpt\ud800", "messages": [{"role": "user", "content": "\udfff"}]})),
    ("huge-int", b'{"model": "mock-gpt", "max_tokens": 1' + b"0" * 400 + b', "prompt": "x", "input": "x"}'),
    ("int64-overflow", dumps({"model": "mock-gpt", "max_tokens": 2**64, "n": 2**63, "prompt": "x", "input": "x"})),
    ("nan-inf", b'{"model": "mock-gpt", "temperature": NaN, "max_tokens": Infinity, "prompt": "x", "input": "x"}'),
    ("float-tokens", dumps({"model": "mock-gpt", "max_tokens": 1e308, "n": 1.5, "prompt": "x", "input": "x"})),
    ("wrong-types", dumps({"model": ["mock-gpt"], "messages": "hi", "prompt": {"a": 1}, "input": 5, "stream": "yes"})),
    ("model-object", dumps({"model": {"$ne": None}, "messages": [], "prompt": [], "input": []})),
    ("long-model", dumps({"model": "m" * 100_000, "messages": [{"role": "user", "content": "hi"}]})),
    ("deep-messages-300", b'{"model": "mock-gpt", "messages": ' + nested(300).encode() + b"}"),
    ("deep-body-1000", nested(1000).encode()),
    ("deep-object-500", b'{"a":' * 500 + b"1" + b"}" * 500),
]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(("name", "body"), CORPUS, ids=[name for name, _ in CORPUS])
def test_known_nasty_bodies_never_give_5xx(
    fuzz_target: tuple[Gateway, str], endpoint: str, name: str, body: bytes
) -> None:
    gateway, key = fuzz_target
    with httpx.Client(base_url=gateway.v1, timeout=30) as client:
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        send(client, "POST", f"/{endpoint}", body, headers, fuzzing=False)


_SPECIAL_TEXT = ["\x00", "\ud800", "mock-gpt\x00", "\u202e", "🙂" * 20, "a" * 5000, "", " ", "mock-gpt"]
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**31, 2**63, 2**64, -(2**63) - 1, 10**100, 0, -1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e308, -1e308, 5e-324, 0.5]),
    st.text(alphabet=st.characters(exclude_categories=()), max_size=40),
    st.sampled_from(_SPECIAL_TEXT),
)
JSON_VALUES = st.recursive(
    _SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=16,
)
SETTINGS = settings(
    max_examples=EXAMPLES_PER_ENDPOINT,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=list(HealthCheck),
)


def bodies(endpoint: str) -> st.SearchStrategy[bytes]:
    """Mostly the endpoint's valid request with some fields replaced by arbitrary JSON; sometimes any JSON."""
    mutated = st.builds(
        lambda base, extra, drop: {k: v for k, v in {**base, **extra}.items() if k not in drop},
        st.just(VALID[endpoint]),
        st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), JSON_VALUES, max_size=4),
        st.sets(st.sampled_from(FIELDS), max_size=2),
    )
    return st.one_of(mutated, mutated, mutated, JSON_VALUES).map(dumps)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_generated_bodies_never_give_5xx(fuzz_target: tuple[Gateway, str], endpoint: str) -> None:
    gateway, key = fuzz_target
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    with httpx.Client(base_url=gateway.v1, timeout=30) as client:

        @SETTINGS
        @given(body=bodies(endpoint))
        def fuzz(body: bytes) -> None:
            send(client, "POST", f"/{endpoint}", body, headers)

        fuzz()


_HEADER_TEXT = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"))
_MODEL_PATHS = st.one_of(
    st.sampled_from(["mock-gpt", "", "%00", "..%2f..", "a" * 3000, "%ff%fe", "mock-gpt/x"]), st.text()
)


@settings(
    max_examples=HEADER_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=list(HealthCheck),
)
@given(data=st.data())
def test_malformed_headers_and_model_paths_never_give_5xx(
    fuzz_target: tuple[Gateway, str], data: st.DataObject
) -> None:
    """Keys and headers as a hostile client sends them (within what HTTP/1.1 can carry), and odd model paths."""
    gateway, key = fuzz_target
    auth = data.draw(
        st.one_of(
            st.just(f"Bearer {key}"),
            st.sampled_from(
                ["Bearer", "Bearer x y", "Basic Zm9vOmJhcg==", f"bearer  {key}  ", f"Bearer {key}\xff", "Token x"]
            ),
            _HEADER_TEXT.map(lambda text: f"Bearer {text}"),
        )
    )
    headers: dict[str, Any] = {"Authorization": auth.strip(" \t").encode("latin-1")}
    extra = data.draw(
        st.dictionaries(
            st.sampled_from(
                ["X-API-Key", "Content-Type", "Content-Encoding", "Idempotency-Key", "Accept", "OpenAI-Organization"]
            ),
            st.one_of(
                _HEADER_TEXT,
                st.sampled_from(
                    ["gzip", "br", "text/plain", "application/json; charset=utf-16", "multipart/form-data"]
                ),
                st.just(key),
            ),
            max_size=3,
        )
    )
    # HTTP/1.1 cannot carry a value with leading or trailing blanks: the client refuses to send those
    headers.update({name: (value.strip(" \t") or "x").encode("latin-1") for name, value in extra.items()})
    with httpx.Client(base_url=gateway.v1, timeout=30) as client:
        if data.draw(st.booleans()):
            endpoint = data.draw(st.sampled_from(ENDPOINTS))
            send(client, "POST", f"/{endpoint}", dumps(VALID[endpoint]), headers)
        else:
            model = data.draw(_MODEL_PATHS)
            send(client, "GET", f"/models/{quote(model, safe='/%')}" if model else "/models", None, headers)
