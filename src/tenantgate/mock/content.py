"""What the mock says and how it counts: reply words, token counts, inputs, deterministic vectors."""

from __future__ import annotations

import hashlib
import math
import struct
from typing import Any

import orjson

from tenantgate.mock.common import Json, MockError
from tenantgate.mock.faults import Faults


def _text(content: Any) -> str:
    """Text of a message ``content``: a string or a list of parts that carry ``text``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _last_user_words(items: list[Any]) -> list[str]:
    for item in reversed(items):
        if isinstance(item, dict) and item.get("role") == "user":
            return _text(item.get("content")).split()
    return []


def _message_tokens(items: list[Any]) -> int:
    """A deterministic stand-in for a tokenizer: words plus 3 per message, like OpenAI's framing overhead."""
    return sum(len(_text(m.get("content")).split()) + 3 for m in items if isinstance(m, dict))


def _is_tokens(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in value)


def _inputs(value: Any, param: str) -> list[Any]:
    """Normalise an OpenAI ``prompt``/``input``: string, strings, token array, or token arrays."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if _is_tokens(value):
            return [value]
        if all(isinstance(v, str) or _is_tokens(v) for v in value):
            return value
    raise MockError(400, f"'{param}' must be a string, strings, or token arrays.", param=param)


def _input_tokens(items: list[Any]) -> int:
    return sum(len(x.split()) if isinstance(x, str) else len(x) for x in items)


def _max_tokens(body: Json, *keys: str) -> int | None:
    for key in keys:
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise MockError(400, f"'{key}' must be a positive integer.", param=key)
        return value
    return None


def _vector(value: str | list[int], dims: int) -> list[float]:
    """A unit vector hashed from the input, rounded to float32 so float and base64 encodings agree exactly."""
    key = value.encode() if isinstance(value, str) else orjson.dumps(value)
    raw = b"".join(hashlib.sha256(i.to_bytes(4, "little") + key).digest() for i in range(-(-dims // 32)))
    values = [b / 127.5 - 1.0 for b in raw[:dims]]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return list(struct.unpack(f"<{dims}f", struct.pack(f"<{dims}f", *(v / norm for v in values))))


def obeyed_length_fields(faults: Faults, *fields: str) -> tuple[str, ...]:
    """The length fields this request's server dialect reads (see the ``length_field`` fault)."""
    if faults.length_field is None:
        return fields
    if faults.length_field == "none":
        return ()
    return fields if len(fields) == 1 else (faults.length_field,)  # only chat has a choice of fields


def count_param(body: Json, name: str) -> int:
    value = body.get(name)
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 128:
        raise MockError(400, f"'{name}' must be an integer between 1 and 128.", param=name)
    return value
