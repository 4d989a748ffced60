"""Structured logs: JSON lines on stdout (or console output for humans), with secrets redacted.

Redaction works two ways: secret values are typed (``Redacted``, pydantic ``SecretStr``) so their ``repr``
hides them, and a processor masks credential-bearing fields and anything shaped like a key, at any depth of the
event (opted-in request bodies are nested JSON), within bounds of depth, size and string length so a crafted
body cannot make a log line slow or huge.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

from tenantgate.core.secrets import scrub

# A field is masked whole, at any depth, when its name (lower-cased, "-" and "_" removed) is one of these or ends
# with one of the suffixes: ``api_key``, ``X-Api-Key``, ``client_secret``, ``github_token``, ``db_password``;
# never ``max_tokens``, ``prompt_tokens`` or ``key_id``.
_SECRET_NAMES = frozenset(
    {
        "authorization", "proxyauthorization", "xapikey", "apikey", "apikeys", "key", "keys", "password", "passwd",
        "secret", "secrets", "token", "accesstoken", "refreshtoken", "idtoken", "clientsecret", "cookie",
        "setcookie", "credential", "credentials", "privatekey", "secretkey", "accesskey", "sessiontoken", "auth",
    }
)  # fmt: skip
_SECRET_SUFFIXES = ("token", "secret", "password", "passwd", "apikey", "privatekey", "secretkey", "accesskey")
# Bounds so a crafted body cannot make logging slow or huge: nesting depth, values visited, string length.
MAX_DEPTH = 16
MAX_NODES = 5_000
MAX_STRING = 32 * 1024  # per string
MAX_CHARS = 256 * 1024  # all strings of one event together
_TRUNCATED = "[truncated]"
# Left as they are: structlog's own bookkeeping, exception info that format_exc_info renders (then redacted), and
# the access line's fields whose values the gateway itself makes (ids, catalog names, timestamps): scrubbing
# those on every request tripled the cost of a log line and could never find anything.
_PASS_THROUGH = frozenset(
    {
        "exc_info", "stack_info", "_record", "_from_structlog", "timestamp", "level", "logger", "request_id",
        "tenant_id", "key_id", "endpoint", "model", "backend",
    }
)  # fmt: skip


@functools.lru_cache(maxsize=4096)
def is_secret_field(name: str) -> bool:
    folded = name.lower().replace("-", "").replace("_", "")
    return folded in _SECRET_NAMES or folded.endswith(_SECRET_SUFFIXES)


def mask_secrets(text: str, limit: int = MAX_STRING) -> str:
    """Key-shaped substrings masked (see :func:`tenantgate.core.secrets.scrub`); long strings are cut first."""
    if len(text) > limit:
        text = f"{text[:limit]}...{_TRUNCATED} ({len(text)} chars)"
    return scrub(text)


class _Budget:
    """What is left of one event's allowance of values and characters."""

    __slots__ = ("chars", "left")

    def __init__(self) -> None:
        self.left = MAX_NODES
        self.chars = MAX_CHARS

    def text(self, value: str) -> str:
        masked = mask_secrets(value, max(0, min(MAX_STRING, self.chars)))
        self.chars -= len(masked)
        return masked


def _redact_value(value: Any, depth: int, budget: _Budget) -> Any:
    """A redacted copy of ``value``: secret-named fields masked and key shapes masked, at any depth (bounded)."""
    budget.left -= 1
    if isinstance(value, str):
        return budget.text(value) if budget.left >= 0 else _TRUNCATED
    if value is None or isinstance(value, bool | int | float):
        return value
    if budget.left < 0 or depth >= MAX_DEPTH:
        return _TRUNCATED
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for name, item in value.items():
            if budget.left <= 0:
                out[_TRUNCATED] = f"{len(value) - len(out)} more fields"
                break
            if isinstance(name, str):
                out[budget.text(name)] = "***" if is_secret_field(name) else _redact_value(item, depth + 1, budget)
            else:
                out[name] = _redact_value(item, depth + 1, budget)
        return out
    if isinstance(value, list | tuple | set | frozenset):
        items: list[Any] = []
        for item in value:
            if budget.left <= 0:
                items.append(f"{_TRUNCATED} ({len(value) - len(items)} more items)")
                break
            items.append(_redact_value(item, depth + 1, budget))
        return items
    if isinstance(value, bytes | bytearray | memoryview):
        return budget.text(bytes(value[:MAX_STRING]).decode("utf-8", "replace"))
    return value  # other objects render through their repr/str (secret types hide their value there)


def _redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    budget = _Budget()
    for name in list(event):
        value = event[name]
        if name in _PASS_THROUGH:
            continue
        if is_secret_field(name):
            event[name] = "***"
        elif not (value is None or isinstance(value, bool | int | float)):
            event[name] = _redact_value(value, 0, budget)
    return event


def configure_logging(log_format: str = "json", level: str = "INFO") -> None:
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False) if log_format == "console" else structlog.processors.JSONRenderer()
    )
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
        _redact,
        structlog.processors.format_exc_info,
        _redact,
    ]
    formatter = structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        foreign_pre_chain=processors,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "aiosqlite", "sqlalchemy.engine"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    structlog.configure(
        # filter_by_level first: a disabled level costs one check instead of running every processor.
        processors=[
            structlog.stdlib.filter_by_level,
            *processors,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
