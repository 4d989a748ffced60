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


DEMO_EMAIL = "demo@example.org"


async def _demo_key(database_url: str) -> tuple[str, str]:
    """A demo tenant key, and a one-time login link token for the demo user (a platform admin who owns the
    tenant), so the console opens logged in without a password to type."""
    from datetime import timedelta

    from tenantgate.auth.keys import generate_key
    from tenantgate.people.context import new_token
    from tenantgate.storage.database import create_engine, migrate
    from tenantgate.storage.people import MembershipRepo, UserRepo
    from tenantgate.storage.repos import KeyRepo, TenantRepo
    from tenantgate.storage.rows import utcnow
    from tenantgate.storage.tokens import OneTimeTokenRepo

    engine = create_engine(database_url)
    try:
        await migrate(engine)
        tenants, keys, users = TenantRepo(engine), KeyRepo(engine), UserRepo(engine)
        tenant = await tenants.get_by_name("demo") or await tenants.create("demo")
        user = await users.get_by_email(DEMO_EMAIL) or await users.create(
            email=DEMO_EMAIL, password_hash=None, name="Demo", is_admin=True
        )
        await MembershipRepo(engine).put(user.id, tenant.id, "owner")
        new = generate_key()
        await keys.create(tenant_id=tenant.id, public_id=new.public_id, secret_hash=new.secret_hash, name="demo")
        token, hashed = new_token()
        await OneTimeTokenRepo(engine).create(
            hashed, purpose="login", created_by="make demo", expires_at=utcnow() + timedelta(hours=1), user_id=user.id
        )
        return new.plaintext, token
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


def _banner(key: str, admin_key: str, login_token: str) -> str:
    base = f"http://127.0.0.1:{GATEWAY_PORT}"
    return f"""
tenantgate demo is running on {base}   (Ctrl-C to stop)

  Console (logs you in as {DEMO_EMAIL}, a platform admin; works once, for an hour):
      {base}/console/link?token={login_token}
  Anyone can also sign up at {base}/console/signup (sign-up is open in the demo).

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
            "TENANTGATE_SIGNUP": os.environ.get("TENANTGATE_SIGNUP", "open"),
        }
    )
    mock = subprocess.Popen(
        [sys.executable, "-m", "tenantgate.mock.upstream", "--port", str(MOCK_PORT), "--chunk-delay", "0.03"],
    )
    try:
        _wait_for(f"http://127.0.0.1:{MOCK_PORT}/health")
        key, login_token = asyncio.run(_demo_key(database_url))
        print(_banner(key, admin_key, login_token), flush=True)
        from tenantgate.cli.main import serve

        serve(host="127.0.0.1", port=GATEWAY_PORT, config=None, log_format="console")
    finally:
        mock.terminate()
        mock.wait(5)


if __name__ == "__main__":
    main()
