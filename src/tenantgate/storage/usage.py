"""The usage ledger: append-only raw records, the hourly rollups kept beside them, and the reports built on both.

Why two tables: raw records are the audit trail (one row per request, purged after the retention period), while
dashboards and the usage APIs need sums over long ranges without scanning millions of rows. ``insert_many``
writes a batch of raw records and adds the same batch, aggregated per (UTC hour, tenant, key, model, backend),
to ``usage_hourly`` in one transaction, so the rollups always equal the sum of the raw rows written — and keep
those sums after the raw rows are purged. Reports read only the rollups; hence time filters of reports work at
hour granularity (see :meth:`UsageFilter.rollup_where`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tenantgate.storage import schema
from tenantgate.storage.rows import MAX_COST_USD, UsageRecord, as_utc, bounded, storable

# Accepted ``group_by`` values. ``tenant`` and ``key`` are the short names of ``tenant_id`` and ``key_id``; each
# group is reported under ``by_<name as requested>`` with the group value under that same name.
GROUPS = ("tenant", "key", "model", "backend", "day", "hour", "tenant_id", "key_id")
_COLUMN_OF = {"tenant": "tenant_id", "key": "key_id"}
ROLLUP_KEY = ("hour", "tenant_id", "key_id", "model", "backend")
MEASURES = ("requests", "prompt_tokens", "completion_tokens", "cost_usd", "errors")


def floor_hour(value: datetime) -> datetime:
    """The start of the UTC hour containing ``value`` (naive values are taken as UTC, as SQLite returns them)."""
    utc = (as_utc(value) or value).astimezone(UTC)
    return utc.replace(minute=0, second=0, microsecond=0)


def ceil_hour(value: datetime) -> datetime:
    """The first hour start at or after ``value``."""
    floored = floor_hour(value)
    return floored if floored == _utc(value) else floored + timedelta(hours=1)


def _utc(value: datetime) -> datetime:
    """Aware UTC: SQLite stores a DateTime's wall-clock digits and drops the zone, so every bound time is UTC."""
    return (as_utc(value) or value).astimezone(UTC)


@dataclass(frozen=True, slots=True)
class UsageFilter:
    tenant_id: str | None = None
    key_id: str | None = None
    model: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    key_ids: tuple[str, ...] | None = None  # only these keys (a person's own); empty matches nothing

    def _same(self, table: sa.Table) -> list[sa.ColumnElement[bool]]:
        wanted = {"tenant_id": self.tenant_id, "key_id": self.key_id, "model": self.model}
        clauses: list[sa.ColumnElement[bool]] = []
        if self.key_ids is not None:
            clauses.append(table.c.key_id.in_(self.key_ids) if self.key_ids else sa.false())
        for name, value in wanted.items():
            if value is not None:
                # a value no row can hold (NUL…) matches nothing; PostgreSQL would refuse it as a parameter
                clauses.append(table.c[name] == value if storable(value) else sa.false())
        return clauses

    def where(self) -> list[sa.ColumnElement[bool]]:
        """Exact clauses over raw ``usage_records``: ``since <= created_at < until``."""
        table = schema.usage_records
        clauses = self._same(table)
        if self.since is not None:
            clauses.append(table.c.created_at >= _utc(self.since))
        if self.until is not None:
            clauses.append(table.c.created_at < _utc(self.until))
        return clauses

    def rollup_where(self) -> list[sa.ColumnElement[bool]]:
        """Clauses over ``usage_hourly``: a bucket counts when its hour start is in [floor_hour(since), until).

        So ``since`` is floored to its hour and a bucket starting before ``until`` counts whole; for hour-aligned
        ``since`` and ``until`` the figures equal the exact sums over the raw records.
        """
        table = schema.usage_hourly
        clauses = self._same(table)
        if self.since is not None:
            clauses.append(table.c.hour >= floor_hour(self.since))
        if self.until is not None:
            clauses.append(table.c.hour < _utc(self.until))
        return clauses


