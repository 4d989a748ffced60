"""Pure pieces of the edge and auth: body parsing, key format, the catalog, usage extraction, config files."""

from __future__ import annotations

import orjson
import pytest

from tenantgate.auth.keys import generate_key, key_from_plaintext, lookup_parts, parse_key
from tenantgate.config.file import ConfigError, parse_config
from tenantgate.core.errors import InvalidRequest, ModelNotFound
from tenantgate.core.logging import mask_secrets
from tenantgate.core.secrets import CredentialCipher, Redacted, sha256_hex
from tenantgate.edge.request import parse_request
from tenantgate.metering.tokens import TokenCounter
from tenantgate.metering.usage import text_from_sse_events, usage_from_object
from tenantgate.routing.catalog import Catalog, Deployment


def test_upstream_payload_rewrites_model_and_asks_for_usage() -> None:
    raw = orjson.dumps(
        {
            "model": "public",
            "messages": [{"role": "user", "content": "x"}],
            "stream": True,
            "stream_options": {"foo": 1},
            "logit_bias": {"1": 2},
        }
    )
    parsed = parse_request("chat/completions", raw)
    assert parsed.stream and not parsed.client_wants_usage
    sent = orjson.loads(parsed.upstream_payload("upstream/name"))
    assert sent["model"] == "upstream/name"
    assert sent["stream_options"] == {"foo": 1, "include_usage": True}
    assert sent["logit_bias"] == {"1": 2}


def test_embeddings_payload_is_not_given_stream_options() -> None:
    parsed = parse_request("embeddings", b'{"model": "e", "input": "x"}')
    assert "stream_options" not in orjson.loads(parsed.upstream_payload("e"))


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_max_output_tokens_read_from_either_field(field: str) -> None:
    parsed = parse_request("chat/completions", orjson.dumps({"model": "m", "messages": [{"role": "user"}], field: 33}))
    assert parsed.max_output_tokens == 33


def test_invalid_message_entry_names_its_index() -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_request("chat/completions", b'{"model": "m", "messages": [{"role": "user"}, "oops"]}')
    assert info.value.param == "messages[1]"


def test_generated_keys_parse_and_hash() -> None:
    new = generate_key()
    public_id, secret = parse_key(new.plaintext) or ("", "")
    assert public_id == new.public_id and sha256_hex(secret) == new.secret_hash
    assert secret not in new.secret_hash and len(secret) >= 43
    assert generate_key().plaintext != new.plaintext


def test_operator_chosen_keys_map_to_stable_rows() -> None:
    first, again = key_from_plaintext("FormdevINF26"), key_from_plaintext("FormdevINF26")
    assert first == again and first.secret_hash == sha256_hex("FormdevINF26")
    assert lookup_parts("FormdevINF26") == (first.public_id, "FormdevINF26")
    assert parse_key("sk-abc") is None and parse_key("tg--x") is None


def _deployment(backend: str, model: str = "m") -> Deployment:
    return Deployment(backend, backend, "http://h", None, model, model, 1.0, 2.0)


def test_catalog_round_robin_and_unknown_model() -> None:
    catalog = Catalog([_deployment("a"), _deployment("b"), _deployment("c", "other")])
    assert [catalog.pick("m").backend_name for _ in range(4)] == ["a", "b", "a", "b"]
    assert catalog.models() == ["m", "other"]
    with pytest.raises(ModelNotFound):
        catalog.pick("nope")
    assert _deployment("a").cost_usd(1_000_000, 500_000) == pytest.approx(2.0)


def test_usage_extraction_shapes() -> None:
    assert usage_from_object({"usage": {"prompt_tokens": 3, "completion_tokens": 4}}).total_tokens == 7  # type: ignore[union-attr]
    assert usage_from_object({"usage": {"prompt_tokens": 5, "total_tokens": 5}}).completion_tokens == 0  # type: ignore[union-attr]
    responses = usage_from_object(
        {"type": "response.completed", "response": {"usage": {"input_tokens": 2, "output_tokens": 9}}}
    )
    assert responses is not None and (responses.prompt_tokens, responses.completion_tokens) == (2, 9)
    assert usage_from_object({"usage": None}) is None
    events = [
        b'data: {"choices":[{"delta":{"content":"Hel"}}]}',
        b'data: {"choices":[{"delta":{"content":"lo"}}]}',
        b"data: [DONE]",
    ]
    assert text_from_sse_events(events) == "Hello"


def test_token_counter_counts_offline() -> None:
    counter = TokenCounter()
    assert counter.count_text("hello world") == 2
    body = {
        "messages": [
            {"role": "user", "content": "hello world"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        ]
    }
    assert counter.count_prompt("chat/completions", body) == 3 + (3 + 2) + (3 + 1)
    assert counter.count_prompt("embeddings", {"input": [[1, 2, 3]]}) == 3


def test_config_errors_name_key_paths() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"backends": [{"name": "a", "base_url": "http://x", "models": []}], "extra": 1})
    text = "\n".join(info.value.errors)
    assert "backends.0.models" in text and "extra" in text
    config = parse_config({"backends": [{"name": "a", "base_url": "http://x/", "models": ["m"]}]})
    assert config.backends[0].base_url == "http://x"


def test_credential_cipher_round_trip_and_redaction(tmp_path: object) -> None:
    cipher = CredentialCipher("material")
    token = cipher.encrypt("sk-secret")
    assert "sk-secret" not in token
    plain = cipher.decrypt(token)
    assert plain == "sk-secret" and "sk-secret" not in repr(plain) and isinstance(plain, Redacted)
    with pytest.raises(ValueError):
        CredentialCipher("other").decrypt(token)


def test_log_masking() -> None:
    text = mask_secrets("key tg-abc123-SECRETSECRET and sk-proj-abcdefghijkl and Bearer xyz")
    assert "SECRETSECRET" not in text and "abcdefghijkl" not in text and "xyz" not in text
    assert "tg-abc123-***" in text
