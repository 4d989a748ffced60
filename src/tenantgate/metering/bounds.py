"""Cheap, sound upper bounds on what a request can cost, computed without a tokenizer.

A reservation must hold the worst case, and it is taken on the event loop, so it cannot run a tokenizer:
pure-Python BPE is super-linear on long runs without spaces (a 30 KB prompt took 28 s). The bounds here are
O(1) in the common case:

* **Prompt**: every token of any byte-level tokenizer stands for at least one byte of text, and the JSON
  framing of each message (``{"role":"user","content":""}``, 28 bytes) outweighs the few special tokens a chat
  template adds, so the size of the raw body bounds the prompt's tokens. A fixed allowance covers what a
  template adds once per request. Media parts (images, audio, files) are the exception: their base64 bytes are
  not text tokens, so their payload is swapped for a per-part allowance (found by a walk over the parsed
  body's containers, with a hard cap, so a crafted body cannot make it slow).
* **Output**: the largest output-length field the request carries (whichever one the upstream honours), times
  the number of choices (``n``, ``best_of``), or the model's configured maximum when no field is sent.

What the upstream really reports settles the reservation; the bound only has to be large enough.
"""

from __future__ import annotations

from typing import Any

TEMPLATE_ALLOWANCE = 64  # tokens a chat template may add once per request (BOS, assistant header, date lines)
_MEDIA_KEYS = frozenset({"image_url", "input_audio", "audio", "file", "file_data", "image", "video_url"})
_WALK_CAP = 10_000  # containers visited; past this the raw size stands (sound, only less tight for media)


def prompt_token_bound(raw_size: int, body: dict[str, Any], media_allowance: int) -> int:
    """An upper bound on the prompt tokens of a request whose JSON body of ``raw_size`` bytes parsed to ``body``.

    The walk visits containers only (a message, a content part), never characters: a 1 MiB prompt is three
    nodes, and a body built to have a million of them stops at the cap.
    """
    bound = raw_size + TEMPLATE_ALLOWANCE
    media_bytes, media_parts = _media_payload(body)
    if media_parts <= 0:
        return bound
    return max(TEMPLATE_ALLOWANCE, bound - media_bytes) + media_parts * media_allowance


def _media_payload(body: dict[str, Any]) -> tuple[int, int]:
    """(bytes of media payloads, number of media parts) in ``body``; (0, -1) when the walk hit its cap."""
    stack: list[Any] = [body]
    visited = media_bytes = parts = 0
    while stack:
        node = stack.pop()
        visited += 1
        if visited > _WALK_CAP:
            return 0, -1
        if isinstance(node, dict):
            for key, value in node.items():
                if key in _MEDIA_KEYS and value is not None:
                    size = _strings_size(value)
                    if size < 0:
                        return 0, -1
                    media_bytes += size
                    parts += 1
                elif isinstance(value, dict | list):
                    stack.append(value)
        elif isinstance(node, list):
            visited += len(node)  # a list's items are looked at even when they are scalars
            if visited > _WALK_CAP:
                return 0, -1
            stack.extend(item for item in node if isinstance(item, dict | list))
    return media_bytes, parts


def _strings_size(value: Any) -> int:
    """Characters of the strings inside one media value (base64 and URLs are ASCII: characters = bytes)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        total = 0
        for item in value.values():
            if isinstance(item, str):
                total += len(item)
            elif isinstance(item, dict | list):
                return -1  # not a known media shape: keep the raw-size bound
        return total
    return -1