@dataclass(slots=True)
class _Sums:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    errors: int = 0

    def add(self, record: UsageRecord) -> None:
        self.requests += 1
        self.prompt_tokens += record.prompt_tokens
        self.completion_tokens += record.completion_tokens
        self.cost_usd += record.cost_usd
        self.errors += 1 if record.status >= 400 else 0


def rollup_rows(records: Sequence[UsageRecord]) -> list[dict[str, Any]]:
    """One row per rollup group of the batch, sorted by key.

    Aggregating first means one upsert per group instead of per record; sorting makes concurrent writers (several
    replicas) lock the same rows in the same order, so PostgreSQL cannot deadlock them against each other.
    """
    groups: dict[tuple[datetime, str, str, str, str], _Sums] = {}
    for record in records:
        key = (floor_hour(record.created_at), record.tenant_id, record.key_id, record.model, record.backend or "")
        groups.setdefault(key, _Sums()).add(record)
    return [{**dict(zip(ROLLUP_KEY, key, strict=True)), **dataclasses.asdict(groups[key])} for key in sorted(groups)]


def _upsert(dialect: str) -> Any:
    """``INSERT … ON CONFLICT (hour, tenant, key, model, backend) DO UPDATE SET m = m + excluded.m``.

    A stored cost already above :data:`MAX_COST_USD` (written before costs were bounded) is kept as it is rather
    than added to: PostgreSQL raises on a float overflow, which would fail every later batch of that hour.
    """
    table = schema.usage_hourly
    statement = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
    changes: dict[str, Any] = {name: table.c[name] + statement.excluded[name] for name in MEASURES}
    changes["cost_usd"] = sa.case(
        (table.c.cost_usd <= MAX_COST_USD, table.c.cost_usd + statement.excluded.cost_usd), else_=table.c.cost_usd
    )
    return statement.on_conflict_do_update(index_elements=list(ROLLUP_KEY), set_=changes)


def bounded_cost(column: sa.ColumnElement[float]) -> sa.ColumnElement[float]:
    """A stored cost as reports count it: within ``[0, MAX_COST_USD]``, ``inf`` and NaN (PostgreSQL) as the max.

    Costs are bounded on the way in; this keeps rows stored before that (a price of ``1e308``) from making every
    sum that includes them infinite or overflow, while still showing them as an obviously huge cost.
    """
    zero, ceiling = sa.literal(0.0, sa.Float()), sa.literal(MAX_COST_USD, sa.Float())
    return sa.case((column.between(zero, ceiling), column), (column < zero, zero), else_=ceiling)


def _measure_columns() -> list[sa.Label[Any]]:
    table = schema.usage_hourly
    columns = [sa.func.coalesce(sa.func.sum(table.c[name]), 0).label(name) for name in MEASURES]
    cost = sa.func.coalesce(sa.func.sum(bounded_cost(table.c.cost_usd)), 0.0).label("cost_usd")
    columns[MEASURES.index("cost_usd")] = cost
    return columns


def _totals(row: Any) -> dict[str, Any]:
    return {
        "requests": int(row.requests),
        "prompt_tokens": int(row.prompt_tokens),
        "completion_tokens": int(row.completion_tokens),
        "total_tokens": int(row.prompt_tokens) + int(row.completion_tokens),
        "cost_usd": round(float(row.cost_usd), 9),
        "errors": int(row.errors),
    }


def _record_out(row: Any) -> dict[str, Any]:
    record = dict(row._mapping)
    created = as_utc(record["created_at"])
    record["created_at"] = created.isoformat() if created else None
    record["estimated"] = bool(record["estimated"])
    record["streamed"] = bool(record["streamed"])
    record["cost_usd"] = bounded(float(record["cost_usd"]), MAX_COST_USD, nan=MAX_COST_USD)
    for name in ("latency_ms", "ttft_ms"):
        if record[name] is not None and not math.isfinite(record[name]):
            record[name] = None
    return record


