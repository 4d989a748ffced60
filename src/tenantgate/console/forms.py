"""Console plumbing shared by every page: who is logged in, reading a posted form, CSRF on forms, redirects.

Forms are ``application/x-www-form-urlencoded`` (the browser default), read with a size cap and parsed with the
standard library: no multipart parser is needed for a console that never uploads files.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final
from urllib.parse import parse_qsl, quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from tenantgate.console.render import render
from tenantgate.core.errors import Forbidden, GatewayError, PayloadTooLarge
from tenantgate.people.access import Caller, find_caller

MAX_FORM_BYTES: Final = 64 * 1024
MAX_FIELDS: Final = 500


class Form:
    """A posted form: ``get`` the first value of a field (stripped), ``getlist`` all of them."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._pairs = pairs

    def get(self, name: str, default: str = "") -> str:
        for key, value in self._pairs:
            if key == name:
                return value.strip()
        return default

    def optional(self, name: str) -> str | None:
        """The field's value, or None when it is missing or blank (an empty input means "not set")."""
        value = self.get(name)
        return value or None

    def getlist(self, name: str) -> list[str]:
        return [value.strip() for key, value in self._pairs if key == name and value.strip()]


def same_origin(request: Request) -> bool:
    """Whether a browser's ``Origin`` (sent with every form post) is this site: refuses cross-site posts to the
    forms that need no session yet (login, sign-up), where there is no CSRF token to check."""
    origin = request.headers.get("origin")
    if origin is None:
        return True  # not a browser form post (curl, tests); session forms still need their CSRF token
    host = request.headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")


async def read_form(request: Request) -> Form:
    if not same_origin(request):
        raise Forbidden("This form was posted from another site.", code="cross_site_form")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise PayloadTooLarge("This form is too large.")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise Forbidden("This form could not be read.", code="bad_form") from None
    return Form(pairs)


def to_login(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/console/login?next={quote(target, safe='')}", status_code=303)


def safe_next(value: str | None) -> str:
    """Only a console path may follow a login (no open redirect to another site)."""
    if value and value.startswith("/console/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/console/keys"


async def page_caller(request: Request) -> Caller | None:
    """The logged-in person for a page (session cookie only; the console does not take API keys)."""
    if request.headers.get("authorization") or request.headers.get("x-api-key"):
        return None
    try:
        caller = await find_caller(request)
    except GatewayError:
        return None
    return caller if caller is not None and caller.via == "session" else None


async def form_caller(request: Request) -> tuple[Caller | None, Form]:
    """The logged-in person posting a form, with the form; the form's ``csrf_token`` must match the session."""
    form = await read_form(request)
    if request.headers.get("authorization") or request.headers.get("x-api-key"):
        return None, form
    caller = await find_caller(request, form_csrf=form.get("csrf_token"))  # raises 403 on a wrong CSRF token
    return (caller if caller is not None and caller.via == "session" else None), form


Page = Callable[[Request, Caller], Awaitable[Response]]
FormPage = Callable[[Request, Caller, Form], Awaitable[Response]]


def logged_in(page: Page) -> Callable[[Request], Awaitable[Response]]:
    """A GET page that needs a login (anonymous visitors go to the login page and come back)."""

    async def endpoint(request: Request) -> Response:
        caller = await page_caller(request)
        if caller is None:
            return to_login(request)
        try:
            return await page(request, caller)
        except GatewayError as exc:
            return error_page(request, caller, exc)

    endpoint.__name__ = page.__name__
    endpoint.__doc__ = page.__doc__
    return endpoint


def posted(page: FormPage) -> Callable[[Request], Awaitable[Response]]:
    """A form POST that needs a login and the session's CSRF token."""

    async def endpoint(request: Request) -> Response:
        try:
            caller, form = await form_caller(request)
        except GatewayError as exc:
            return error_page(request, None, exc)
        if caller is None:
            return to_login(request)
        try:
            return await page(request, caller, form)
        except GatewayError as exc:
            return error_page(request, caller, exc)

    endpoint.__name__ = page.__name__
    endpoint.__doc__ = page.__doc__
    return endpoint


def error_page(request: Request, caller: Caller | None, exc: GatewayError) -> Response:
    """A failed action as a page: the message (never a trace) and a way back."""
    return render(request, "error.html", status=exc.status, caller=caller, message=exc.message, code=exc.code)


def admin_only(caller: Caller) -> None:
    if not caller.user.is_admin:
        raise Forbidden("This page is for platform admins.", code="admin_required")
