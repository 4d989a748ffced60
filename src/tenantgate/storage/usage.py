"""The usage ledger: append-only records, batch inserts, and the aggregates the admin API reports."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from tenantgate.storage import schema
from tenantgate.storage.rows import UsageRecord, as_utc

GROUPS = ("model", "key_id", "tenant_id", "backend", "day")


@dataclass(frozen=True, slots=True)
class UsageFilter:
    tenant_id: str | None = None
    key_id: str | None = None
    model: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def where(self) -> list[sa.ColumnElement[bool]]:
        table = schema.usage_records
        clauses: list[sa.ColumnElement[bool]] = []
        if self.tenant_id is not None:
            clauses.append(table.c.tenant_id == self.tenant_id)
        if self.key_id is not None:
            clauses.append(table.c.key_id == self.key_id)
        if self.model is not None:
            clauses.append(table.c.model == self.model)
        if self.since is not None:
            clauses.append(table.c.created_at >= self.since)
        if self.until is not None:
            clauses.append(table.c.created_at < self.until)
        return clauses


def _totals_columns() -> list[sa.Label[Any]]:
    table = schema.usage_records
    return [
        sa.func.count().label("requests"),
        sa.func.coalesce(sa.func.sum(table.c.prompt_tokens), 0).label("prompt_tokens"),
        sa.func.coalesce(sa.func.sum(table.c.completion_tokens), 0).label("completion_tokens"),
        sa.func.coalesce(sa.func.sum(table.c.cost_usd), 0.0).label("cost_usd"),
    ]


def _totals(row: Any) -> dict[str, Any]:
    return {
        "requests": int(row.requests),
        "prompt_tokens": int(row.prompt_tokens),
        "completion_tokens": int(row.completion_tokens),
        "total_tokens": int(row.prompt_tokens) + int(row.completion_tokens),
        "cost_usd": round(float(row.cost_usd), 9),
    }


def _record_out(row: Any) -> dict[str, Any]:
    record = dict(row._mapping)
    created = as_utc(record["created_at"])
    record["created_at"] = created.isoformat() if created else None
    record["estimated"] = bool(record["estimated"])
    record["streamed"] = bool(record["streamed"])
    return record


class UsageRepo:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def insert_many(self, records: Sequence[UsageRecord]) -> None:
        if not records:
            return
        rows = [dataclasses.asdict(record) for record in records]
        async with self._engine.begin() as conn:
            await conn.execute(schema.usage_records.insert(), rows)

    async def summary(self, filters: UsageFilter, group_by: Sequence[str] = ("model",)) -> dict[str, Any]:
        table = schema.usage_records
        clauses = filters.where()
        result: dict[str, Any] = {}
        async with self._engine.connect() as conn:
            total_row = (await conn.execute(sa.select(*_totals_columns()).where(*clauses))).one()
            result["totals"] = _totals(total_row)
            for group in group_by:
                column = sa.func.date(table.c.created_at) if group == "day" else table.c[group]
                query = (
                    sa.select(column.label("group"), *_totals_columns())
                    .where(*clauses)
                    .group_by(column)
                    .order_by(column)
                )
                rows = await conn.execute(query)
                result[f"by_{group}"] = [{group: str(row.group), **_totals(row)} for row in rows]
        return result

    async def records(self, filters: UsageFilter, limit: int = 100) -> list[dict[str, Any]]:
        """The newest raw records matching the filters (for audits and the per-request view)."""
        table = schema.usage_records
        query = table.select().where(*filters.where()).order_by(table.c.id.desc()).limit(limit)
        async with self._engine.connect() as conn:
            rows = await conn.execute(query)
        return [_record_out(row) for row in rows]

    async def spent_since(self, column: str, value: str, since: datetime) -> float:
        """Spend of one tenant or key since a time: rebuilds budget counters after a restart."""
        table = schema.usage_records
        query = sa.select(sa.func.coalesce(sa.func.sum(table.c.cost_usd), 0.0)).where(
            table.c[column] == value, table.c.created_at >= since
        )
        async with self._engine.connect() as conn:
            return float(await conn.scalar(query) or 0.0)

    async def scope_spent_since(self, scope_name: str, since: float) -> float:
        """Spend of a limits scope (``tenant:<id>`` or ``key:<id>``) since a Unix time."""
        kind, _, row_id = scope_name.partition(":")
        column = {"tenant": "tenant_id", "key": "key_id"}[kind]
        return await self.spent_since(column, row_id, datetime.fromtimestamp(since, UTC))

    async def count(self) -> int:
        async with self._engine.connect() as conn:
            return int(await conn.scalar(sa.select(sa.func.count()).select_from(schema.usage_records)) or 0)