def _group_column(group: str, dialect: str) -> sa.ColumnElement[Any]:
    """The rollup expression a group is keyed by. Literal 'UTC', not a bound parameter: PostgreSQL must see the
    GROUP BY expression equal to the selected one, and ``date()`` of a timestamptz would use the session zone."""
    table = schema.usage_hourly
    if group == "hour":
        return table.c.hour
    if group == "day":
        if dialect == "postgresql":
            return sa.func.date(sa.func.timezone(sa.literal_column("'UTC'"), table.c.hour))
        return sa.func.date(table.c.hour)
    return table.c[_COLUMN_OF.get(group, group)]


def _group_value(group: str, value: Any) -> Any:
    if group == "hour":
        hour = as_utc(value)
        return hour.astimezone(UTC).isoformat() if hour else None
    if group == "backend":
        return value or None  # stored as "" when the record had no backend
    return str(value)


_RECORD_FIELDS = tuple(field.name for field in dataclasses.fields(UsageRecord))


_TEXT_LENGTHS = {
    name: column.type.length
    for name, column in schema.usage_records.c.items()
    if isinstance(column.type, sa.String) and column.type.length
}


def _text(value: str, length: int) -> str:
    if not storable(value):
        value = value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
    return value[:length]


def storable_record(record: UsageRecord) -> UsageRecord:
    """``record`` as the database can hold it: text without NUL or lone surrogates and cut to its column, the
    cost within ``[0, MAX_COST_USD]``. One record PostgreSQL refuses would otherwise fail its whole batch again
    and again; costs out of range would make every report that sums them infinite."""
    changes: dict[str, Any] = {}
    for name, length in _TEXT_LENGTHS.items():
        value = getattr(record, name)
        if isinstance(value, str) and (len(value) > length or not storable(value)):
            changes[name] = _text(value, length)
    if not 0.0 <= record.cost_usd <= MAX_COST_USD:  # also catches NaN
        changes["cost_usd"] = bounded(record.cost_usd, MAX_COST_USD, nan=MAX_COST_USD)
    return dataclasses.replace(record, **changes) if changes else record


def _as_row(record: UsageRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in _RECORD_FIELDS}


