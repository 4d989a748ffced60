"""Accounts: sign-up, login, sessions, passwords, invites and one-time links.

The JSON API (``auth_api``, ``me_api``, ``admin_api``) and the console call these methods; the rules live here
once. Every failure is a :class:`~tenantgate.core.errors.GatewayError` with a clear message and no detail an
attacker could use (a wrong password and an unknown email get the same answer, after the same work).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from tenantgate.core.errors import AuthenticationFailed, Conflict, Forbidden, InvalidRequest, NotFound, RateLimited
from tenantgate.people.context import PeopleContext, csrf_for, new_token, token_hash
from tenantgate.people.passwords import password_problem
from tenantgate.people.policy import normal_email
from tenantgate.storage.repos import DuplicateName
from tenantgate.storage.rows import ROLES, MembershipRow, SessionRow, TokenRow, UserRow, utcnow

log = logging.getLogger("tenantgate.people")
PURGE_INTERVAL_S = 3600.0


def _email_taken() -> Conflict:
    return Conflict("An account with this email already exists.", param="email", code="email_taken")


@dataclass(frozen=True, slots=True)
class NewSession:
    """A session just opened: the cookie value (shown to this client only) and its CSRF token."""

    user: UserRow
    token: str
    csrf_token: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class SignedIn:
    """A valid session resolved from a cookie."""

    user: UserRow
    session: SessionRow
    csrf_token: str


class Accounts:
    def __init__(self, context: PeopleContext) -> None:
        self._ctx = context
        self._repos = context.repos
        self._settings = context.settings
        self._last_purge = -PURGE_INTERVAL_S

    # -- passwords --------------------------------------------------------------------------------------------

    def check_password(self, password: str, param: str = "password") -> None:
        problem = password_problem(password, self._settings.password_min_length)
        if problem:
            raise InvalidRequest(f"{param} {problem}.", param=param, code="weak_password")

    # -- sign-up and login ------------------------------------------------------------------------------------

    async def signup(
        self, email: str, password: str, name: str | None, invite: str | None, client: str | None
    ) -> NewSession:
        """A new user, logged in. Without an invite the sign-up mode must allow the address, and the user gets a
        personal tenant it owns; with one, it joins the invite's tenant (if any) in the invite's role."""
        email = normal_email(email)
        self.check_password(password)
        invite_row: TokenRow | None = None
        invite_hash = token_hash(invite) if invite else None
        if invite_hash is not None:
            invite_row = await self._repos.tokens.find(invite_hash, "invite")
            if invite_row is None or invite_row.expires_at <= utcnow():
                raise InvalidRequest("This invite is not valid or has expired.", param="invite", code="invalid_invite")
            if invite_row.used_at is not None:
                raise InvalidRequest("This invite has already been used.", param="invite", code="invite_used")
            if invite_row.email is not None and invite_row.email != email:
                raise InvalidRequest("This invite is for another email address.", param="email", code="invite_email")
        elif not self._settings.signup.allows_without_invite(email):
            mode = self._settings.signup.mode
            reason = "an invite" if mode in ("closed", "invite") else "an address in an allowed domain"
            raise Forbidden(f"Sign-up needs {reason} on this gateway.", code="signup_not_allowed")
        if await self._repos.users.get_by_email(email) is not None:
            raise _email_taken()
        password_hash = await self._ctx.passwords.hash(password)
        if invite_hash is not None:  # claim the invite first: of two racing sign-ups only one gets it
            invite_row = await self._repos.tokens.consume(invite_hash, "invite")
            if invite_row is None:
                raise InvalidRequest("This invite has already been used.", param="invite", code="invite_used")
        join = (invite_row.tenant_id, invite_row.role or "member") if invite_row and invite_row.tenant_id else None
        try:
            user = await self._repos.users.create(
                email=email,
                password_hash=password_hash,
                name=name,
                limits=self._settings.user_limits,
                tenant_name=None if join else email,
                tenant_limits=self._settings.personal_tenant_limits,
                join=join,
            )
        except Exception as exc:
            if invite_hash is not None:  # the sign-up failed: the invite works again
                await self._repos.tokens.release(invite_hash, "invite")
            if isinstance(exc, DuplicateName):
                raise Conflict(
                    "An account with this email already exists.", param="email", code="email_taken"
                ) from None
            raise
        await self._repos.audit.record(f"user:{email}", "user.signup", "user", user.id, {"invite": bool(invite)})
        await self._ctx.reload()
        return await self.open_session(user, client)

    async def login(self, email: str, password: str, address: str, client: str | None) -> NewSession:
        """Throttled per account and per client address; unknown accounts cost the same as wrong passwords."""
        email = email.strip().lower()
        wait = self._ctx.throttle.retry_after(email, address)
        if wait:
            raise RateLimited(
                "Too many failed logins; try again later.",
                code="login_throttled",
                headers={"retry-after": str(int(wait) + 1)},
            )
        user = await self._repos.users.get_by_email(email) if len(email) <= 254 else None
        ok = await self._ctx.passwords.verify(user.password_hash if user else None, password)
        if not ok or user is None:
            self._ctx.throttle.failed(email, address)
            raise AuthenticationFailed("Wrong email or password.", code="invalid_credentials")
        if not user.active:
            raise AuthenticationFailed("This account is disabled.", code="user_disabled")
        self._ctx.throttle.succeeded(email)
        return await self.open_session(user, client)

    async def open_session(self, user: UserRow, client: str | None) -> NewSession:
        await self._purge_now_and_then()
        token, hashed = new_token()
        expires_at = utcnow() + self._settings.session_ttl
        await self._repos.sessions.create(hashed, user.id, expires_at, client[:200] if client else None)
        return NewSession(user, token, csrf_for(token), expires_at)

    async def _purge_now_and_then(self) -> None:
        """At most hourly, on a login: forget sessions expired a day ago and tokens expired a week ago."""
        now = time.monotonic()
        if now - self._last_purge < PURGE_INTERVAL_S:
            return
        self._last_purge = now
        await self._repos.sessions.purge_expired(utcnow() - timedelta(days=1))
        await self._repos.tokens.purge_expired(utcnow() - timedelta(days=7))

    async def resolve(self, session_token: str) -> SignedIn | None:
        """The signed-in user of a cookie, or None (unknown, revoked, expired, disabled user)."""
        if not session_token or len(session_token) > 128:
            return None
        session = await self._repos.sessions.get(token_hash(session_token))
        if session is None or session.revoked_at is not None or session.expires_at <= utcnow():
            return None
        user = await self._repos.users.get(session.user_id)
        if user is None or not user.active:
            return None
        if utcnow() - session.last_seen_at > timedelta(minutes=1):  # at most one write a minute per session
            await self._repos.sessions.touch(session.id)
        return SignedIn(user, session, csrf_for(session_token))

    async def logout(self, session_token: str) -> None:
        await self._repos.sessions.revoke(token_hash(session_token))

    # -- passwords --------------------------------------------------------------------------------------------

    async def change_password(
        self, user: UserRow, current: str, new: str, address: str, client: str | None
    ) -> NewSession:
        """Revokes every session of the user (this one too) and opens a fresh one for this client. Wrong current
        passwords count as failed logins (same throttle), so a stolen session cannot guess the password."""
        wait = self._ctx.throttle.retry_after(user.email, address)
        if wait:
            raise RateLimited(
                "Too many wrong passwords; try again later.",
                code="login_throttled",
                headers={"retry-after": str(int(wait) + 1)},
            )
        if not await self._ctx.passwords.verify(user.password_hash, current):
            self._ctx.throttle.failed(user.email, address)
            raise InvalidRequest("The current password is wrong.", param="current_password", code="wrong_password")
        self.check_password(new, "new_password")
        await self._repos.users.set_password(user.id, await self._ctx.passwords.hash(new))
        await self._repos.audit.record(f"user:{user.email}", "user.password", "user", user.id, None)
        return await self.open_session(user, client)

    async def reset_password(self, token: str, new: str) -> UserRow:
        """Set a password with a reset link (single use); every session of the user is revoked."""
        self.check_password(new, "new_password")
        password_hash = await self._ctx.passwords.hash(new)
        row = await self._repos.tokens.consume(token_hash(token), "reset")
        if row is None or row.user_id is None:
            raise InvalidRequest("This reset link is not valid, expired or used.", param="token", code="invalid_token")
        await self._repos.users.set_password(row.user_id, password_hash)
        user = await self._repos.users.get(row.user_id)
        if user is None:
            raise NotFound("This account no longer exists.", code="user_not_found")
        await self._repos.audit.record(f"user:{user.email}", "user.password_reset", "user", user.id, None)
        return user

    async def use_login_link(self, token: str, client: str | None) -> NewSession:
        row = await self._repos.tokens.consume(token_hash(token), "login")
        user = await self._repos.users.get(row.user_id) if row and row.user_id else None
        if user is None or not user.active:
            raise AuthenticationFailed("This login link is not valid, expired or used.", code="invalid_token")
        return await self.open_session(user, client)

    async def accept_invite(self, user: UserRow, token: str) -> MembershipRow:
        """A logged-in user joins the invite's tenant (an invite bound to another email does not work)."""
        row = await self._repos.tokens.find(token_hash(token), "invite")
        if row is None or row.tenant_id is None or (row.email is not None and row.email != user.email):
            raise InvalidRequest("This invite is not valid for you.", param="token", code="invalid_invite")
        if await self._repos.memberships.get(user.id, row.tenant_id) is not None:
            raise Conflict("You are already a member of this tenant.", code="already_member")
        if await self._repos.tokens.consume(token_hash(token), "invite", used_by=user.id) is None:
            raise InvalidRequest("This invite is expired or used.", param="token", code="invite_used")
        membership = await self._repos.memberships.put(user.id, row.tenant_id, row.role or "member")
        await self._repos.audit.record(f"user:{user.email}", "invite.accept", "tenant", row.tenant_id, None)
        return membership

    # -- single-use links -------------------------------------------------------------------------------------

    def link(self, base_url: str, path: str, token: str) -> str:
        base = (self._settings.public_url or base_url).rstrip("/")
        return f"{base}{path}{token}"

    async def create_invite(
        self, created_by: str, *, email: str | None, tenant_id: str | None, role: str, ttl: timedelta | None = None
    ) -> tuple[TokenRow, str]:
        if role not in ROLES:
            raise InvalidRequest(f"role must be one of {', '.join(ROLES)}.", param="role")
        if email is not None:
            email = normal_email(email)
        if tenant_id is not None and await self._repos.tenants.get(tenant_id) is None:
            raise InvalidRequest(f"No tenant with id '{tenant_id}'.", param="tenant_id", code="tenant_not_found")
        token, hashed = new_token()
        row = await self._repos.tokens.create(
            hashed,
            purpose="invite",
            created_by=created_by,
            expires_at=utcnow() + (self._settings.invite_ttl if ttl is None else ttl),  # a tiny ttl rounds to 0
            email=email,
            tenant_id=tenant_id,
            role=role if tenant_id else None,
        )
        await self._repos.audit.record(created_by, "invite.create", "invite", row.id, {"email": email, "role": role})
        return row, token

    async def create_link(self, user: UserRow, purpose: str, created_by: str, ttl: timedelta) -> str:
        """A reset or login link for ``user`` (the token; build the URL with :meth:`link`)."""
        token, hashed = new_token()
        await self._repos.tokens.create(
            hashed, purpose=purpose, created_by=created_by, expires_at=utcnow() + ttl, user_id=user.id
        )
        await self._repos.audit.record(created_by, f"user.{purpose}_link", "user", user.id, None)
        return token
