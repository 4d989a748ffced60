"""A replica started with another credential-encryption key than the database was set up with refuses to start,
saying why (it would otherwise fail on every stored credential, or write ones no other replica can read)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import start_gateway


def test_a_replica_with_another_secret_key_refuses_to_start(tmp_path: Path) -> None:
    database = f"sqlite+aiosqlite:///{tmp_path / 'keys.db'}"
    first = start_gateway(database, tmp_path, TENANTGATE_SECRET_KEY="the-key-every-replica-shares-0001")
    try:
        with pytest.raises(RuntimeError) as refused:
            start_gateway(database, tmp_path, TENANTGATE_SECRET_KEY="another-key-by-mistake-000000002")
        assert "not the key this database was set up with" in str(refused.value)
        second = start_gateway(database, tmp_path, TENANTGATE_SECRET_KEY="the-key-every-replica-shares-0001")
        second.process.stop()  # the same key: a second replica starts
    finally:
        first.process.stop()
