"""Structured logs: JSON lines on stdout (or console output for humans), with secrets redacted.

Redaction works two ways: secret values are typed (``Redacted``, pydantic ``SecretStr``) so their ``repr``
hides them, and a processor drops credential-bearing fields and masks anything shaped like a key.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_SECRET_FIELDS = frozenset({"authorization", "x-api-key", "cookie", "api_key", "key", "password", "secret"})
_KEY_SHAPES = re.compile(r"\b(tg-[a-z0-9]+-)[A-Za-z0-9]+|\b(sk-)[A-Za-z0-9_\-]{8,}|(Bearer )\S+")


def mask_secrets(text: str) -> str:
    return _KEY_SHAPES.sub(lambda m: (m.group(1) or m.group(2) or m.group(3)) + "***", text)


def _redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for name in list(event):
        if name.lower() in _SECRET_FIELDS:
            event[name] = "***"
        elif isinstance(event[name], str):
            event[name] = mask_secrets(event[name])
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
