"""``/auth``: sign up, log in and out, change or reset a password, use a one-time login link.

Successful sign-up and login set the session cookie and return the CSRF token the caller must send with every
state-changing call made with that cookie.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from tenantgate.core.errors import Forbidden
from tenantgate.people.access import (
    CurrentCaller,
    clear_session_cookie,
    client_address,
    client_label,
    find_caller,
    people_of,
    set_session_cookie,
)
from tenantgate.people.accounts import NewSession
from tenantgate.people.schemas import LinkIn, LoginIn, PasswordChangeIn, PasswordResetIn, SignupIn
from tenantgate.people.service import user_out

router = APIRouter(prefix="/auth", tags=["people"])


def _signed_in(request: Request, new: NewSession, status: int = 200) -> JSONResponse:
    response = JSONResponse(
        {"user": user_out(new.user), "csrf_token": new.csrf_token, "expires_at": new.expires_at.isoformat()},
        status_code=status,
    )
    set_session_cookie(request, response, new.token, new.expires_at)
    response.headers["cache-control"] = "no-store"
    return response


@router.get("/config", summary="What the sign-up page needs to know (public)")
async def auth_config(request: Request) -> dict[str, Any]:
    policy = people_of(request).ctx.settings.signup
    return {"signup": policy.mode, "domains": sorted(policy.domains)}


@router.post("/signup", status_code=201, summary="Create an account (and log in)", response_model=None)
async def signup(body: SignupIn, request: Request) -> JSONResponse:
    new = await people_of(request).accounts.signup(
        body.email, body.password, body.name, body.invite, client_label(request)
    )
    return _signed_in(request, new, 201)


@router.post("/login", summary="Log in: sets the session cookie", response_model=None)
async def login(body: LoginIn, request: Request) -> JSONResponse:
    new = await people_of(request).accounts.login(
        body.email, body.password, client_address(request), client_label(request)
    )
    return _signed_in(request, new)


@router.post("/link", summary="Log in with a one-time login link's token", response_model=None)
async def login_link(body: LinkIn, request: Request) -> JSONResponse:
    return _signed_in(request, await people_of(request).accounts.use_login_link(body.token, client_label(request)))


@router.post("/logout", summary="End this session", response_model=None)
async def logout(request: Request) -> JSONResponse:
    caller = await find_caller(request)  # a cookie call needs its CSRF token, like every write
    if caller is not None and caller.session_token:
        await people_of(request).accounts.logout(caller.session_token)
    response = JSONResponse({"logged_out": True})
    clear_session_cookie(response)
    return response


@router.post("/password", summary="Change your password (ends every other session)", response_model=None)
async def change_password(body: PasswordChangeIn, caller: CurrentCaller, request: Request) -> JSONResponse:
    if caller.via != "session":  # a key is not the person: it may not take over the account
        raise Forbidden("Change your password from a logged-in session, not with an API key.", code="session_required")
    new = await people_of(request).accounts.change_password(
        caller.user, body.current_password, body.new_password, client_address(request), client_label(request)
    )
    return _signed_in(request, new)


@router.post("/reset", summary="Set a new password with a reset link's token")
async def reset_password(body: PasswordResetIn, request: Request) -> dict[str, Any]:
    user = await people_of(request).accounts.reset_password(body.token, body.new_password)
    return {"reset": True, "email": user.email}
