"""The request bodies the load generators send.

Non-streaming load cycles through 10,000 distinct prompts by default: real prompts differ from request to
request, and a constant body would let any cache keyed on content (token counts, for example) answer every
request from one entry, flattering the gateway.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

MESSAGES = [
    {"role": "system", "content": "You are a concise assistant."},
    {"role": "user", "content": "Say hello to the benchmark in a few words."},
]
STREAM_MOCK = {"chunks": 20, "chunk_delay": 0.005}


def chat_body(model: str, **extra: Any) -> bytes:
    return json.dumps({"model": model, "messages": MESSAGES, "max_tokens": 32, **extra}).encode()


def stream_body(model: str, mock: dict[str, Any]) -> bytes:
    return chat_body(model, stream=True, mock=mock)


_WORD_LIST = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa quebec "
    "romeo sierra tango uniform victor whiskey xray yankee zulu gateway tenant latency stream token budget "
    "limit quota model router replica cache metric window burst"
)
WORDS = _WORD_LIST.split()


def write_bodies(path: Path, model: str, count: int = 10_000) -> Path:
    """``count`` bodies with the same system message and a distinct user message each, one JSON per line.

    Real prompts differ from request to request; a constant body would let any cache keyed on content (token
    counts, for example) answer every request from one entry. 10,000 distinct prompts cycled in order defeat
    an LRU cache smaller than that.
    """
    rng = random.Random(5)
    with path.open("w") as out:
        for i in range(count):
            words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 24)))
            messages = [MESSAGES[0], {"role": "user", "content": f"Request {i}: {words}."}]
            out.write(json.dumps({"model": model, "messages": messages, "max_tokens": 32}) + "\n")
    return path
