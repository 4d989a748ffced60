"""The audit log: one append-only row per admin action, and the filtered, paged listing ``GET /admin/audit`` shows.

Secrets are masked here, in the only code that writes the table, so no caller can forget to: a field whose
name says it holds a credential is stored as ``"***"``, at any depth, and so is any value whose type is a
secret type (anything with ``get_secret_value``, e.g. pydantic's ``SecretStr``). The log records *that* a key
or credential changed, never what it is.
"""

from __future__ import annotations

import builtins
import enum
import math
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from tenantgate.storage import schema
from tenantgate.storage.rows import as_utc, storable, utcnow

MASK: Final = "***"
# A field is secret when one of the words of its name (split on "_", "-" and camelCase) is one of these,
# unless its last word names an identifier rather than the secret itself ("key_id", "key_name").
_SECRET_WORDS: Final = frozenset(
    {"key", "apikey", "secret", "password", "passwd", "token", "credential", "credentials", "authorization", "cookie"}
)
_NOT_SECRET_LAST_WORDS: Final = frozenset({"id", "ids", "name", "names", "prefix", "count"})
_WORD_SPLIT: Final = re.compile(r"[_\-\s]+|(?<=[a-z0-9])(?=[A-Z])")


def is_secret_field(name: str) -> bool:
    """True for ``api_key``, ``key``, ``secret``, ``password``, ``token``, ``admin_key``, ``api_key_encrypted``,
    ``accessToken``…; false for ``key_id``, ``max_tokens``, ``models``."""
    words = [word.lower() for word in _WORD_SPLIT.split(name) if word]
    if not words or words[-1] in _NOT_SECRET_LAST_WORDS:
        return False
    return any(word in _SECRET_WORDS for word in words)


def mask_secrets(value: Any) -> Any:
    """A JSON-safe copy of ``value``: secret fields masked, datetimes as ISO 8601 strings, enums by value."""
    if hasattr(value, "get_secret_value"):
        return MASK
    if isinstance(value, Mapping):
        return {str(k): MASK if is_secret_field(str(k)) else mask_secrets(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [mask_secrets(item) for item in value]
    if isinstance(value, datetime):
        return (as_utc(value) or value).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return mask_secrets(value.value)
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no inf or NaN: PostgreSQL would refuse the entry
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _utc(value: datetime) -> datetime:
    """Filters compare in UTC: SQLite stores the UTC wall time without its offset, so an offset must not leak in."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _entry(row: Any) -> dict[str, Any]:
    created = as_utc(row.created_at)
    return {
        "id": int(row.id),
        "created_at": created.isoformat() if created else None,
        "actor": row.actor,
        "action": row.action,
        "target_type": row.target_type,
        "target_id": row.target_id,
        "changes": row.changes,
    }


class AuditRepo:
    """Writes and reads ``audit_log``. Entries are never updated or deleted through this class."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def record(
        self,
        actor: str,
        action: str,
        target_type: str,
        target_id: str | None,
        changes: Mapping[str, Any] | None,
    ) -> None:
        """Append one entry (secrets in ``changes`` masked; see the module docstring)."""
        row = {
            "created_at": utcnow(),
            "actor": actor,
            "action": action,
            "target_type": target_type,
            "target_id": target_id,
            "changes": mask_secrets(changes) if changes is not None else None,
        }
        async with self._engine.begin() as conn:
            await conn.execute(schema.audit_log.insert().values(**row))

    async def list(
        self,
        *,
        action: str | None = None,
        target_type: str | None = None,
        target_id: str | None = None,
        actor: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        before_id: int | None = None,
    ) -> builtins.list[dict[str, Any]]:
        """Entries matching every given filter, newest first; ``since`` inclusive, ``until`` exclusive.

        Paging is by id (``before_id`` = the last id of the previous page), not by offset: ids only grow, so a
        page never repeats or skips entries while new ones are being written.
        """
        table = schema.audit_log
        clauses: builtins.list[sa.ColumnElement[bool]] = []
        for column, wanted in (
            (table.c.action, action),
            (table.c.target_type, target_type),
            (table.c.target_id, target_id),
            (table.c.actor, actor),
        ):
            if wanted is not None:
                # a value no row can hold (NUL…) matches nothing; PostgreSQL would refuse it as a parameter
                clauses.append(column == wanted if storable(wanted) else sa.false())
        if since is not None:
            clauses.append(table.c.created_at >= _utc(since))
        if until is not None:
            clauses.append(table.c.created_at < _utc(until))
        if before_id is not None:
            clauses.append(table.c.id < before_id)
        query = table.select().where(*clauses).order_by(table.c.id.desc()).limit(limit)
        async with self._engine.connect() as conn:
            rows = await conn.execute(query)
        return [_entry(row) for row in rows]
