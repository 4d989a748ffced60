"""Builds the people services of one gateway process from its settings and config file."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from tenantgate.config.file import ConfigError, GatewayConfig
from tenantgate.config.settings import Settings
from tenantgate.edge.context import Gateway
from tenantgate.people.context import AccountSettings, PeopleContext, PeopleRepos, limit_fields
from tenantgate.people.mail import smtp_mailer
from tenantgate.people.passwords import Passwords
from tenantgate.people.policy import SignupPolicy
from tenantgate.people.service import People
from tenantgate.people.throttle import LoginThrottle
from tenantgate.storage.audit import AuditRepo
from tenantgate.storage.people import MembershipRepo, UserRepo
from tenantgate.storage.repos import KeyRepo, TenantRepo
from tenantgate.storage.tokens import OneTimeTokenRepo, SessionRepo
from tenantgate.storage.usage import UsageRepo


def build_people(
    settings: Settings,
    config: GatewayConfig,
    engine: AsyncEngine,
    tenants: TenantRepo,
    keys: KeyRepo,
    usage: UsageRepo,
    gateway: Gateway,
    reload: Callable[[], Awaitable[None]],
) -> People:
    """The people services: accounts, tenancy, personal keys (see :mod:`tenantgate.people`)."""
    signup = config.signup
    try:
        policy = SignupPolicy.parse(settings.signup or signup.mode)
    except ValueError as exc:
        raise ConfigError([f"signup: {exc}"]) from None
    smtp = settings.smtp_url.get_secret_value() if settings.smtp_url else None
    context = PeopleContext(
        repos=PeopleRepos(
            users=UserRepo(engine),
            memberships=MembershipRepo(engine),
            sessions=SessionRepo(engine),
            tokens=OneTimeTokenRepo(engine),
            tenants=tenants,
            keys=keys,
            usage=usage,
            audit=AuditRepo(engine),
        ),
        settings=AccountSettings(
            signup=policy,
            personal_tenant_limits=limit_fields(signup.personal_tenant_limits),
            user_limits=limit_fields(signup.user_limits),
            user_limits_defaults=signup.user_limits,
            session_ttl=timedelta(seconds=settings.session_ttl_seconds),
            password_min_length=settings.password_min_length,
            max_keys_per_user=settings.max_keys_per_user,
            invite_ttl=timedelta(hours=settings.invite_ttl_hours),
            reset_ttl=timedelta(hours=settings.reset_ttl_hours),
            public_url=settings.public_url,
        ),
        throttle=LoginThrottle(
            per_account=settings.login_max_failures_per_account,
            per_address=settings.login_max_failures_per_address,
            window_s=settings.login_throttle_window_seconds,
        ),
        passwords=Passwords(),
        reload=reload,
        flush_usage=gateway.usage.flush,
        limits_usage=gateway.admission.usage_view,
        known_models=lambda: gateway.catalog.current.models(),
        mailer=smtp_mailer(smtp, settings.smtp_from) if smtp else None,
    )
    return People(context, cookie_secure=settings.cookie_secure)
