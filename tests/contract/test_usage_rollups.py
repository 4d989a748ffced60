"""Hourly usage rollups behave the same over SQLite and PostgreSQL and always equal the sums of the raw records.

Each test writes its own records into its own time window (``window(n)``) and reports only over that window, so
the tests share one database without seeing each other's figures. Expected figures are computed here, in Python,
from the records themselves, never through the code under test.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tenantgate.storage import schema
from tenantgate.storage.database import MIGRATIONS_DIR, create_engine
from tenantgate.storage.people import UserRepo
from tenantgate.storage.repos import KeyRepo, TenantRepo
from tenantgate.storage.rows import UsageRecord
from tenantgate.storage.usage import GROUPS, UsageFilter, UsageRepo
from tests.support import PG_URL

Grouper = Callable[[UsageRecord], Any]
KEY_OF: dict[str, Grouper] = {
    "tenant": lambda r: r.tenant_id,
    "tenant_id": lambda r: r.tenant_id,
    "key": lambda r: r.key_id,
    "key_id": lambda r: r.key_id,
    "model": lambda r: r.model,
    "backend": lambda r: r.backend,
    "day": lambda r: r.created_at.date().isoformat(),
    "hour": lambda r: r.created_at.replace(minute=0, second=0, microsecond=0).isoformat(),
}


def window(n: int) -> tuple[datetime, datetime]:
    """A private two-day window per test (hour-aligned), far from the other tests' windows."""
    start = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(days=10 * n)
    return start, start + timedelta(days=2)


def make_records(prefix: str, start: datetime, count: int, seed: int, hours: int = 30) -> list[UsageRecord]:
    """Records of two tenants (two keys each), three models, backends including none, errors included."""
    rng = random.Random(seed)
    records = []
    for i in range(count):
        tenant = f"{prefix}-t{rng.randrange(2)}"
        records.append(
            UsageRecord(
                request_id=f"{prefix}-{i}",
                created_at=start + timedelta(seconds=rng.randrange(hours * 3600)),
                tenant_id=tenant,
                key_id=f"{tenant}-k{rng.randrange(2)}",
                endpoint="chat/completions",
                model=rng.choice(["m-a", "m-b", "m-c"]),
                backend=rng.choice(["b1", "b2", None]),
                prompt_tokens=rng.randrange(1, 500),
                completion_tokens=rng.randrange(0, 300),
                cost_usd=rng.randrange(0, 10_000) / 1e6,
                status=rng.choice([200, 200, 200, 429, 499, 502]),
                latency_ms=10.0,
                ttft_ms=None,
                estimated=False,
                streamed=False,
            )
        )
    return records


def sums(records: Iterable[UsageRecord]) -> dict[str, Any]:
    chosen = list(records)
    prompt = sum(r.prompt_tokens for r in chosen)
    completion = sum(r.completion_tokens for r in chosen)
    return {
        "requests": len(chosen),
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "cost_usd": sum(r.cost_usd for r in chosen),
        "errors": sum(1 for r in chosen if r.status >= 400),
    }


def expected_groups(records: list[UsageRecord], group: str) -> dict[Any, dict[str, Any]]:
    by: dict[Any, list[UsageRecord]] = defaultdict(list)
    for record in records:
        by[KEY_OF[group](record)].append(record)
    return {value: sums(members) for value, members in by.items()}


