"""What the people services share: repositories, settings that shape accounts, and a few small helpers."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from tenantgate.config.file import LimitDefaults
from tenantgate.people.passwords import Passwords
from tenantgate.people.policy import SignupPolicy
from tenantgate.people.throttle import LoginThrottle
from tenantgate.storage.audit import AuditRepo
from tenantgate.storage.people import MembershipRepo, UserRepo
from tenantgate.storage.repos import KeyRepo, TenantRepo
from tenantgate.storage.rows import LimitFields
from tenantgate.storage.tokens import OneTimeTokenRepo, SessionRepo
from tenantgate.storage.usage import UsageRepo


@dataclass(frozen=True, slots=True)
class AccountSettings:
    signup: SignupPolicy
    personal_tenant_limits: LimitFields
    user_limits: LimitFields
    user_limits_defaults: LimitDefaults  # the same, for admin-made users (fields the request leaves out)
    session_ttl: timedelta
    password_min_length: int
    max_keys_per_user: int
    invite_ttl: timedelta
    reset_ttl: timedelta
    public_url: str | None


@dataclass(slots=True)
class PeopleRepos:
    users: UserRepo
    memberships: MembershipRepo
    sessions: SessionRepo
    tokens: OneTimeTokenRepo
    tenants: TenantRepo
    keys: KeyRepo
    usage: UsageRepo
    audit: AuditRepo


@dataclass(slots=True)
class PeopleContext:
    repos: PeopleRepos
    settings: AccountSettings
    throttle: LoginThrottle
    passwords: Passwords
    reload: Callable[[], Awaitable[None]]  # this replica's key cache and catalog, after a change
    flush_usage: Callable[[], Awaitable[None]]
    limits_usage: Callable[[str, LimitFields], Awaitable[dict[str, Any] | None]]
    known_models: Callable[[], list[str]]
    mailer: Callable[[str, str, str], Awaitable[None]] | None = None  # (to, subject, body)


def limit_fields(defaults: LimitDefaults) -> LimitFields:
    return LimitFields(**defaults.model_dump())


def new_token() -> tuple[str, str]:
    """A fresh random token and its SHA-256 (what is stored)."""
    token = secrets.token_urlsafe(32)
    return token, token_hash(token)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def csrf_for(session_token: str) -> str:
    """The CSRF token of a session: derived from the session token (which scripts cannot read: HttpOnly), so it
    needs no storage and changes with every new session."""
    return hashlib.sha256(b"tenantgate-csrf:" + session_token.encode("utf-8", "surrogatepass")).hexdigest()
