"""The repositories behave the same over SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from tenantgate.auth.keys import generate_key
from tenantgate.storage.database import migrate
from tenantgate.storage.repos import BackendRepo, DuplicateName, KeyRepo, StateRepo, TenantRepo
from tenantgate.storage.rows import BackendModel, LimitFields, UsageRecord
from tenantgate.storage.usage import UsageFilter, UsageRepo


async def test_migrations_are_idempotent(engine: AsyncEngine) -> None:
    """Every start migrates: running it on an up-to-date database must change nothing and not fail."""
    before = await StateRepo(engine).config_version()
    await migrate(engine)
    async with engine.connect() as conn:
        revision = await conn.scalar(sa.text("SELECT version_num FROM alembic_version"))
    assert revision == "0007" and await StateRepo(engine).config_version() == before


async def test_tenants_and_version_bumps(engine: AsyncEngine) -> None:
    tenants, state = TenantRepo(engine), StateRepo(engine)
    before = await state.config_version()
    tenant = await tenants.create("acme", LimitFields(rpm=10, budget_usd=5.0, budget_period="daily"))
    assert await state.config_version() == before + 1
    assert tenant.limits.rpm == 10 and tenant.limits.budget_period == "daily"
    assert tenant.created_at.tzinfo is not None
    with pytest.raises(DuplicateName):
        await tenants.create("acme")
    updated = await tenants.update(tenant.id, {"rpm": 20})
    assert updated is not None and updated.limits.rpm == 20 and updated.name == "acme"
    assert (await tenants.get_by_name("acme")) == updated


async def test_keys_lookup_revoke_and_tenant_join(engine: AsyncEngine) -> None:
    tenant = await TenantRepo(engine).create("keys-co", LimitFields(tpm=1000))
    keys = KeyRepo(engine)
    new = generate_key()
    expires = datetime.now(UTC) + timedelta(days=1)
    row = await keys.create(
        tenant_id=tenant.id,
        public_id=new.public_id,
        secret_hash=new.secret_hash,
        models=["a", "b"],
        expires_at=expires,
        limits=LimitFields(rpm=3),
    )
    found = await keys.find_by_public_id(new.public_id)
    assert found is not None
    key, owner = found.key, found.tenant
    assert found.user is None  # an admin-made key belongs to no person
    assert key.id == row.id and key.models == ["a", "b"] and key.limits.rpm == 3
    assert owner.id == tenant.id and owner.limits.tpm == 1000
    assert key.expires_at is not None and abs((key.expires_at - expires).total_seconds()) < 1
    assert new.plaintext.split("-", 2)[2] not in key.secret_hash
    revoked = await keys.revoke(row.id)
    assert revoked is not None and revoked.revoked_at is not None
    assert await keys.find_by_public_id("nope") is None
    await TenantRepo(engine).delete(tenant.id)
    assert await keys.get(row.id) is None


async def test_backends(engine: AsyncEngine) -> None:
    repo = BackendRepo(engine)
    created = await repo.create(
        name="vllm-1",
        base_url="http://h:8000/v1",
        api_key_encrypted="enc",
        models=[BackendModel("m", "up/m", 0.1, 0.2)],
    )
    assert created.models == (BackendModel("m", "up/m", 0.1, 0.2),)
    with pytest.raises(DuplicateName):
        await repo.create(name="vllm-1", base_url="http://h", api_key_encrypted=None, models=[])
    updated = await repo.update(created.id, {"enabled": False, "models": [BackendModel("n", "n")]})
    assert updated is not None and not updated.enabled and updated.models[0].name == "n"
    assert await repo.delete(created.id) and await repo.get(created.id) is None


def _record(i: int, tenant: str, key: str, model: str, when: datetime) -> UsageRecord:
    return UsageRecord(
        f"req_{i}",
        when,
        tenant,
        key,
        "chat/completions",
        model,
        "b1",
        10 + i,
        2 * i,
        0.001 * i,
        200,
        12.5,
        3.0,
        i % 2 == 0,
        False,
    )


async def test_usage_ledger_sums_and_groups(engine: AsyncEngine) -> None:
    repo = UsageRepo(engine)
    now = datetime.now(UTC)
    records = [_record(i, "tU", f"k{i % 2}", "m1" if i < 6 else "m2", now - timedelta(days=i % 3)) for i in range(10)]
    await repo.insert_many(records)
    summary = await repo.summary(UsageFilter(tenant_id="tU"), ["model", "key_id", "day"])
    assert summary["totals"]["requests"] == 10
    assert summary["totals"]["prompt_tokens"] == sum(r.prompt_tokens for r in records)
    assert summary["totals"]["completion_tokens"] == sum(r.completion_tokens for r in records)
    assert abs(summary["totals"]["cost_usd"] - sum(r.cost_usd for r in records)) < 1e-9
    assert [(g["model"], g["requests"]) for g in summary["by_model"]] == [("m1", 6), ("m2", 4)]
    assert sum(g["requests"] for g in summary["by_day"]) == 10 and len(summary["by_day"]) == 3
    recent = await repo.summary(UsageFilter(tenant_id="tU", since=now - timedelta(hours=1)), [])
    assert recent["totals"]["requests"] == len([r for r in records if r.created_at >= now - timedelta(hours=1)])
    assert await repo.spent_since("key_id", "k1", now - timedelta(days=10)) == pytest.approx(
        sum(r.cost_usd for r in records if r.key_id == "k1")
    )
    newest = await repo.records(UsageFilter(key_id="k0"), limit=2)
    assert [r["request_id"] for r in newest] == ["req_8", "req_6"]
