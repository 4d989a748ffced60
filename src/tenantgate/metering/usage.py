"""Reading usage out of upstream responses, and estimating it when the upstream reports none."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def usage_from_object(obj: Any) -> Usage | None:
    """Usage from a response object or stream event, in chat/completions or Responses API shape."""
    if not isinstance(obj, dict):
        return None
    usage = obj.get("usage")
    if usage is None and isinstance(obj.get("response"), dict):  # Responses API stream: response.completed
        usage = obj["response"].get("usage")
    if not isinstance(usage, dict):
        return None
    if "input_tokens" in usage or "output_tokens" in usage:
        return Usage(_int(usage.get("input_tokens")), _int(usage.get("output_tokens")))
    prompt = _int(usage.get("prompt_tokens"))
    completion = usage.get("completion_tokens")
    if completion is None:  # embeddings: only prompt tokens
        completion = _int(usage.get("total_tokens")) - prompt
    return Usage(prompt, max(_int(completion), 0))


def _text_from_event(obj: Any) -> str:
    if not isinstance(obj, dict):
        return ""
    if isinstance(obj.get("delta"), str):  # Responses API output_text.delta
        return str(obj["delta"])
    parts: list[str] = []
    for choice in obj.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        delta = choice.get("delta") or choice.get("message") or {}
        if isinstance(delta, dict) and isinstance(delta.get("content"), str):
            parts.append(delta["content"])
        if isinstance(choice.get("text"), str):
            parts.append(choice["text"])
    return "".join(parts)


def completion_text(obj: Any) -> str:
    """The generated text in a whole (non-streamed) response."""
    if isinstance(obj, dict) and isinstance(obj.get("output"), list):
        texts = []
        for item in obj["output"]:
            for part in (item.get("content") or []) if isinstance(item, dict) else []:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    texts.append(part["text"])
        return "".join(texts)
    return _text_from_event(obj)


def text_from_sse_events(events: list[bytes]) -> str:
    """The text delivered by a list of raw SSE events (``data: {...}`` lines)."""
    parts: list[str] = []
    for event in events:
        for line in event.split(b"\n"):
            if line.startswith(b"data:") and line[5:].strip() != b"[DONE]":
                try:
                    parts.append(_text_from_event(orjson.loads(line[5:])))
                except orjson.JSONDecodeError:
                    continue
    return "".join(parts)
