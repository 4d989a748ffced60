"""Test helpers: real processes on loopback ports (mock upstream, gateway) and small admin-API clients."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ADMIN_KEY = "test-admin-key-0123456789"
PG_URL = os.environ.get("TENANTGATE_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TENANTGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
LOG_DIR = Path(os.environ.get("TENANTGATE_TEST_LOG_DIR", "/tmp/tenantgate-test-logs"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            httpx.get(url, timeout=0.5)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


@dataclass
class Process:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _spawn(args: list[str], env: dict[str, str], name: str, port: int, ready_path: str) -> Process:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"{name}-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
    process = Process(proc, port, log_path)
    try:
        wait_http(f"{process.url}{ready_path}", proc)
    except RuntimeError as exc:
        process.stop(signal.SIGKILL)
        raise RuntimeError(f"{exc}\n--- {name} log ---\n{process.log_text()}") from None
    return process


def start_mock(*extra: str) -> Process:
    port = free_port()
    args = [sys.executable, "-m", "tenantgate.mock.upstream", "--port", str(port), *extra]
    return _spawn(args, dict(os.environ), "mock", port, "/health")


@dataclass
class Gateway:
    process: Process
    database_url: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.process.url

    @property
    def v1(self) -> str:
        return f"{self.url}/v1"

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)

    def create_tenant(self, name: str, **limits: Any) -> dict[str, Any]:
        with self.admin() as client:
            response = client.post("/admin/tenants", json={"name": name, **limits})
        assert response.status_code == 201, response.text
        return dict(response.json())

    def create_key(self, tenant_id: str, **fields: Any) -> dict[str, Any]:
        with self.admin() as client:
            response = client.post("/admin/keys", json={"tenant_id": tenant_id, **fields})
        assert response.status_code == 201, response.text
        return dict(response.json())

    def new_key(self, name: str, **fields: Any) -> str:
        tenant = self.create_tenant(name)
        return str(self.create_key(tenant["id"], **fields)["key"])


def gateway_env(database_url: str, tmp: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TENANTGATE_")}
    env.update(
        {
            "TENANTGATE_DATABASE_URL": database_url,
            "TENANTGATE_ADMIN_KEY": ADMIN_KEY,
            "TENANTGATE_SECRET_KEY_FILE": str(tmp / "tenantgate.secret"),
            "TENANTGATE_USAGE_FLUSH_INTERVAL": "0.2",
            "TENANTGATE_SYNC_INTERVAL": "0.25",
        }
    )
    env.update(extra)
    return env


def start_gateway(database_url: str, tmp: Path, config: str | None = None, **extra_env: str) -> Gateway:
    port = free_port()
    args = [sys.executable, "-m", "tenantgate.cli.main", "serve", "--port", str(port)]
    if config is not None:
        config_path = tmp / f"config-{port}.yaml"
        config_path.write_text(config)
        args += ["--config", str(config_path)]
    env = gateway_env(database_url, tmp, **extra_env)
    process = _spawn(args, env, "gateway", port, "/health")
    return Gateway(process, database_url, env)


def mock_config(mock_port: int, api_key: str | None = "upstream-secret-abc123") -> str:
    key_line = f"    api_key: {api_key}\n" if api_key else ""
    return f"""\
backends:
  - name: mock-a
    base_url: http://127.0.0.1:{mock_port}/v1
{key_line}    models:
      - name: mock-gpt
        input_price_per_mtok: 1.0
        output_price_per_mtok: 2.0
      - name: mock-small
      - name: mock-embed
        input_price_per_mtok: 0.5
      - name: gpt-public
        upstream_model: mock-gpt
        input_price_per_mtok: 3.0
        output_price_per_mtok: 4.0
      - name: pricey
        upstream_model: mock-gpt
        input_price_per_mtok: 1000.0
        output_price_per_mtok: 2000.0
"""


async def require_redis(url: str = REDIS_URL) -> None:
    """Fail loudly (never skip) when the Redis the suite needs is not there."""
    from redis.asyncio import Redis

    client = Redis.from_url(url, socket_connect_timeout=0.5)
    try:
        await client.ping()
    except Exception as exc:
        raise RuntimeError(f"Redis is not reachable at {url}: {exc}") from exc
    finally:
        await client.aclose()
