"""The reservation bounds: sound (never below a real tokenizer's count) and cheap; the forwarded cap."""

from __future__ import annotations

import random

import orjson
import pytest

from tenantgate.core.errors import InvalidRequest
from tenantgate.edge.request import parse_request
from tenantgate.metering.bounds import prompt_token_bound
from tenantgate.metering.tokens import TokenCounter, pieces

COUNTER = TokenCounter()


def _texts() -> list[str]:
    rng = random.Random(7)
    alphabets = ["a", "ab ", "0123456789", "éàü", "漢字かな", "🙂🚀", "\x00\x01\t\n", "".join(map(chr, range(32, 127)))]
    return ["".join(rng.choice(alpha) for _ in range(rng.randint(0, 3000))) for alpha in alphabets for _ in range(3)]


@pytest.mark.parametrize("text", _texts())
def test_the_prompt_bound_is_never_below_the_real_count(text: str) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": text}]}
    raw = orjson.dumps(body)
    assert prompt_token_bound(len(raw), body, 4096) >= COUNTER.count_prompt("chat/completions", body)


def test_media_payloads_are_reserved_per_part_not_per_byte() -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 200_000}}
    body = {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "what?"}, image]}]}
    bound = prompt_token_bound(len(orjson.dumps(body)), body, 1000)
    assert 1000 <= bound < 2000


def test_a_body_built_to_be_walked_falls_back_to_its_size() -> None:
    body = {"model": "m", "input": [[1]] * 1_000_000, "image": "x"}
    assert prompt_token_bound(5_000_000, body, 10) >= 5_000_000


def test_pieces_keep_counts_and_make_long_runs_linear() -> None:
    text = "hello world " * 500
    assert "".join(pieces(text)) == text
    assert COUNTER.count_text(text) == len(COUNTER._encoder().encode(text))
    assert all(len(piece) <= 256 for piece in pieces("a" * 100_000))


def _parse(endpoint: str, body: dict[str, object]) -> object:
    return parse_request(endpoint, orjson.dumps(body))


def test_the_largest_length_field_and_all_choices_are_reserved() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 900, "n": 3}
    parsed = parse_request("chat/completions", orjson.dumps({**body, "max_output_tokens": 1}))
    assert (parsed.max_output_tokens, parsed.choices) == (900, 3)
    parsed = parse_request("completions", orjson.dumps({"model": "m", "prompt": "x", "best_of": 5, "n": 2}))
    assert parsed.choices == 5


@pytest.mark.parametrize("cap_field", ["max_tokens", "max_completion_tokens"])
def test_a_capped_payload_carries_exactly_the_backends_length_field(cap_field: str) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 7}
    parsed = parse_request("chat/completions", orjson.dumps({**body, "max_tokens": 50, "max_output_tokens": 3}))
    parsed.output_cap = 50
    sent = orjson.loads(parsed.upstream_payload("up", cap_field))
    assert {k: v for k, v in sent.items() if k.startswith("max_")} == {cap_field: 50}
    uncapped = parse_request("chat/completions", orjson.dumps(body))
    assert orjson.loads(uncapped.upstream_payload("up"))["max_completion_tokens"] == 7  # no limit: untouched


@pytest.mark.parametrize(
    ("field", "value"), [("max_tokens", 10**12), ("n", 1000), ("best_of", 0), ("max_completion_tokens", 2**63)]
)
def test_absurd_length_and_choice_fields_are_a_400(field: str, value: int) -> None:
    with pytest.raises(InvalidRequest) as refused:
        _parse("completions", {"model": "m", "prompt": "x", field: value})
    assert refused.value.param == field


def test_nesting_orjson_cannot_forward_is_a_400_before_anything_runs() -> None:
    deep = b"[" * 400 + b'"x"' + b"]" * 400  # orjson reads 1024 levels but writes only 254
    raw = b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "extra": ' + deep + b"}"
    with pytest.raises(InvalidRequest):
        parse_request("chat/completions", raw)
