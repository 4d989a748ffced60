"""The command line: check-config, tenants/keys admin commands, start-up refusals and the chat client."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.support import Gateway, gateway_env

CLI = [sys.executable, "-m", "tenantgate.cli.main"]


def run(
    args: list[str], env: dict[str, str] | None = None, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env=env or dict(os.environ), input=stdin, capture_output=True, text=True, timeout=timeout
    )


def test_check_config_names_the_key_path(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("backends:\n  - name: a\n    base_url: http://h:1/v1\n    models: [m1, {name: m2}]\n")
    result = run(["check-config", str(good)])
    assert result.returncode == 0 and "m1, m2" in result.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "backends:\n  - name: a\n    base_url: ftp://h\n    models: [m1]\n"
        "  - name: a\n    base_url: http://h\n    models:\n      - {name: m, input_price_per_mtok: -1}\n"
    )
    result = run(["check-config", str(bad)])
    assert result.returncode == 1
    assert "backends.0.base_url" in result.stderr
    assert "backends.1.models.0.input_price_per_mtok" in result.stderr
    dup = tmp_path / "dup.yaml"
    dup.write_text(
        "backends:\n  - {name: a, base_url: 'http://h', models: [m]}\n"
        "  - {name: a, base_url: 'http://h', models: [m, m]}\n"
    )
    result = run(["check-config", str(dup)])
    assert "backends.1.name: duplicate" in result.stderr and "backends.1.models.1" in result.stderr


def test_tenant_and_key_commands_work_on_the_database(tmp_path: Path) -> None:
    env = gateway_env(f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}", tmp_path)
    tenant = json.loads(run(["tenants", "create", "cli-co"], env).stdout)
    assert run(["tenants", "create", "cli-co"], env).returncode == 1
    key = json.loads(run(["keys", "create", "--tenant", "cli-co", "--model", "mock-gpt"], env).stdout)
    assert key["key"].startswith("tg-") and key["tenant_id"] == tenant["id"] and key["models"] == ["mock-gpt"]
    listed = run(["keys", "list"], env).stdout
    assert key["id"] in listed and key["key"] not in listed
    revoked = json.loads(run(["keys", "revoke", key["id"]], env).stdout)
    assert revoked["revoked"] is True
    assert run(["keys", "revoke", "key_missing"], env).returncode == 1
    assert [t["name"] for t in json.loads(run(["tenants", "list"], env).stdout)] == ["cli-co"]
    with sqlite3.connect(tmp_path / "cli.db") as db:
        actions = [row[0] for row in db.execute("SELECT action FROM audit_log WHERE actor = 'cli' ORDER BY id")]
    assert actions == ["tenant.create", "key.create", "key.revoke"]


def test_serve_refuses_a_short_admin_key(tmp_path: Path) -> None:
    env = gateway_env(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}", tmp_path, TENANTGATE_ADMIN_KEY="short")
    result = run(["serve", "--port", "0"], env, timeout=30)
    assert result.returncode == 2 and "at least 16 characters" in result.stderr


def test_serve_refuses_an_invalid_config(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("backends: [{name: a}]\n")
    env = gateway_env(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}", tmp_path)
    result = run(["serve", "--port", "0", "--config", str(config)], env, timeout=30)
    assert result.returncode == 2 and "backends.0.base_url" in result.stderr


def test_migrate_command(tmp_path: Path) -> None:
    env = gateway_env(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}", tmp_path)
    result = run(["migrate"], env)
    assert result.returncode == 0 and (tmp_path / "m.db").exists()


def test_chat_client_streams_replies(gateway: Gateway, api_key: str) -> None:
    result = run(
        ["chat", "--model", "mock-gpt", "--base-url", gateway.v1, "--key", api_key],
        stdin="hello chat client\nsecond turn\nexit\n",
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert lines[0].startswith("hello chat client hello")
    assert lines[1].startswith("second turn second")
    bad = run(["chat", "--model", "mock-gpt", "--base-url", gateway.v1, "--key", "tg-bad-key"], stdin="hi\nexit\n")
    assert "error 401" in bad.stdout