class UsageRepo:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @property
    def _dialect(self) -> str:
        return self._engine.dialect.name

    async def insert_many(self, records: Sequence[UsageRecord]) -> None:
        """Append the raw records and add them to the hourly rollups, all or nothing (the writer retries a failed
        batch, which therefore can never be counted twice)."""
        if not records:
            return
        records = [storable_record(record) for record in records]
        rows = [_as_row(record) for record in records]  # asdict() deep-copies every field: too slow here
        async with self._engine.begin() as conn:
            await conn.execute(schema.usage_records.insert(), rows)
            await conn.execute(_upsert(self._dialect), rollup_rows(records))

    async def summary(
        self, filters: UsageFilter, group_by: Sequence[str] = ("model",), top: int | None = None
    ) -> dict[str, Any]:
        """Totals and one ``by_<group>`` list per group, from the rollups only.

        Groups are ordered by their value, or with ``top`` the ``top`` largest by cost, then requests. ``totals``
        always covers everything the filters match, whatever ``top`` leaves out.
        """
        unknown = [group for group in group_by if group not in GROUPS]
        if unknown:
            raise ValueError(f"unknown usage group(s): {', '.join(unknown)}")
        clauses = filters.rollup_where()
        result: dict[str, Any] = {}
        async with self._engine.connect() as conn:
            total_row = (await conn.execute(sa.select(*_measure_columns()).where(*clauses))).one()
            result["totals"] = _totals(total_row)
            for group in group_by:
                result[f"by_{group}"] = await self._groups(conn, group, clauses, top)
        return result

    async def _groups(
        self, conn: AsyncConnection, group: str, clauses: list[sa.ColumnElement[bool]], top: int | None
    ) -> list[dict[str, Any]]:
        column = _group_column(group, self._dialect)
        measures = _measure_columns()
        query = sa.select(column.label("grp"), *measures).where(*clauses).group_by(column)
        if top is None:
            query = query.order_by(column)
        else:
            cost, requests = measures[MEASURES.index("cost_usd")], measures[MEASURES.index("requests")]
            query = query.order_by(cost.desc(), requests.desc(), column).limit(top)
        rows = await conn.execute(query)
        return [{group: _group_value(group, row.grp), **_totals(row)} for row in rows]

    async def records(self, filters: UsageFilter, limit: int = 100) -> list[dict[str, Any]]:
        """The newest raw records matching the filters (for audits and the per-request view)."""
        table = schema.usage_records
        query = table.select().where(*filters.where()).order_by(table.c.id.desc()).limit(limit)
        async with self._engine.connect() as conn:
            rows = await conn.execute(query)
        return [_record_out(row) for row in rows]

    async def spent_since(self, column: str, value: str | Sequence[str], since: datetime) -> float:
        """Spend of one tenant or key (or of several keys) since a time: rebuilds budget counters after a restart.

        Whole hours come from the rollups (cheap, and still there after raw records are purged: a ``total``
        budget starts at the epoch); only the partial hour after a ``since`` that is not hour-aligned is summed
        from raw records. Budget periods start at UTC midnight, so in practice that part is empty.
        """
        since = _utc(since)
        boundary = ceil_hour(since)
        hourly, raw = schema.usage_hourly, schema.usage_records

        def matches(table: sa.Table) -> sa.ColumnElement[bool]:
            return table.c[column] == value if isinstance(value, str) else table.c[column].in_(value)

        rolled = sa.select(sa.func.coalesce(sa.func.sum(bounded_cost(hourly.c.cost_usd)), 0.0)).where(
            matches(hourly), hourly.c.hour >= boundary
        )
        async with self._engine.connect() as conn:
            spent = float(await conn.scalar(rolled) or 0.0)
            if boundary > since:
                partial = sa.select(sa.func.coalesce(sa.func.sum(bounded_cost(raw.c.cost_usd)), 0.0)).where(
                    matches(raw), raw.c.created_at >= since, raw.c.created_at < boundary
                )
                spent += float(await conn.scalar(partial) or 0.0)
        return spent

    async def scope_spent_since(self, scope_name: str, since: float) -> float:
        """Spend of a limits scope (``tenant:<id>``, ``user:<id>`` or ``key:<id>``) since a Unix time."""
        kind, _, row_id = scope_name.partition(":")
        if kind == "user":
            return await self.user_spent_since(row_id, datetime.fromtimestamp(since, UTC))
        column = {"tenant": "tenant_id", "key": "key_id"}[kind]
        return await self.spent_since(column, row_id, datetime.fromtimestamp(since, UTC))

    async def user_spent_since(self, user_id: str, since: datetime) -> float:
        """A user's spend is the spend of its keys (the ledger records keys; a key's owner never changes)."""
        keys = schema.api_keys
        async with self._engine.connect() as conn:
            key_ids = list(await conn.scalars(sa.select(keys.c.id).where(keys.c.user_id == user_id)))
        return await self.spent_since("key_id", key_ids, since) if key_ids else 0.0

    async def purge_raw_before(self, cutoff: datetime) -> int:
        """Delete raw records older than ``cutoff`` floored to its hour; the rollups are kept. Returns the count.

        Flooring keeps every hour's raw records whole (all kept or all gone), which :meth:`spent_since` relies on.
        """
        table = schema.usage_records
        async with self._engine.begin() as conn:
            result = await conn.execute(table.delete().where(table.c.created_at < floor_hour(cutoff)))
        return int(result.rowcount or 0)

    async def count(self) -> int:
        async with self._engine.connect() as conn:
            return int(await conn.scalar(sa.select(sa.func.count()).select_from(schema.usage_records)) or 0)
