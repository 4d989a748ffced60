"""``tenantgate tenants …`` and ``tenantgate keys …``: admin work straight against the database.

They share the repositories with the admin API, so the rules (hashed keys, version bump for running replicas)
are the same whichever way a change is made.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import typer

from tenantgate.admin.schemas import key_out, tenant_out
from tenantgate.auth.keys import generate_key
from tenantgate.config.file import load_config, with_env_defaults
from tenantgate.config.settings import Settings
from tenantgate.storage.audit import AuditRepo
from tenantgate.storage.database import create_engine, migrate
from tenantgate.storage.repos import DuplicateName, KeyRepo, TenantRepo
from tenantgate.storage.rows import LimitFields

tenants_app = typer.Typer(help="Create and list tenants.", no_args_is_help=True)
keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)

T = TypeVar("T")


def _run(work: Callable[[TenantRepo, KeyRepo], Awaitable[T]], audit: tuple[str, str] | None = None) -> T:
    """Run one command against the database; ``audit`` = (action, target type) records it in the audit log
    (actor ``cli``), like the same change made through the admin API."""

    async def main() -> T:
        engine = create_engine(Settings().database_url)
        try:
            await migrate(engine)
            result = await work(TenantRepo(engine), KeyRepo(engine))
            if audit is not None and isinstance(result, dict):
                await AuditRepo(engine).record("cli", audit[0], audit[1], result.get("id"), None)
            return result
        finally:
            await engine.dispose()

    return asyncio.run(main())


@dataclass(frozen=True, slots=True)
class _Limits:
    tenant: LimitFields
    key: LimitFields


def _defaults() -> _Limits:
    """The config file's default limits (and ``RATE_LIMIT_RPM``), as the admin API applies them."""
    settings = Settings()
    defaults = with_env_defaults(load_config(settings.config_file), settings.rate_limit_rpm).defaults
    return _Limits(LimitFields(**defaults.tenant_limits.model_dump()), LimitFields(**defaults.key_limits.model_dump()))


def _print(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2))


@tenants_app.command("create")
def tenants_create(name: str) -> None:
    """Create a tenant."""

    async def work(tenants: TenantRepo, _keys: KeyRepo) -> dict[str, Any]:
        return tenant_out(await tenants.create(name, _defaults().tenant))

    try:
        _print(_run(work, ("tenant.create", "tenant")))
    except DuplicateName as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@tenants_app.command("list")
def tenants_list() -> None:
    """List tenants."""

    async def work(tenants: TenantRepo, _keys: KeyRepo) -> list[dict[str, Any]]:
        return [tenant_out(row) for row in await tenants.list()]

    _print(_run(work))


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="Tenant id or name.")],
    name: Annotated[str | None, typer.Option(help="A label for the key.")] = None,
    model: Annotated[list[str] | None, typer.Option(help="Allowed model (repeat); default: all.")] = None,
) -> None:
    """Create an API key; the key is printed once and stored only as a hash."""

    async def work(tenants: TenantRepo, keys: KeyRepo) -> dict[str, Any]:
        row = await tenants.get(tenant) or await tenants.get_by_name(tenant)
        if row is None:
            raise typer.BadParameter(f"no tenant with id or name {tenant!r}", param_hint="--tenant")
        new = generate_key()
        created = await keys.create(
            tenant_id=row.id,
            public_id=new.public_id,
            secret_hash=new.secret_hash,
            name=name,
            models=model or None,
            limits=_defaults().key,
        )
        return {**key_out(created), "key": new.plaintext}

    _print(_run(work, ("key.create", "key")))


@keys_app.command("list")
def keys_list(tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys (id).")] = None) -> None:
    """List keys (never their secrets)."""

    async def work(_tenants: TenantRepo, keys: KeyRepo) -> list[dict[str, Any]]:
        return [key_out(row) for row in await keys.list(tenant)]

    _print(_run(work))


@keys_app.command("revoke")
def keys_revoke(key_id: str) -> None:
    """Revoke a key; running gateways refuse it within a second."""

    async def work(_tenants: TenantRepo, keys: KeyRepo) -> dict[str, Any] | None:
        if await keys.get(key_id) is None:
            return None
        row = await keys.revoke(key_id)
        return key_out(row) if row else None

    result = _run(work, ("key.revoke", "key"))
    if result is None:
        typer.echo(f"error: no key with id {key_id!r}", err=True)
        raise typer.Exit(1)
    _print(result)
