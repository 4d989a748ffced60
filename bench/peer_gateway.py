#!/usr/bin/env python3
"""Start tenantgate the way the peer harness (../shared/bench) starts a gateway: in the foreground, one command.

The harness renders ``--cmd`` with its own ports and mock URLs, pins it to the gateway CPU and stops it with
SIGTERM, so this wrapper prepares a throw-away state folder (SQLite database, secret, config routing the
harness's ``mock`` model to its nginx mock and ``mock-stream`` to its SSE mock), stores the API key the harness
will send (hashed, with limits that never refuse), and then *execs* ``tenantgate serve``: the measured process
is the gateway itself, with nothing of this script left around it.

    peer_gateway.py --port {{port}} --upstream {{mock_url}} --stream-upstream {{sse_url}} \
        --workdir {{workdir}} --key tg-<public>-<secret>
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

ADMIN_KEY = "bench-admin-key-0123456789abcdef"
# A fixed key in tg- form for the harness's --header; it only ever exists in a throw-away benchmark database.
DEFAULT_KEY = "tg-peerbench0001-PeerBenchKeyNotASecretOnlyForThrowAwayDb0123"


def config_yaml(upstream: str, stream_upstream: str) -> str:
    return f"""# written by bench/peer_gateway.py for the peer harness
backends:
  - name: peer-nginx
    base_url: {upstream}
    models:
      - name: mock
        input_price_per_mtok: 0.15
        output_price_per_mtok: 0.60
  - name: peer-sse
    base_url: {stream_upstream}
    models:
      - name: mock-stream
        input_price_per_mtok: 0.15
        output_price_per_mtok: 0.60
"""


async def store_key(database_url: str, plaintext: str) -> None:
    """Migrate the fresh database and store the key (hashed) for one tenant, as the admin API would."""
    from tenantgate.auth.keys import key_from_plaintext
    from tenantgate.storage.database import create_engine, migrate
    from tenantgate.storage.repos import KeyRepo, TenantRepo
    from tenantgate.storage.rows import LimitFields

    engine = create_engine(database_url)
    try:
        await migrate(engine)
        tenant = await TenantRepo(engine).create("peer-bench")
        new = key_from_plaintext(plaintext)
        await KeyRepo(engine).create(
            tenant_id=tenant.id,
            public_id=new.public_id,
            secret_hash=new.secret_hash,
            name="peer-bench",
            limits=LimitFields(rpm=100_000_000, tpm=1_000_000_000),
        )
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the harness's {{mock_url}}")
    parser.add_argument("--stream-upstream", required=True, help="the harness's {{sse_url}}")
    parser.add_argument("--workdir", type=Path, required=True, help="the harness's {{workdir}}")
    parser.add_argument("--key", default=DEFAULT_KEY, help="API key the harness sends (Authorization: Bearer)")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args()

    state = args.workdir.resolve() / "tenantgate"
    state.mkdir(parents=True, exist_ok=True)
    db = state / "gateway.db"
    for stale in state.glob("gateway.db*"):
        stale.unlink()
    database_url = f"sqlite+aiosqlite:///{db}"
    (state / "gateway.yaml").write_text(config_yaml(args.upstream, args.stream_upstream))
    asyncio.run(store_key(database_url, args.key))

    os.environ.update(
        TENANTGATE_DATABASE_URL=database_url,
        TENANTGATE_ADMIN_KEY=ADMIN_KEY,
        TENANTGATE_SECRET_KEY_FILE=str(state / "secret"),
        TENANTGATE_LOG_LEVEL=args.log_level,
    )
    tenantgate = str(Path(sys.executable).parent / "tenantgate")
    argv = [
        tenantgate,
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(args.port),
        "--config",
        str(state / "gateway.yaml"),
    ]
    os.execv(tenantgate, argv)


if __name__ == "__main__":
    main()
