"""Preparing what some scenarios need before the gateway starts: a database with many keys, and a Redis.

The many-keys database is written with SQLAlchemy Core through the gateway's own schema tables (after its own
migrations), so it is exactly what the gateway would have created through the admin API, only 100,000 times
faster to make. Keys are generated with the gateway's ``generate_key()``: only the hash is stored, and the
plaintext of a random sample is kept for the load generator.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import shutil
import socket
import time
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from lib.procs import CLIENT_CPU, Proc, ensure_apt, free_port

# Limits high enough never to refuse, so limits cost what they cost without changing what is measured.
NEVER_REFUSE = {"rpm": 100_000_000, "tpm": 1_000_000_000}


def _migrate(db: Path) -> None:
    from tenantgate.storage.database import create_engine, migrate

    async def run() -> None:
        engine = create_engine(f"sqlite+aiosqlite:///{db}")
        try:
            await migrate(engine)
        finally:
            await engine.dispose()

    asyncio.run(run())


def seed_many_keys(db: Path, *, tenants: int, keys: int, sample: int, seed: int = 11) -> tuple[list[str], float]:
    """Create ``tenants`` tenants with ``keys`` keys spread over them; return ``sample`` plaintexts and seconds."""
    from tenantgate.auth.keys import generate_key
    from tenantgate.storage import schema

    started = time.monotonic()
    _migrate(db)
    rng = random.Random(seed)
    chosen = set(rng.sample(range(keys), min(sample, keys)))
    now = datetime.now(UTC)
    tenant_ids = [f"ten_{secrets.token_hex(8)}" for _ in range(tenants)]
    plaintexts: list[str] = []
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        conn.execute(
            schema.tenants.insert(),
            [{"id": tid, "name": f"bench-tenant-{i:05d}", "created_at": now} for i, tid in enumerate(tenant_ids)],
        )
        batch: list[dict[str, object]] = []
        for index in range(keys):
            new = generate_key()
            if index in chosen:
                plaintexts.append(new.plaintext)
            batch.append(
                {
                    "id": f"key_{secrets.token_hex(8)}",
                    "public_id": new.public_id,
                    "secret_hash": new.secret_hash,
                    "tenant_id": tenant_ids[index % tenants],
                    "name": f"bench-key-{index}",
                    "models": None,
                    "created_at": now,
                    **NEVER_REFUSE,
                }
            )
            if len(batch) == 5000:
                conn.execute(schema.api_keys.insert(), batch)
                batch = []
        if batch:
            conn.execute(schema.api_keys.insert(), batch)
    engine.dispose()
    rng.shuffle(plaintexts)
    return plaintexts, time.monotonic() - started


def redis_ping(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(work: Path) -> tuple[Proc | None, str, str]:
    """A private redis-server on the client CPU when the binary exists, else the shared one on :6379.

    A private instance is pinned away from the gateway (the shared service floats over both CPUs and would
    steal the gateway's core) and starts empty. Returns (process or None, URL, description).
    """
    if not shutil.which("redis-server") and not redis_ping("127.0.0.1", 6379):
        ensure_apt("redis-server", "redis-server")
    if shutil.which("redis-server"):
        port = free_port()
        argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        proc = Proc("redis", argv, cpu=CLIENT_CPU, log=work / "redis.log")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if redis_ping("127.0.0.1", port):
                return proc, f"redis://127.0.0.1:{port}/0", f"private redis-server on :{port}, pinned to CPU 0"
            time.sleep(0.1)
        proc.stop()
    if redis_ping("127.0.0.1", 6379):
        return None, "redis://127.0.0.1:6379/0", "the machine's Redis on :6379 (not pinned)"
    raise RuntimeError("no redis-server binary and nothing answers on 127.0.0.1:6379")


def redis_key_count(url: str, prefix: str = "tg:") -> int:
    """How many keys the gateway wrote under ``prefix``: proof that limits really went through Redis."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=2)
    try:
        return sum(1 for _ in client.scan_iter(match=prefix + "*", count=1000))
    finally:
        client.close()
