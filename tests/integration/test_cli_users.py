"""``tenantgate users …``: the first platform admin of a fresh instance, from the command line, against a real
database and a real gateway process (the links it prints must work in the gateway)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx

from tests.integration.test_cli import run
from tests.support import gateway_env, start_gateway


def _token(url: str) -> str:
    return parse_qs(urlsplit(url).query)["token"][0]


def test_users_commands_create_an_admin_whose_links_work(tmp_path: Path) -> None:
    database = f"sqlite+aiosqlite:///{tmp_path / 'users.db'}"
    env = gateway_env(database, tmp_path)
    created = run(["users", "create", "Root@Example.org", "--admin"], env)
    assert created.returncode == 0, created.stderr
    user = json.loads(created.stdout)
    assert user["email"] == "root@example.org" and user["is_admin"] is True
    reset_token = _token(user["reset_url"])

    piped = run(["users", "create", "bob@example.org", "--password-stdin"], env, stdin="a long passphrase 1\n")
    assert piped.returncode == 0 and "reset_url" not in json.loads(piped.stdout)
    assert run(["users", "create", "bob@example.org"], env).returncode == 1  # taken
    assert run(["users", "create", "not-an-email"], env).returncode == 2
    assert run(["users", "create", "c@example.org", "--password-stdin"], env, stdin="short\n").returncode == 2
    promoted = run(["users", "set-admin", "bob@example.org"], env)
    assert json.loads(promoted.stdout)["is_admin"] is True
    assert json.loads(run(["users", "set-admin", "bob@example.org", "--off"], env).stdout)["is_admin"] is False
    assert run(["users", "set-admin", "nobody@example.org"], env).returncode == 1
    listed = json.loads(run(["users", "list"], env).stdout)
    assert sorted(u["email"] for u in listed) == ["bob@example.org", "root@example.org"]
    assert "password" not in json.dumps(listed)
    link = run(["users", "login-link", "root@example.org"], env).stdout.strip()
    with sqlite3.connect(tmp_path / "users.db") as db:  # only hashes are stored
        stored = {row[0] for row in db.execute("SELECT token_hash FROM one_time_tokens")}
    assert _token(link) not in stored and reset_token not in stored

    gateway = start_gateway(database, tmp_path)
    try:
        with httpx.Client(base_url=gateway.url) as client:
            assert client.post("/auth/link", json={"token": _token(link)}).status_code == 200
            assert client.get("/admin/users").status_code == 200  # the platform admin's session works on /admin
            assert client.post("/auth/link", json={"token": _token(link)}).status_code == 401  # once only
            reset = client.post("/auth/reset", json={"token": reset_token, "new_password": "a new long passphrase"})
            assert reset.status_code == 200, reset.text
        with httpx.Client(base_url=gateway.url) as client:
            login = client.post("/auth/login", json={"email": "root@example.org", "password": "a new long passphrase"})
            assert login.status_code == 200 and login.json()["user"]["is_admin"] is True
            bob = client.post("/auth/login", json={"email": "bob@example.org", "password": "a long passphrase 1"})
            assert bob.status_code == 200 and bob.json()["user"]["is_admin"] is False
    finally:
        gateway.process.stop()
