"""``scrub`` (relayed upstream errors) and the log redaction processor: what they mask, and their bounds."""

from __future__ import annotations

import base64
import json
import random
import string
import urllib.parse
from typing import Any

from tenantgate.core.logging import MAX_CHARS, MAX_DEPTH, MAX_NODES, MAX_STRING, _redact, is_secret_field, mask_secrets
from tenantgate.core.secrets import Redacted, scrub

PRINTABLE = string.ascii_letters + string.digits + "-_./+=~!@#$%^&*()[]{}|;:,<>?\"'\\ "


def encodings(secret: str, prefix: str) -> list[str]:
    """Every way a leaky upstream might write ``prefix + secret`` into its error."""
    text = prefix + secret
    return [
        text,
        urllib.parse.quote(text, safe=""),
        urllib.parse.quote_plus(text),
        json.dumps(text)[1:-1],
        base64.b64encode(text.encode()).decode(),
        base64.urlsafe_b64encode(text.encode()).decode(),
        base64.b64encode(text.encode()).decode().rstrip("="),
        text.encode().hex(),
    ]


def test_known_secrets_are_masked_in_every_encoding_and_alignment() -> None:
    rng = random.Random(11)
    for _ in range(300):
        secret = "".join(rng.choice(PRINTABLE) for _ in range(rng.randint(8, 60)))
        prefix = "".join(rng.choice(string.ascii_letters + ": ") for _ in range(rng.randint(0, 9)))
        for encoded in encodings(secret, prefix):
            message = f"upstream said: {encoded} (end)"
            scrubbed = scrub(message, [Redacted(secret), None])
            assert encoded not in scrubbed, (secret, prefix, scrubbed)
            assert secret not in scrubbed
            assert "upstream said:" in scrubbed and "(end)" in scrubbed


def test_key_shapes_are_masked_without_knowing_them() -> None:
    samples = {
        "tg-abc123def456-" + "A" * 43: "tg-abc123def456-***",
        "sk-proj-abcdefghijklmnop": "sk-***",
        "sk-ant-api03-ABCDEFGHijklmnop_qr": "sk-***",
        "Authorization: Bearer abc.def": "Bearer ***",
        "authorization: bearer x": "bearer ***",
        "api_key=0123456789abcdefABCD": "api_key=***",
        '"x-api-key": "Zm9vYmFyYmF6cXV4MTIz"': '"x-api-key": "***"',
        "Incorrect API key provided: upstream-secret-abc123.": "API key provided: ***",
        "password: correct-horse-battery": "password: ***",
        "AIzaSyA1234567890abcdefghijklmnopqrs": "AIza***",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3In0.abcdefghijk": "eyJ***",
        "Basic dXNlcjpwYXNzd29yZA==": "Basic ***",
    }
    for text, expected in samples.items():
        assert expected in scrub(f"error: {text} end"), (text, scrub(text))


def test_ordinary_error_messages_are_left_alone() -> None:
    for message in (
        "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens.",
        "Invalid value for 'max_tokens': must be a positive integer.",
        "Please provide a valid 'messages' array; a basic example is in the docs.",
        "The model `gpt-4o` does not exist or you do not have access to it.",
        "",
    ):
        assert scrub(message, ["upstream-secret-abc123"]) == message


def test_short_configured_secrets_do_not_destroy_messages() -> None:
    assert scrub("an abc error", ["abc"]) == "an abc error"


def test_secret_field_names() -> None:
    for name in ("Authorization", "api_key", "apiKey", "X-API-Key", "password", "client_secret", "refresh_token"):
        assert is_secret_field(name), name
    for name in ("max_tokens", "prompt_tokens", "key_id", "model", "tenant_id", "messages", "tokenizer"):
        assert not is_secret_field(name), name


def event(**fields: Any) -> dict[str, Any]:
    return dict(_redact(None, "info", fields))


def test_redaction_walks_nested_values() -> None:
    body = {
        "messages": [{"role": "user", "content": "use sk-ant-api03-SECRETSECRETSECRET please"}],
        "metadata": {"deep": [{"Api-Key": "plain1"}, ({"password": "plain2"},), {"x": {"token": ["plain3"]}}]},
        "tools": [{"auth": {"client_secret": "plain4"}, "note": "Bearer plain5"}],
    }
    out = event(request_body=body, authorization="Bearer plain6", event="request")
    text = json.dumps(out)
    for secret in ("SECRETSECRETSECRET", "plain1", "plain2", "plain3", "plain4", "plain5", "plain6"):
        assert secret not in text, secret
    assert out["request_body"]["messages"][0]["role"] == "user" and out["event"] == "request"
    assert body["metadata"]["deep"][0]["Api-Key"] == "plain1"  # the caller's object is not modified


def test_redaction_is_bounded_in_depth_nodes_and_length() -> None:
    deep: Any = "sk-proj-abcdefghijklmnop"
    for _ in range(5_000):
        deep = {"a": [deep]}
    wide = {f"k{i}": [i, "x"] for i in range(100_000)}
    long = "Bearer " + "y" * 10 * MAX_STRING

    out = event(deep=deep, wide=wide, long=long)

    depth, node = 0, out["deep"]
    while isinstance(node, dict | list):
        node = node["a"] if isinstance(node, dict) else node[0]
        depth += 1
    assert depth <= MAX_DEPTH + 1 and "abcdefghijklmnop" not in json.dumps(out["deep"])
    assert len(json.dumps(out["wide"])) < 40 * MAX_NODES
    assert len(out["long"]) < MAX_STRING + 100 and "yyyy" not in out["long"][:20]


def test_mask_secrets_keeps_the_public_part() -> None:
    text = mask_secrets("key tg-abc123-SECRETSECRET and sk-proj-abcdefghijkl and Bearer xyz")
    assert "SECRETSECRET" not in text and "abcdefghijkl" not in text and "xyz" not in text
    assert "tg-abc123-***" in text


def test_one_event_has_a_total_character_budget() -> None:
    many = {f"field{i}": "z" * (MAX_STRING - 1) for i in range(100)}  # 3 MiB of strings
    assert len(json.dumps(event(body=many))) < MAX_CHARS + 100 * 200


def test_exception_info_is_left_for_the_formatter() -> None:
    try:
        raise ValueError("boom")
    except ValueError as exc:
        info = (type(exc), exc, exc.__traceback__)
    out = event(exc_info=info)
    assert out["exc_info"] is info
