"""``make demo``: one command from a fresh clone to a working gateway.

Creates ``./demo/`` (SQLite database, secret key file, config), a demo tenant and key, starts the built-in
mock upstream on 127.0.0.1:8081 and the gateway on 127.0.0.1:8080, and prints how to call it.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

DEMO_DIR = Path("demo")
GATEWAY_PORT = int(os.environ.get("DEMO_PORT", "8080"))
MOCK_PORT = int(os.environ.get("DEMO_MOCK_PORT", "8081"))

CONFIG = f"""\
# Written by `make demo`: the built-in mock upstream serves three models.
backends:
  - name: mock
    base_url: http://127.0.0.1:{MOCK_PORT}/v1
    models:
      - name: mock-gpt
        input_price_per_mtok: 0.15
        output_price_per_mtok: 0.60
      - name: mock-small
      - name: mock-embed
        input_price_per_mtok: 0.02
"""


async def _demo_key(database_url: str) -> str:
    from tenantgate.auth.keys import generate_key
    from tenantgate.storage.database import create_engine, migrate
    from tenantgate.storage.repos import KeyRepo, TenantRepo

    engine = create_engine(database_url)
    try:
        await migrate(engine)
        tenants, keys = TenantRepo(engine), KeyRepo(engine)
        tenant = await tenants.get_by_name("demo") or await tenants.create("demo")
        new = generate_key()
        await keys.create(tenant_id=tenant.id, public_id=new.public_id, secret_hash=new.secret_hash, name="demo")
        return new.plaintext
    finally:
        await engine.dispose()


def _wait_for(url: str, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"demo: {url} did not come up")


def _banner(key: str, admin_key: str) -> str:
    base = f"http://127.0.0.1:{GATEWAY_PORT}"
    return f"""
tenantgate demo is running on {base}   (Ctrl-C to stop)

  API key (shown once):   {key}
  Admin key:              {admin_key}
  API docs:               {base}/docs

curl:
  curl -s {base}/v1/chat/completions \\
    -H "Authorization: Bearer {key}" -H "Content-Type: application/json" \\
    -d '{{"model": "mock-gpt", "messages": [{{"role": "user", "content": "Hello!"}}]}}'

openai SDK (pip install openai):
  from openai import OpenAI
  client = OpenAI(base_url="{base}/v1", api_key="{key}")
  for chunk in client.chat.completions.create(model="mock-gpt", stream=True,
          messages=[{{"role": "user", "content": "Hello!"}}]):
      print(chunk.choices[0].delta.content or "" if chunk.choices else "", end="")

interactive chat:
  .venv/bin/tenantgate chat --model mock-gpt --key {key}
"""


def main() -> None:
    DEMO_DIR.mkdir(exist_ok=True)
    (DEMO_DIR / "config.yaml").write_text(CONFIG)
    database_url = f"sqlite+aiosqlite:///{DEMO_DIR / 'tenantgate.db'}"
    admin_key = os.environ.get("TENANTGATE_ADMIN_KEY") or "admin-" + secrets.token_urlsafe(24)
    os.environ.update(
        {
            "TENANTGATE_DATABASE_URL": database_url,
            "TENANTGATE_ADMIN_KEY": admin_key,
            "TENANTGATE_SECRET_KEY_FILE": str(DEMO_DIR / "tenantgate.secret"),
            "TENANTGATE_CONFIG_FILE": str(DEMO_DIR / "config.yaml"),
        }
    )
    mock = subprocess.Popen(
        [sys.executable, "-m", "tenantgate.mock.upstream", "--port", str(MOCK_PORT), "--chunk-delay", "0.03"],
    )
    try:
        _wait_for(f"http://127.0.0.1:{MOCK_PORT}/health")
        key = asyncio.run(_demo_key(database_url))
        print(_banner(key, admin_key), flush=True)
        from tenantgate.cli.main import serve

        serve(host="127.0.0.1", port=GATEWAY_PORT, config=None, log_format="console")
    finally:
        mock.terminate()
        mock.wait(5)


if __name__ == "__main__":
    main()
