"""Who is calling the people API: a session cookie (with CSRF on writes) or the person's own API key.

A cookie is sent by the browser on its own, so every state-changing call made with one must also carry the
session's CSRF token (``X-CSRF-Token`` header, or the ``csrf_token`` field of a console form); a page on another
site cannot read it. A call made with an API key needs no token: the key itself is the proof.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import Depends, Request
from starlette.responses import Response

from tenantgate.auth.keys import parse_key
from tenantgate.core.errors import AuthenticationFailed, Forbidden
from tenantgate.core.secrets import same_secret
from tenantgate.edge.pipeline import presented_key
from tenantgate.storage.rows import UserRow

if TYPE_CHECKING:
    from tenantgate.people.service import People

SESSION_COOKIE = "tg_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class Caller:
    user: UserRow
    via: Literal["session", "key"]
    csrf_token: str | None = None  # the session's, to hand to the page; None for key callers
    session_token: str | None = None


def people_of(request: Request) -> People:
    people: People = request.app.state.people
    return people


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def client_label(request: Request) -> str:
    agent = request.headers.get("user-agent", "")[:150]
    return f"{client_address(request)} {agent}".strip()


def csrf_ok(expected: str, presented: str | None) -> bool:
    return bool(presented) and len(presented or "") <= 128 and same_secret(expected, presented or "")


async def find_caller(request: Request, *, form_csrf: str | None = None) -> Caller | None:
    """The caller, or None when the request carries no credential a person could hold. A credential that is
    present but wrong (revoked key, another tenant's key, missing CSRF) raises instead of answering None."""
    people = people_of(request)
    presented = presented_key(request)
    if presented and parse_key(presented) is not None:
        principal = await request.app.state.gateway.auth.authenticate(presented)
        if principal.user_id is None:
            raise AuthenticationFailed(
                "This key belongs to a tenant, not to a person; use a personal key or log in.", code="not_a_user_key"
            )
        user = await people.ctx.repos.users.get(principal.user_id)
        if user is None or not user.active:
            raise AuthenticationFailed("The owner of this API key is disabled.", code="user_disabled")
        return Caller(user, "key")
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    signed = await people.accounts.resolve(token)
    if signed is None:
        return None
    if request.method not in SAFE_METHODS:
        presented_csrf = request.headers.get(CSRF_HEADER) or form_csrf
        if not csrf_ok(signed.csrf_token, presented_csrf):
            raise Forbidden("Missing or wrong CSRF token (send it in the X-CSRF-Token header).", code="csrf_failed")
    return Caller(signed.user, "session", signed.csrf_token, token)


async def current_caller(request: Request) -> Caller:
    caller = await find_caller(request)
    if caller is None:
        raise AuthenticationFailed(
            "Log in (session cookie) or send your personal API key as 'Authorization: Bearer <key>'.",
            code="not_authenticated",
        )
    return caller


CurrentCaller = Annotated[Caller, Depends(current_caller)]


def set_session_cookie(request: Request, response: Response, token: str, expires_at: datetime) -> None:
    """``HttpOnly`` (scripts never see it), ``SameSite=Lax`` (not sent on cross-site posts), ``Secure`` over TLS."""
    mode = people_of(request).cookie_secure
    secure = mode == "always" or (mode == "auto" and request.url.scheme == "https")
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=max(int((expires_at - datetime.now(expires_at.tzinfo)).total_seconds()), 1),
        httponly=True,
        secure=secure,
        samesite="lax",
        path="/",
    )


def clear_session_cookie(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax")
