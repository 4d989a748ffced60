"""Configuration people already have: a ``.env`` file, seed 001's variable names, ``TENANTGATE_HOST``/``_PORT``,
``check-config`` failing on an unset ``${VAR}``, and ``--version``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tenantgate import __version__
from tests.integration.test_cli import run
from tests.support import LOG_DIR, Process, mock_config, spawn, wait_http, wait_port_file

ADMIN = "seed-001-admin-key-long-enough"


def serve_in(directory: Path, *args: str, **env_extra: str) -> Process:
    """``tenantgate serve`` started in ``directory`` (where its ``.env`` is), with no TENANTGATE_ variable set."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("TENANTGATE_")}
    env.update(env_extra)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"gateway-env-{directory.name}.log"
    port_file = directory / "port"
    with log_path.open("wb") as log:
        argv = [sys.executable, "-m", "tenantgate.cli.main", "serve", "--port-file", str(port_file), *args]
        proc = spawn(argv, env, cwd=directory, stdout=log, stderr=subprocess.STDOUT)
    return Process(proc, wait_port_file(port_file, proc), log_path)


def test_seed_001_in_one_env_file(tmp_path: Path, mock: Process) -> None:
    """``API_KEYS=clientA:key1`` and ``RATE_LIMIT_RPM=3`` in ``.env``: the 4th request in a minute gets 429."""
    (tmp_path / "config.yaml").write_text(mock_config(mock.port))
    (tmp_path / ".env").write_text(
        "API_KEYS=clientA:key1\nRATE_LIMIT_RPM=3\n"
        f"ADMIN_API_KEY={ADMIN}\n"
        "TENANTGATE_CONFIG_FILE=config.yaml\n"
        "TENANTGATE_DATABASE_URL=sqlite+aiosqlite:///./seed.db\n"
        "TENANTGATE_SECRET_KEY_FILE=seed.secret\n"
    )
    gateway = serve_in(tmp_path, "--port", "0")
    try:
        wait_http(f"{gateway.url}/health", gateway.proc)
        body = {"model": "mock-gpt", "messages": [{"role": "user", "content": "seed one"}]}
        with httpx.Client(base_url=gateway.url, headers={"X-API-Key": "key1"}, timeout=30) as client:
            codes = [client.post("/v1/chat/completions", json=body).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        with httpx.Client(base_url=gateway.url, headers={"authorization": f"Bearer {ADMIN}"}) as admin:
            tenants = admin.get("/admin/tenants").json()["data"]  # ADMIN_API_KEY is the admin key
        assert [t["name"] for t in tenants] == ["clientA"]
    finally:
        gateway.stop()


def test_tenantgate_host_and_port(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TENANTGATE_HOST=127.0.0.2\n")  # from .env
    gateway = serve_in(
        tmp_path,
        TENANTGATE_PORT="0",  # from the environment: any free port (8080 if it were ignored)
        TENANTGATE_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'hp.db'}",
        TENANTGATE_SECRET_KEY_FILE=str(tmp_path / "hp.secret"),
    )
    try:
        assert gateway.port != 8080
        wait_http(f"http://127.0.0.2:{gateway.port}/health", gateway.proc)
        with pytest.raises(httpx.ConnectError):  # not on the default interface
            httpx.get(f"http://127.0.0.1:{gateway.port}/health", timeout=2)
    finally:
        gateway.stop()


def test_check_config_fails_on_an_unset_variable(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "backends:\n  - {name: a, base_url: 'http://h/v1', api_key: '${NOT_SET_ANYWHERE}', models: [m]}\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "NOT_SET_ANYWHERE"}
    result = run(["check-config", str(config)], env)
    assert result.returncode == 1 and "${NOT_SET_ANYWHERE} is used but not set" in result.stderr
    assert run(["check-config", str(config)], {**env, "NOT_SET_ANYWHERE": "sk-1"}).returncode == 0


def test_version() -> None:
    result = run(["--version"])
    assert result.returncode == 0 and result.stdout.strip() == f"tenantgate {__version__}"


def test_cli_tenants_and_keys_get_the_default_limits(tmp_path: Path) -> None:
    (tmp_path / "d.yaml").write_text("defaults:\n  tenant_limits: {rpm: 77, budget_usd: 5.0}\n")
    env = {key: value for key, value in os.environ.items() if not key.startswith("TENANTGATE_")}
    env.update(
        TENANTGATE_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
        TENANTGATE_CONFIG_FILE=str(tmp_path / "d.yaml"),
        RATE_LIMIT_RPM="5",
    )
    tenant = run(["tenants", "create", "defaulted"], env)
    assert tenant.returncode == 0, tenant.stderr
    assert '"rpm": 77' in tenant.stdout and '"budget_usd": 5.0' in tenant.stdout
    key = run(["keys", "create", "--tenant", "defaulted"], env)
    assert key.returncode == 0 and '"rpm": 5' in key.stdout
