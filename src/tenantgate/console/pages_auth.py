"""Pages for getting in and out: log in, sign up, log out, one-time login links, password reset, account."""

from __future__ import annotations

from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from tenantgate.console.forms import Form, logged_in, page_caller, posted, read_form, safe_next
from tenantgate.console.render import render
from tenantgate.core.errors import GatewayError, InvalidRequest
from tenantgate.people.access import (
    Caller,
    clear_session_cookie,
    client_address,
    client_label,
    find_caller,
    people_of,
    set_session_cookie,
)
from tenantgate.people.accounts import NewSession


def _enter(request: Request, new: NewSession, target: str) -> Response:
    response = RedirectResponse(target, status_code=303)
    set_session_cookie(request, response, new.token, new.expires_at)
    return response


async def home(request: Request) -> Response:
    caller = await page_caller(request)
    return RedirectResponse("/console/keys" if caller else "/console/login", status_code=303)


async def root(request: Request) -> Response:
    return RedirectResponse("/console/", status_code=303)


async def login_page(request: Request) -> Response:
    if await page_caller(request) is not None:
        return RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
    policy = people_of(request).ctx.settings.signup
    return render(
        request, "login.html", next=safe_next(request.query_params.get("next")), signup_mode=policy.mode, email=""
    )


async def login_submit(request: Request) -> Response:
    form = await read_form(request)
    target = safe_next(form.get("next"))
    people = people_of(request)
    try:
        new = await people.accounts.login(
            form.get("email"), form.get("password"), client_address(request), client_label(request)
        )
    except GatewayError as exc:
        policy = people.ctx.settings.signup
        return render(
            request,
            "login.html",
            status=exc.status,
            error=exc.message,
            next=target,
            signup_mode=policy.mode,
            email=form.get("email")[:254],
        )
    return _enter(request, new, target)


async def signup_page(request: Request) -> Response:
    policy = people_of(request).ctx.settings.signup
    invite = request.query_params.get("invite", "")[:128]
    return render(request, "signup.html", signup_mode=policy.mode, domains=sorted(policy.domains), invite=invite)


async def signup_submit(request: Request) -> Response:
    form = await read_form(request)
    people = people_of(request)
    policy = people.ctx.settings.signup
    invite = form.optional("invite")
    try:
        if form.get("password") != form.get("password_again"):
            raise InvalidRequest("The two passwords differ.", param="password_again")
        new = await people.accounts.signup(
            form.get("email"), form.get("password"), form.optional("name"), invite, client_label(request)
        )
    except GatewayError as exc:
        return render(
            request,
            "signup.html",
            status=exc.status,
            error=exc.message,
            signup_mode=policy.mode,
            domains=sorted(policy.domains),
            invite=(invite or "")[:128],
            email=form.get("email")[:254],
            name=form.get("name")[:200],
        )
    return _enter(request, new, "/console/keys?welcome=1")


async def logout(request: Request) -> Response:
    form = await read_form(request)
    response = RedirectResponse("/console/login", status_code=303)
    try:
        caller = await find_caller(request, form_csrf=form.get("csrf_token"))
    except GatewayError:
        caller = None
    if caller is not None and caller.session_token:
        await people_of(request).accounts.logout(caller.session_token)
        clear_session_cookie(response)
    return response


async def link_page(request: Request) -> Response:
    """A one-time login link: a page with one button (link scanners fetch, they do not post)."""
    token = request.query_params.get("token", "")[:128]
    return render(request, "link.html", token=token)


async def link_submit(request: Request) -> Response:
    form = await read_form(request)
    try:
        new = await people_of(request).accounts.use_login_link(form.get("token"), client_label(request))
    except GatewayError as exc:
        return render(request, "link.html", status=exc.status, error=exc.message, token="")
    return _enter(request, new, "/console/keys")


async def reset_page(request: Request) -> Response:
    return render(request, "reset.html", token=request.query_params.get("token", "")[:128])


async def reset_submit(request: Request) -> Response:
    form = await read_form(request)
    try:
        if form.get("new_password") != form.get("password_again"):
            raise InvalidRequest("The two passwords differ.", param="password_again")
        user = await people_of(request).accounts.reset_password(form.get("token"), form.get("new_password"))
    except GatewayError as exc:
        return render(request, "reset.html", status=exc.status, error=exc.message, token=form.get("token")[:128])
    return RedirectResponse(f"/console/login?reset=1&email={quote(user.email)}", status_code=303)


@logged_in
async def account_page(request: Request, caller: Caller) -> Response:
    people = people_of(request)
    sessions = await people.ctx.repos.sessions.of_user(caller.user.id)
    memberships = await people.ctx.repos.memberships.of_user(caller.user.id)
    return render(
        request,
        "account.html",
        caller=caller,
        sessions=sessions,
        memberships=memberships,
        changed=request.query_params.get("changed") == "1",
    )


@posted
async def password_submit(request: Request, caller: Caller, form: Form) -> Response:
    people = people_of(request)
    try:
        if form.get("new_password") != form.get("password_again"):
            raise InvalidRequest("The two new passwords differ.", param="password_again")
        new = await people.accounts.change_password(
            caller.user,
            form.get("current_password"),
            form.get("new_password"),
            client_address(request),
            client_label(request),
        )
    except GatewayError as exc:
        sessions = await people.ctx.repos.sessions.of_user(caller.user.id)
        memberships = await people.ctx.repos.memberships.of_user(caller.user.id)
        return render(
            request,
            "account.html",
            status=exc.status,
            caller=caller,
            sessions=sessions,
            memberships=memberships,
            error=exc.message,
        )
    return _enter(request, new, "/console/account?changed=1")


@posted
async def sessions_end(request: Request, caller: Caller, form: Form) -> Response:
    await people_of(request).ctx.repos.sessions.revoke_user(caller.user.id)
    response = RedirectResponse("/console/login", status_code=303)
    clear_session_cookie(response)
    return response


async def not_found(request: Request) -> Response:
    """Any other ``/console/…`` path: a page (with the CSP), not the API's JSON error."""
    caller = await page_caller(request)
    message = "There is no such page in the console."
    return render(request, "error.html", status=404, caller=caller, message=message, code="not_found")
