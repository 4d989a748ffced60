"""One contract for every idempotency store: memory, SQLite, PostgreSQL and Redis.

Every test runs against all four with a controllable clock, so leases and TTLs expire without sleeping and
the implementations cannot drift apart. Databases are migrated once per module (PostgreSQL is reset first);
every test uses its own random idempotency key, and Redis tests their own key prefix, deleted afterwards.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from tenantgate.idempotency import (
    DatabaseIdempotencyStore,
    IdempotencyStore,
    IdemScope,
    LeaseLost,
    MemoryIdempotencyStore,
    RedisIdempotencyStore,
    StoredResponse,
    StreamLost,
    fingerprint,
)
from tenantgate.storage.database import create_engine, migrate
from tenantgate.storage.schema import idempotency_events, idempotency_records, metadata
from tests.pg import reset_postgres
from tests.support import REDIS_URL, require_redis

T0 = 1_750_000_000.0
FP = fingerprint({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
OTHER_FP = fingerprint({"model": "m", "messages": [{"role": "user", "content": "bye"}]})
SHARED = ("sqlite", "postgres", "redis")  # kinds where two store instances are two replicas of one state


def ev(i: int) -> bytes:
    return b'data: {"i": %d, "raw": "\xff\x00"}\n\n' % i


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Backend:
    kind: str
    url: str | None = None
    engine: AsyncEngine | None = None


@pytest.fixture(scope="module")
async def sqlite_db(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Backend]:
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('idem') / 'idem.sqlite'}"
    engine = create_engine(url)
    await migrate(engine)
    yield Backend("sqlite", url, engine)
    await engine.dispose()


@pytest.fixture(scope="module")
async def postgres_db() -> AsyncIterator[Backend]:
    url = await asyncio.to_thread(reset_postgres)
    engine = create_engine(url)
    await migrate(engine)
    await migrate(engine)  # idempotent with 0002 too
    yield Backend("postgres", url, engine)
    await engine.dispose()


@pytest.fixture(
    params=[
        "memory",
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("redis", marks=pytest.mark.redis),
    ]
)
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param in ("sqlite", "postgres"):
        found: Backend = request.getfixturevalue(f"{request.param}_db")
        return found
    return Backend(request.param, REDIS_URL if request.param == "redis" else None)


@dataclass
class Maker:
    """Builds stores over one backend with one clock; each call is another instance (a replica, if shared)."""

    backend: Backend
    clock: FakeClock = field(default_factory=FakeClock)
    prefix: str = field(default_factory=lambda: f"tg:test:idem:{secrets.token_hex(6)}:")
    stores: list[IdempotencyStore] = field(default_factory=list)
    engines: list[AsyncEngine] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return self.backend.kind

    def __call__(self, **options: Any) -> IdempotencyStore:
        store: IdempotencyStore
        if self.kind == "memory":
            store = MemoryIdempotencyStore(clock=self.clock, **options)
        elif self.kind == "redis":
            assert self.backend.url is not None
            store = RedisIdempotencyStore(self.backend.url, self.prefix, clock=self.clock, **options)
        else:
            assert self.backend.engine is not None and self.backend.url is not None
            engine = self.backend.engine
            if self.stores:  # a second instance gets its own engine: another process, as far as it can tell
                engine = create_engine(self.backend.url)
                self.engines.append(engine)
            store = DatabaseIdempotencyStore(engine, clock=self.clock, **options)
        self.stores.append(store)
        return store


@pytest.fixture
async def make_store(backend: Backend) -> AsyncIterator[Maker]:
    if backend.kind == "redis":
        await require_redis()
    maker = Maker(backend)
    yield maker
    for store in maker.stores:
        await store.close()
    for engine in maker.engines:
        await engine.dispose()
    if backend.kind == "redis":
        client = Redis.from_url(REDIS_URL)
        try:
            keys = [key async for key in client.scan_iter(match=f"{maker.prefix}*", count=1000)]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()


def new_scope() -> IdemScope:
    """A fresh key per test (long on purpose: keys are hashed, not stored)."""
    return IdemScope("ten_a", "key_a", "/v1/chat/completions", "k-" + secrets.token_hex(8) + "x" * 300)


async def test_new_then_finish_then_replay(make_store: Maker) -> None:
    store, scope = make_store(), new_scope()
    claim = await store.begin(scope, FP, stream=False, lease_seconds=30, owner="a")
    assert (claim.kind, claim.owner, claim.is_stream) == ("new", "a", False)
    body = b'{"id": "chatcmpl-1", "bin": "\x00\xff"}'
    await store.finish(scope, "a", StoredResponse(201, {"content-type": "application/json", "x-r": "é"}, body), 60)
    replay = await store.begin(scope, FP, stream=False, lease_seconds=30, owner="b")
    assert replay.kind == "replay" and replay.events is None and not replay.is_stream
    assert replay.response == StoredResponse(201, {"content-type": "application/json", "x-r": "é"}, body)
    again = await store.begin(scope, FP, stream=False, lease_seconds=30, owner="c")
    assert again.kind == "replay" and again.response == replay.response  # replaying does not consume it


async def test_different_body_is_a_mismatch_while_running_and_after(make_store: Maker) -> None:
    store, scope = make_store(), new_scope()
    assert (await store.begin(scope, FP, stream=False, lease_seconds=30, owner="a")).kind == "new"
    assert (await store.begin(scope, OTHER_FP, stream=False, lease_seconds=30, owner="b")).kind == "mismatch"
    await store.finish(scope, "a", StoredResponse(200, {}, b"ok"), 60)
    mismatch = await store.begin(scope, OTHER_FP, stream=False, lease_seconds=30, owner="c")
    assert mismatch.kind == "mismatch" and mismatch.response is None


async def test_running_request_blocks_retries_until_its_lease_expires(make_store: Maker) -> None:
    store, scope = make_store(), new_scope()
    await store.begin(scope, FP, stream=True, lease_seconds=10, owner="a")
    make_store.clock.advance(9.9)
    busy = await store.begin(scope, FP, stream=True, lease_seconds=10, owner="b")
    assert (busy.kind, busy.owner, busy.is_stream) == ("in_progress", "a", True)
    make_store.clock.advance(0.2)
    taken = await store.begin(scope, FP, stream=True, lease_seconds=10, owner="b")
    assert (taken.kind, taken.owner) == ("new", "b")
    assert (await store.begin(scope, FP, stream=True, lease_seconds=10, owner="c")).owner == "b"
    for write in (
        store.append_event(scope, "a", ev(0)),
        store.finish(scope, "a", None, 60),
        store.renew(scope, "a", 10),
    ):
        with pytest.raises(LeaseLost):
            await write
    await store.abandon(scope, "a")  # the old owner's cleanup must not delete the new owner's record
    assert (await store.begin(scope, FP, stream=True, lease_seconds=10, owner="d")).owner == "b"


async def test_renew_extends_the_lease(make_store: Maker) -> None:
    store, scope = make_store(), new_scope()
    await store.begin(scope, FP, stream=True, lease_seconds=10, owner="a")
    make_store.clock.advance(8)
    await store.renew(scope, "a", 10)
    make_store.clock.advance(8)  # 16 s: past the first lease, inside the renewed one
    assert (await store.begin(scope, FP, stream=True, lease_seconds=10, owner="b")).kind == "in_progress"
    make_store.clock.advance(3)
    assert (await store.begin(scope, FP, stream=True, lease_seconds=10, owner="b")).kind == "new"


async def test_abandon_lets_the_retry_run_afresh(make_store: Maker) -> None:
    store, scope = make_store(), new_scope()
    await store.begin(scope, FP, stream=True, lease_seconds=30, owner="a")
    await store.append_event(scope, "a", ev(0))
    await store.abandon(scope, "b")  # not the owner: nothing happens
    assert (await store.begin(scope, FP, stream=True, lease_seconds=30, owner="b")).kind == "in_progress"
    await store.abandon(scope, "a")
    with pytest.raises(StreamLost):
        await store.read_events(scope, 0)
    fresh = await store.begin(scope, OTHER_FP, stream=True, lease_seconds=30, owner="b")
    assert fresh.kind == "new"  # not even bound to the old body: a failed validation is not stored
    assert await store.read_events(scope, 0) == ([], False)  # the abandoned run's events are gone


async def test_stream_events_are_stored_in_order_and_replayed(make_store: Maker) -> None:
    store, scope = make_store(), new_scope()
    await store.begin(scope, FP, stream=True, lease_seconds=30, owner="a")
    for i in range(5):
        await store.append_event(scope, "a", ev(i))
    assert await store.read_events(scope, 0) == ([ev(i) for i in range(5)], False)
    assert await store.read_events(scope, 3, owner="a") == ([ev(3), ev(4)], False)
    assert await store.read_events(scope, 7) == ([], False)
    await store.finish(scope, "a", None, 60)
    assert await store.read_events(scope, 3) == ([ev(3), ev(4)], True)
    with pytest.raises(LeaseLost):
        await store.append_event(scope, "a", ev(5))  # a finished stream is immutable
    replay = await store.begin(scope, FP, stream=True, lease_seconds=30, owner="b")
    assert replay.kind == "replay" and replay.is_stream and replay.response is None
    assert replay.events == [ev(i) for i in range(5)]


async def test_wait_events_wakes_on_append_and_on_finish(make_store: Maker) -> None:
    owner_store = make_store()
    follower = make_store() if make_store.kind in SHARED else owner_store  # another replica polls
    scope, loop = new_scope(), asyncio.get_running_loop()
    await owner_store.begin(scope, FP, stream=True, lease_seconds=30, owner="a")
    started = loop.time()
    assert await follower.wait_events(scope, 0, 0.1) == ([], False)
    assert loop.time() - started >= 0.09  # it did wait
    waiter = asyncio.create_task(follower.wait_events(scope, 0, 10.0, owner="a"))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    started = loop.time()
    await owner_store.append_event(scope, "a", ev(0))
    assert await asyncio.wait_for(waiter, 5) == ([ev(0)], False)
    assert loop.time() - started < 2  # woken, not timed out
    waiter = asyncio.create_task(follower.wait_events(scope, 1, 10.0))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    await owner_store.finish(scope, "a", None, 60)
    assert await asyncio.wait_for(waiter, 5) == ([], True)


async def test_attached_reader_receives_the_whole_stream_live(make_store: Maker) -> None:
    owner_store = make_store()
    follower = make_store() if make_store.kind in SHARED else owner_store
    scope = new_scope()
    await owner_store.begin(scope, FP, stream=True, lease_seconds=30, owner="a")
    await owner_store.append_event(scope, "a", ev(0))

    async def produce() -> None:
        for i in range(1, 8):
            await asyncio.sleep(0.01)
            await owner_store.append_event(scope, "a", ev(i))
        await owner_store.finish(scope, "a", None, 60)

    async def follow(start: int) -> list[bytes]:
        got: list[bytes] = []
        finished = False
        while not finished:
            events, finished = await follower.wait_events(scope, start + len(got), 5.0, owner="a")
            got += events
        return got

    # Bounded well below the 5 s wait: followers must be woken (or poll), not ride out their timeouts.
    _, from_start, from_three = await asyncio.wait_for(asyncio.gather(produce(), follow(0), follow(3)), 3)
    assert from_start == [ev(i) for i in range(8)]
    assert from_three == [ev(i) for i in range(3, 8)]


async def test_followers_learn_when_the_stream_is_lost(make_store: Maker) -> None:
    store, scope = make_store(), new_scope()
    await store.begin(scope, FP, stream=True, lease_seconds=10, owner="a")
    await store.append_event(scope, "a", ev(0))
    make_store.clock.advance(11)
    with pytest.raises(StreamLost):  # the owner died: waiting longer would never finish the stream
        await store.read_events(scope, 0)
    await store.begin(scope, FP, stream=True, lease_seconds=10, owner="b")
    assert await store.read_events(scope, 0) == ([], False)  # the new run starts from event 0
    with pytest.raises(StreamLost):  # a reader of the old run must not splice in the new one
        await store.wait_events(scope, 1, 1.0, owner="a")
    with pytest.raises(StreamLost):
        await store.read_events(new_scope(), 0)


async def test_concurrent_begins_elect_exactly_one_owner(make_store: Maker) -> None:
    stores = [make_store(), make_store()] if make_store.kind in SHARED else [make_store()]
    scope = new_scope()
    for round_ in range(2):  # first on an empty key, then as a race to take over an expired lease
        owners = [f"r{round_}-{i}" for i in range(8)]
        claims = await asyncio.gather(
            *(
                stores[i % len(stores)].begin(scope, FP, stream=True, lease_seconds=10, owner=o)
                for i, o in enumerate(owners)
            )
        )
        winners = [c for c in claims if c.kind == "new"]
        assert len(winners) == 1, [c.kind for c in claims]
        assert all(c.kind == "in_progress" and c.owner == winners[0].owner for c in claims if c.kind != "new")
        make_store.clock.advance(11)


async def test_scopes_are_isolated(make_store: Maker) -> None:
    store, scope = make_store(), new_scope()
    await store.begin(scope, FP, stream=False, lease_seconds=30, owner="a")
    for other in (
        IdemScope("ten_b", scope.key_id, scope.endpoint, scope.key),
        IdemScope(scope.tenant_id, "key_b", scope.endpoint, scope.key),
        IdemScope(scope.tenant_id, scope.key_id, "/v1/embeddings", scope.key),
    ):
        assert (await store.begin(other, OTHER_FP, stream=False, lease_seconds=30, owner="b")).kind == "new"


async def test_expired_records_count_as_absent(make_store: Maker) -> None:
    store = make_store(orphan_ttl_seconds=100)
    done, orphan = new_scope(), new_scope()
    await store.begin(done, FP, stream=False, lease_seconds=10, owner="a")
    await store.finish(done, "a", StoredResponse(200, {}, b"x"), 60)
    await store.begin(orphan, FP, stream=False, lease_seconds=10, owner="a")  # its owner dies
    make_store.clock.advance(59)
    assert (await store.begin(done, FP, stream=False, lease_seconds=10, owner="b")).kind == "replay"
    assert (await store.begin(orphan, OTHER_FP, stream=False, lease_seconds=10, owner="b")).kind == "mismatch"
    make_store.clock.advance(2)
    assert (await store.begin(done, OTHER_FP, stream=False, lease_seconds=10, owner="b")).kind == "new"
    make_store.clock.advance(50)  # 111 s: the orphan's lease (10) plus its retention (100) are over
    assert (await store.begin(orphan, OTHER_FP, stream=False, lease_seconds=10, owner="c")).kind == "new"


async def _rows(engine: AsyncEngine, keys: list[str]) -> tuple[set[str], set[str]]:
    async with engine.connect() as conn:
        records = await conn.scalars(
            sa.select(idempotency_records.c.scope_key).where(idempotency_records.c.scope_key.in_(keys))
        )
        events = await conn.scalars(
            sa.select(idempotency_events.c.scope_key).where(idempotency_events.c.scope_key.in_(keys))
        )
        return set(records), set(events)


async def test_purge_expired_deletes_only_expired_records(make_store: Maker) -> None:
    store = make_store(orphan_ttl_seconds=100)
    short, long, orphan = new_scope(), new_scope(), new_scope()
    for scope, ttl in ((short, 60), (long, 600)):
        await store.begin(scope, FP, stream=True, lease_seconds=10, owner="a")
        await store.append_event(scope, "a", ev(0))
        await store.finish(scope, "a", None, ttl)
    await store.begin(orphan, FP, stream=True, lease_seconds=10, owner="a")
    await store.append_event(orphan, "a", ev(0))
    make_store.clock.advance(120)
    purged = await store.purge_expired()
    replay = await store.begin(long, FP, stream=True, lease_seconds=10, owner="b")
    assert replay.kind == "replay" and replay.events == [ev(0)]
    if make_store.kind == "memory":
        assert isinstance(store, MemoryIdempotencyStore) and purged == 2 and len(store) == 1
    elif make_store.backend.engine is not None:
        assert purged >= 2  # the module's database may hold other tests' expired records too
        keys = [s.storage_key() for s in (short, long, orphan)]
        assert await _rows(make_store.backend.engine, keys) == ({long.storage_key()}, {long.storage_key()})
    else:  # Redis expires keys itself: both keys of a record carry the record's TTL
        assert isinstance(store, RedisIdempotencyStore) and purged == 0
        ttls = [await store.client.pttl(key) for key in store.keys(short)]
        assert all(0 < ttl <= 60_000 for ttl in ttls), ttls
        ttls = [await store.client.pttl(key) for key in store.keys(orphan)]
        assert all(60_000 < ttl <= 110_000 for ttl in ttls), ttls


@pytest.mark.parametrize("backend", SHARED, indirect=True)  # memory stores are per process
async def test_two_instances_share_records(make_store: Maker) -> None:
    replica_a, replica_b = make_store(), make_store()
    scope = new_scope()
    assert (await replica_a.begin(scope, FP, stream=True, lease_seconds=30, owner="a")).kind == "new"
    busy = await replica_b.begin(scope, FP, stream=True, lease_seconds=30, owner="b")
    assert (busy.kind, busy.owner) == ("in_progress", "a")
    await replica_a.append_event(scope, "a", ev(0))
    assert await replica_b.read_events(scope, 0, owner="a") == ([ev(0)], False)
    await replica_a.finish(scope, "a", StoredResponse(200, {"content-type": "text/event-stream"}, b""), 60)
    replay = await replica_b.begin(scope, FP, stream=True, lease_seconds=30, owner="b")
    assert replay.kind == "replay" and replay.events == [ev(0)]
    assert replay.response == StoredResponse(200, {"content-type": "text/event-stream"}, b"")


async def test_invalid_lease_is_refused(make_store: Maker) -> None:
    with pytest.raises(ValueError):
        await make_store().begin(new_scope(), FP, stream=False, lease_seconds=0, owner="a")


@pytest.mark.parametrize("backend", ["sqlite", "postgres"], indirect=True)
async def test_migration_matches_schema(backend: Backend) -> None:
    assert backend.engine is not None

    def diff(connection: sa.Connection) -> list[Any]:
        found = compare_metadata(MigrationContext.configure(connection), metadata)
        return [d for d in found if "idempotency" in repr(d)]

    async with backend.engine.connect() as conn:
        assert await conn.run_sync(diff) == []
