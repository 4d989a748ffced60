"""``tenantgate users …``: create users, make platform admins and hand out one-time links, against the database.

Useful for the first admin of a fresh instance (no console login yet) and for scripts. Passwords are read from
standard input (never from an argument, which would land in shell history and ``ps``).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated, Any, TypeVar

import typer

from tenantgate.config.settings import Settings
from tenantgate.people.context import new_token
from tenantgate.people.passwords import Passwords, password_problem
from tenantgate.people.policy import normal_email
from tenantgate.people.service import user_out
from tenantgate.storage.audit import AuditRepo
from tenantgate.storage.database import create_engine, migrate
from tenantgate.storage.people import UserRepo
from tenantgate.storage.repos import DuplicateName
from tenantgate.storage.rows import UserRow, utcnow
from tenantgate.storage.tokens import OneTimeTokenRepo

users_app = typer.Typer(help="Create users, make platform admins, print one-time links.", no_args_is_help=True)
T = TypeVar("T")


def _run(work: Callable[[Any], Awaitable[T]]) -> T:
    async def main() -> T:
        engine = create_engine(Settings().database_url)
        try:
            await migrate(engine)
            return await work(engine)
        finally:
            await engine.dispose()

    return asyncio.run(main())


def _email(value: str) -> str:
    try:
        return normal_email(value)
    except Exception:
        typer.echo(f"error: {value!r} is not a valid email address", err=True)
        raise typer.Exit(2) from None


async def _link(engine: Any, user: UserRow, purpose: str, hours: float) -> str:
    token, hashed = new_token()
    await OneTimeTokenRepo(engine).create(
        hashed, purpose=purpose, created_by="cli", expires_at=utcnow() + timedelta(hours=hours), user_id=user.id
    )
    await AuditRepo(engine).record("cli", f"user.{purpose}_link", "user", user.id, None)
    return token


@users_app.command("create")
def users_create(
    email: str,
    admin: Annotated[bool, typer.Option("--admin", help="A platform admin (everything the admin key can do).")] = False,
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin.")] = False,
    base_url: Annotated[str, typer.Option(help="Base of the printed reset link.")] = "http://127.0.0.1:8080",
) -> None:
    """Create a user with a personal tenant; without --password-stdin, print a reset link to set the password."""
    address = _email(email)
    password = sys.stdin.readline().rstrip("\n") if password_stdin else None
    if password is not None:
        problem = password_problem(password, Settings().password_min_length)
        if problem:
            typer.echo(f"error: the password {problem}", err=True)
            raise typer.Exit(2)

    async def work(engine: Any) -> dict[str, Any]:
        user = await UserRepo(engine).create(
            email=address,
            password_hash=await Passwords().hash(password) if password else None,
            name=name,
            is_admin=admin,
            tenant_name=address,
        )
        await AuditRepo(engine).record("cli", "user.create", "user", user.id, {"is_admin": admin})
        out = user_out(user)
        if password is None:
            out["reset_url"] = f"{base_url.rstrip('/')}/console/reset?token={await _link(engine, user, 'reset', 24)}"
        return out

    try:
        typer.echo(json.dumps(_run(work), indent=2))
    except DuplicateName:
        typer.echo(f"error: a user with the email {address} already exists", err=True)
        raise typer.Exit(1) from None


@users_app.command("set-admin")
def users_set_admin(
    email: str, off: Annotated[bool, typer.Option("--off", help="Remove the platform admin role.")] = False
) -> None:
    """Make a user a platform admin (or not, with --off)."""
    address = _email(email)

    async def work(engine: Any) -> dict[str, Any] | None:
        repo = UserRepo(engine)
        user = await repo.get_by_email(address)
        if user is None:
            return None
        updated = await repo.update(user.id, {"is_admin": not off})
        await AuditRepo(engine).record("cli", "user.update", "user", user.id, {"is_admin": not off})
        return user_out(updated) if updated else None

    found = _run(work)
    if found is None:
        typer.echo(f"error: no user with the email {address}", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps(found, indent=2))


@users_app.command("list")
def users_list() -> None:
    """List users (never their password hashes)."""

    async def work(engine: Any) -> list[dict[str, Any]]:
        return [user_out(user) for user in await UserRepo(engine).list()]

    typer.echo(json.dumps(_run(work), indent=2))


@users_app.command("login-link")
def users_login_link(
    email: str, base_url: Annotated[str, typer.Option(help="The gateway's public URL.")] = "http://127.0.0.1:8080"
) -> None:
    """Print a one-time console login link (valid 15 minutes) for a user."""
    address = _email(email)

    async def work(engine: Any) -> str | None:
        user = await UserRepo(engine).get_by_email(address)
        return None if user is None else await _link(engine, user, "login", 0.25)

    token = _run(work)
    if token is None:
        typer.echo(f"error: no user with the email {address}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{base_url.rstrip('/')}/console/link?token={token}")