def assert_same(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert {k: v for k, v in got.items() if k != "cost_usd"} == {k: v for k, v in want.items() if k != "cost_usd"}
    assert got["cost_usd"] == pytest.approx(want["cost_usd"], abs=1e-9)


def assert_groups(rows: list[dict[str, Any]], group: str, want: dict[Any, dict[str, Any]]) -> None:
    assert [row[group] for row in rows] == sorted(want, key=lambda v: (v is not None, v or ""))
    for row in rows:
        assert_same({k: v for k, v in row.items() if k != group}, want[row[group]])


async def rollup_table(engine: AsyncEngine, prefix: str) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    table = schema.usage_hourly
    query = table.select().where(table.c.tenant_id.startswith(prefix))
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    out = {}
    for row in rows:
        hour = row.hour if row.hour.tzinfo else row.hour.replace(tzinfo=UTC)
        key = (hour.astimezone(UTC), row.tenant_id, row.key_id, row.model, row.backend)
        assert key not in out  # one row per group: the upsert hit the same row every time
        out[key] = (row.requests, row.prompt_tokens, row.completion_tokens, round(row.cost_usd, 9), row.errors)
    return out


def rollups_of(records: list[UsageRecord]) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    by: dict[tuple[Any, ...], list[UsageRecord]] = defaultdict(list)
    for r in records:
        by[
            (r.created_at.replace(minute=0, second=0, microsecond=0), r.tenant_id, r.key_id, r.model, r.backend or "")
        ].append(r)
    out = {}
    for key, members in by.items():
        s = sums(members)
        out[key] = (s["requests"], s["prompt_tokens"], s["completion_tokens"], round(s["cost_usd"], 9), s["errors"])
    return out


async def test_rollups_equal_raw_sums_after_overlapping_batches(engine: AsyncEngine) -> None:
    repo = UsageRepo(engine)
    start, end = window(1)
    records = make_records("ovl", start, 400, seed=1, hours=6)  # few hours: later batches hit earlier groups
    offset = 0
    for size in (1, 7, 50, 142, 200):
        await repo.insert_many(records[offset : offset + size])
        offset += size
        assert await rollup_table(engine, "ovl") == rollups_of(records[:offset])
    raw = await repo.records(UsageFilter(since=start, until=end), limit=10_000)
    assert sorted(r["request_id"] for r in raw) == sorted(r.request_id for r in records)
    report = await repo.summary(UsageFilter(since=start, until=end), [])
    assert_same(report["totals"], sums(records))


async def test_concurrent_writers_add_up(engine: AsyncEngine) -> None:
    repo = UsageRepo(engine)
    start, _ = window(2)
    records = make_records("conc", start, 240, seed=2, hours=2)
    batches = [records[i::8] for i in range(8)]  # every batch touches (nearly) every group
    await asyncio.gather(*(repo.insert_many(batch) for batch in batches))
    assert await rollup_table(engine, "conc") == rollups_of(records)


@pytest.mark.parametrize("group", GROUPS)
async def test_group_by_each_value(engine: AsyncEngine, group: str) -> None:
    repo = UsageRepo(engine)
    start, end = window(10 + GROUPS.index(group))
    records = make_records(f"grp-{group}", start, 150, seed=3)
    await repo.insert_many(records)
    report = await repo.summary(UsageFilter(since=start, until=end), [group])
    assert len(report[f"by_{group}"]) > 1
    assert_groups(report[f"by_{group}"], group, expected_groups(records, group))
    assert_same(report["totals"], sums(records))
    tenant = records[0].tenant_id
    one_tenant = await repo.summary(UsageFilter(tenant_id=tenant, since=start, until=end), [group])
    assert_groups(
        one_tenant[f"by_{group}"], group, expected_groups([r for r in records if r.tenant_id == tenant], group)
    )


@pytest.mark.parametrize("engine", ["postgres"], indirect=True)  # SQLite has no session time zone
async def test_day_and_hour_groups_ignore_the_session_time_zone(engine: AsyncEngine) -> None:
    """PostgreSQL's date() of a timestamptz uses the session's zone; reports must stay in UTC whatever it is."""
    assert engine.dialect.name == "postgresql"
    start, end = window(8)
    records = make_records("zone", start, 150, seed=10)
    await UsageRepo(engine).insert_many(records)
    kolkata = create_async_engine(PG_URL, connect_args={"server_settings": {"timezone": "Asia/Kolkata"}})
    try:
        report = await UsageRepo(kolkata).summary(UsageFilter(since=start, until=end), ["day", "hour"])
    finally:
        await kolkata.dispose()
    assert_groups(report["by_day"], "day", expected_groups(records, "day"))
    assert_groups(report["by_hour"], "hour", expected_groups(records, "hour"))


async def test_top_keeps_largest_groups_by_cost_then_requests(engine: AsyncEngine) -> None:
    repo = UsageRepo(engine)
    start, end = window(4)
    template = make_records("top", start, 1, seed=4)[0]
    # tie-few and tie-many cost the same (0.01): requests break the tie
    spec = [
        ("cheap", 0.001),
        ("tie-few", 0.01),
        ("tie-many", 0.004),
        ("tie-many", 0.006),
        ("big", 0.02),
        ("mid", 0.005),
    ]
    records = [
        dataclasses.replace(template, request_id=f"top-{i}", model=model, cost_usd=cost)
        for i, (model, cost) in enumerate(spec)
    ]
    await repo.insert_many(records)
    report = await repo.summary(UsageFilter(since=start, until=end), ["model"], top=3)
    assert [row["model"] for row in report["by_model"]] == ["big", "tie-many", "tie-few"]
    assert report["totals"]["requests"] == len(records)  # top narrows the groups, never the totals
    everything = await repo.summary(UsageFilter(since=start, until=end), ["model"])
    assert [row["model"] for row in everything["by_model"]] == sorted({model for model, _ in spec})


async def test_since_until_at_hour_granularity(engine: AsyncEngine) -> None:
    repo = UsageRepo(engine)
    start, _ = window(5)
    records = make_records("time", start, 300, seed=5)
    await repo.insert_many(records)
    lo, hi = start + timedelta(hours=3), start + timedelta(hours=11)
    aligned = await repo.summary(UsageFilter(since=lo, until=hi), ["hour"])
    inside = [r for r in records if lo <= r.created_at < hi]
    assert_same(aligned["totals"], sums(inside))
    assert_groups(aligned["by_hour"], "hour", expected_groups(inside, "hour"))
    raw = await repo.records(UsageFilter(since=lo, until=hi), limit=10_000)
    assert len(raw) == aligned["totals"]["requests"]
    # not aligned: since is floored to its hour, a bucket counts when its start is before until
    loose = await repo.summary(UsageFilter(since=lo + timedelta(minutes=59), until=hi + timedelta(minutes=1)), [])
    widened = [r for r in records if lo <= r.created_at < hi + timedelta(hours=1)]
    assert_same(loose["totals"], sums(widened))
    assert (await repo.summary(UsageFilter(since=hi, until=hi), []))["totals"]["requests"] == 0
    # a non-UTC since means the same instant
    east = UsageFilter(since=lo.astimezone(timezone(timedelta(hours=5, minutes=30))), until=hi)
    assert (await repo.summary(east, []))["totals"]["requests"] == len(inside)


async def test_purge_keeps_rollups_and_budget_history(engine: AsyncEngine) -> None:
    repo = UsageRepo(engine)
    start = datetime(2020, 1, 1, tzinfo=UTC)  # older than every other test's window: purge only touches these
    records = make_records("purge", start, 200, seed=6, hours=48)
    await repo.insert_many(records)
    window_filter = UsageFilter(since=start, until=start + timedelta(days=3))
    before = await repo.summary(window_filter, ["hour", "key"])
    tenant = records[0].tenant_id
    spent_before = await repo.spent_since("tenant_id", tenant, datetime(1970, 1, 1, tzinfo=UTC))
    cutoff = start + timedelta(hours=24, minutes=30)  # floored: the 24:00 hour stays whole
    purged = await repo.purge_raw_before(cutoff)
    gone = [r for r in records if r.created_at < start + timedelta(hours=24)]
    assert purged == len(gone) > 0
    raw_left = await repo.records(window_filter, limit=10_000)
    assert sorted(r["request_id"] for r in raw_left) == sorted(r.request_id for r in records if r not in gone)
    assert await repo.summary(window_filter, ["hour", "key"]) == before
    assert await repo.scope_spent_since(f"tenant:{tenant}", 0) == pytest.approx(spent_before, abs=1e-9)
    assert spent_before == pytest.approx(sum(r.cost_usd for r in records if r.tenant_id == tenant), abs=1e-9)
    assert await repo.purge_raw_before(cutoff) == 0


async def test_spent_since_mid_hour_adds_raw_part(engine: AsyncEngine) -> None:
    repo = UsageRepo(engine)
    start, _ = window(6)
    records = make_records("spent", start, 200, seed=7, hours=6)
    await repo.insert_many(records)
    key = records[0].key_id
    since = start + timedelta(hours=2, minutes=17, seconds=5)
    want = sum(r.cost_usd for r in records if r.key_id == key and r.created_at >= since)
    assert await repo.spent_since("key_id", key, since) == pytest.approx(want, abs=1e-9)


async def test_a_users_spend_is_its_keys_spend(engine: AsyncEngine) -> None:
    """``user:<id>`` budgets are seeded from the spend of every key the user owns (and of no other key)."""
    suffix = random.Random().randrange(10**9)
    tenant = await TenantRepo(engine).create(f"user-spend-{suffix}")
    user = await UserRepo(engine).create(email=f"spend-{suffix}@example.org", password_hash=None)
    keys = KeyRepo(engine)
    owned = [
        await keys.create(tenant_id=tenant.id, public_id=f"us{suffix}{i}", secret_hash="0" * 64, user_id=user.id)
        for i in range(2)
    ]
    other = await keys.create(tenant_id=tenant.id, public_id=f"us{suffix}x", secret_hash="0" * 64)
    start, _ = window(6)
    records = [
        dataclasses.replace(record, key_id=(owned[0], owned[1], other)[i % 3].id, tenant_id=tenant.id)
        for i, record in enumerate(make_records(f"user-spend-{suffix}", start, 120, seed=11, hours=6))
    ]
    await UsageRepo(engine).insert_many(records)
    since = start + timedelta(hours=1, minutes=40)  # mid-hour: both the rollups and the raw part
    mine = {row.id for row in owned}
    want = sum(r.cost_usd for r in records if r.key_id in mine and r.created_at >= since)
    got = await UsageRepo(engine).scope_spent_since(f"user:{user.id}", since.timestamp())
    assert want > 0 and got == pytest.approx(want, abs=1e-9)
    nobody = await UserRepo(engine).create(email=f"none-{suffix}@example.org", password_hash=None)
    assert await UsageRepo(engine).scope_spent_since(f"user:{nobody.id}", 0) == 0.0


async def test_migration_matches_schema(engine: AsyncEngine) -> None:
    def diff(connection: sa.Connection) -> list[Any]:
        found = compare_metadata(MigrationContext.configure(connection), schema.metadata)
        return [d for d in found if "usage_hourly" in repr(d)]

    async with engine.connect() as conn:
        assert await conn.run_sync(diff) == []


@pytest.fixture()
async def fresh_engine(engine: AsyncEngine, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AsyncEngine]:
    """An empty database of the same kind (PostgreSQL: a private schema), for migrating step by step."""
    if engine.dialect.name == "sqlite":
        fresh = create_engine(f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('backfill') / 'db.sqlite'}")
    else:
        async with engine.begin() as conn:
            await conn.execute(sa.text("DROP SCHEMA IF EXISTS usage_backfill CASCADE"))
            await conn.execute(sa.text("CREATE SCHEMA usage_backfill"))
        fresh = create_async_engine(PG_URL, connect_args={"server_settings": {"search_path": "usage_backfill"}})
    yield fresh
    await fresh.dispose()


async def test_upgrade_backfills_rollups_from_existing_records(fresh_engine: AsyncEngine) -> None:
    def upgrade_to(revision: str) -> Callable[[sa.Connection], None]:
        def run(connection: sa.Connection) -> None:
            config = Config(str(MIGRATIONS_DIR / "alembic.ini"))
            config.set_main_option("script_location", str(MIGRATIONS_DIR))
            config.attributes["connection"] = connection
            command.upgrade(config, revision)

        return run

    async with fresh_engine.begin() as conn:
        await conn.run_sync(upgrade_to("0004"))
    start, _ = window(7)
    old = make_records("fill", start, 150, seed=8, hours=5)
    async with fresh_engine.begin() as conn:
        await conn.execute(schema.usage_records.insert(), [dataclasses.asdict(r) for r in old])
    async with fresh_engine.begin() as conn:
        await conn.run_sync(upgrade_to("head"))
    assert await rollup_table(fresh_engine, "fill") == rollups_of(old)
    new = make_records("fill", start, 60, seed=9, hours=5)  # same groups: must land on the backfilled rows
    new = [dataclasses.replace(r, request_id=f"new-{r.request_id}") for r in new]
    await UsageRepo(fresh_engine).insert_many(new)
    assert await rollup_table(fresh_engine, "fill") == rollups_of(old + new)
