"""PostgreSQL for tests: the CI database is reset to an empty schema. Unreachable PostgreSQL fails loudly."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from tenantgate.storage.database import create_engine
from tests.support import PG_URL


def reset_postgres(url: str = PG_URL) -> str:
    async def reset() -> None:
        engine = create_engine(url)
        try:
            async with engine.begin() as conn:
                await conn.execute(sa.text("DROP SCHEMA IF EXISTS public CASCADE"))
                await conn.execute(sa.text("CREATE SCHEMA public"))
        except OSError as exc:
            raise RuntimeError(f"PostgreSQL at {url} is not reachable: {exc}") from exc
        finally:
            await engine.dispose()

    asyncio.run(reset())
    return url
