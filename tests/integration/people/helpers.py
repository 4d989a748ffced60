"""Helpers for the people API tests: a cookie-less HTTP client, a signed-in person, polling.

Every call sets its credentials explicitly (the ``tg_session`` cookie as a header, the CSRF token, a key), so a
test always knows what it sent: the shared client keeps no cookie jar, and a request without a ``Cookie`` header
is anonymous even right after a login.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any, TypeVar

import httpx

from tests.support import ADMIN_KEY, Gateway

StartGateway = Callable[..., Gateway]

# The open gateway's sign-up section: what a self-made account and its personal tenant get.
OPEN_TENANT_LIMITS: dict[str, Any] = {
    "rpm": 120,
    "tpm": 50_000,
    "max_concurrency": 6,
    "budget_usd": 7.5,
    "budget_period": "daily",
}
OPEN_USER_LIMITS: dict[str, Any] = {"rpm": 100}
OPEN_SIGNUP_CONFIG = """\
signup:
  personal_tenant_limits:
    rpm: 120
    tpm: 50000
    max_concurrency: 6
    budget_usd: 7.5
    budget_period: daily
  user_limits:
    rpm: 100
"""

PASSWORD = "correct-horse-battery"
SESSION_COOKIE = "tg_session"
T = TypeVar("T")


class _NoCookies(DefaultCookiePolicy):
    def set_ok(self, cookie: Any, request: Any) -> bool:
        return False

    def return_ok(self, cookie: Any, request: Any) -> bool:
        return False


_client: httpx.Client | None = None


def http() -> httpx.Client:
    """One shared client that never stores or sends cookies on its own."""
    global _client
    if _client is None:
        _client = httpx.Client(cookies=CookieJar(policy=_NoCookies()), timeout=30)
    return _client


def close_http() -> None:
    global _client
    if _client is not None:
        _client.close()
        _client = None


def stop_soon(gw: Gateway) -> None:
    """Ask a gateway to stop without waiting for it (the package's teardown reaps it): a module's gateway shuts
    down while the next module's tests run."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(gw.process.proc.pid, signal.SIGTERM)


def call(
    gw: Gateway, method: str, path: str, *, headers: dict[str, str] | None = None, **kwargs: Any
) -> httpx.Response:
    return http().request(method, f"{gw.url}{path}", headers=headers or {}, **kwargs)


def admin(gw: Gateway, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """A call with the gateway's admin key."""
    return call(gw, method, path, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, **kwargs)


def with_key(gw: Gateway, key: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """A call with a (personal) API key and nothing else: no cookie, no CSRF token."""
    return call(gw, method, path, headers={"Authorization": f"Bearer {key}"}, **kwargs)


def unique_email(prefix: str = "user", domain: str = "example.com") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}@{domain}"


def set_cookie_headers(response: httpx.Response) -> list[str]:
    return [value for value in response.headers.get_list("set-cookie") if value.startswith(f"{SESSION_COOKIE}=")]


def set_cookie_value(response: httpx.Response) -> str:
    """The value the response gives the session cookie (it sets it exactly once; "" or '""' clears it)."""
    headers = set_cookie_headers(response)
    assert len(headers) == 1, response.headers.get_list("set-cookie")
    return headers[0].split(";", 1)[0].split("=", 1)[1]


def session_cookie(response: httpx.Response) -> str:
    """The new session cookie the response sets."""
    value = set_cookie_value(response)
    assert value and value != '""', response.headers.get_list("set-cookie")
    return value


def cookie_attributes(response: httpx.Response) -> dict[str, str]:
    """The attributes of the session cookie, lower-cased names (``httponly`` -> ``""``)."""
    header = set_cookie_headers(response)[0]
    attributes = {}
    for part in header.split(";")[1:]:
        name, _, value = part.strip().partition("=")
        attributes[name.lower()] = value
    return attributes


def error_of(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """Assert an error answer with ``status`` (and ``code``); its ``error`` object."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert {"message", "type", "param", "code"} <= set(error), error
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


def poll(check: Callable[[], T | None], timeout: float = 10.0, what: str = "condition") -> T:
    """``check()`` until it returns something truthy (returned), or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s (last: {result!r})")
        time.sleep(0.05)


def chat(gw: Gateway, key: str, model: str = "mock-gpt") -> httpx.Response:
    return with_key(
        gw,
        key,
        "POST",
        "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8},
    )


def wait_key_refused(gw: Gateway, key: str) -> httpx.Response:
    """Poll until the key gets 401 on /v1 (the key cache follows a change within the sync interval)."""

    def refused() -> httpx.Response | None:
        response = chat(gw, key)
        return response if response.status_code == 401 else None

    return poll(refused, what="key refused with 401")


@dataclass
class Person:
    """A signed-in user: its session cookie value and CSRF token."""

    gw: Gateway
    email: str
    password: str
    cookie: str
    csrf: str
    user: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return str(self.user["id"])

    def request(
        self,
        method: str,
        path: str,
        *,
        csrf: str | bool | None = True,
        cookie: str | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """A call with the session cookie; non-GET calls carry the CSRF token unless ``csrf`` says otherwise
        (False: none, a string: that one)."""
        headers = {"Cookie": f"{SESSION_COOKIE}={cookie or self.cookie}"}
        token = self.csrf if csrf is True else (csrf or None)
        if token and method.upper() not in ("GET", "HEAD", "OPTIONS"):
            headers["X-CSRF-Token"] = token
        headers.update(kwargs.pop("headers", {}))
        return call(self.gw, method, path, headers=headers, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, json: Any = None, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, json=json, **kwargs)

    def patch(self, path: str, json: Any = None, **kwargs: Any) -> httpx.Response:
        return self.request("PATCH", path, json=json, **kwargs)

    def put(self, path: str, json: Any = None, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", path, json=json, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", path, **kwargs)

    def me(self) -> dict[str, Any]:
        response = self.get("/me")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def tenant_ids(self) -> list[str]:
        return [m["tenant_id"] for m in self.me()["memberships"]]

    def personal_tenant(self) -> str:
        owned = [m["tenant_id"] for m in self.me()["memberships"] if m["role"] == "owner"]
        assert len(owned) == 1, owned
        return str(owned[0])

    def new_key(self, **fields: Any) -> dict[str, Any]:
        response = self.post("/me/keys", json=fields)
        assert response.status_code == 201, response.text
        return dict(response.json())


def person_from(gw: Gateway, response: httpx.Response, email: str, password: str) -> Person:
    body = response.json()
    return Person(gw, email, password, session_cookie(response), body["csrf_token"], body["user"])


def try_signup(
    gw: Gateway, email: str, password: str = PASSWORD, *, invite: str | None = None, name: str | None = None
) -> httpx.Response:
    body: dict[str, Any] = {"email": email, "password": password}
    if invite is not None:
        body["invite"] = invite
    if name is not None:
        body["name"] = name
    return call(gw, "POST", "/auth/signup", json=body)


def signup(
    gw: Gateway,
    email: str | None = None,
    password: str = PASSWORD,
    *,
    invite: str | None = None,
    name: str | None = None,
) -> Person:
    email = email or unique_email()
    response = try_signup(gw, email, password, invite=invite, name=name)
    assert response.status_code == 201, response.text
    return person_from(gw, response, email.strip().lower(), password)


def try_login(gw: Gateway, email: str, password: str = PASSWORD) -> httpx.Response:
    return call(gw, "POST", "/auth/login", json={"email": email, "password": password})


def login(gw: Gateway, email: str, password: str = PASSWORD) -> Person:
    response = try_login(gw, email, password)
    assert response.status_code == 200, response.text
    return person_from(gw, response, email, password)


def create_user(
    gw: Gateway, email: str | None = None, password: str | None = PASSWORD, **fields: Any
) -> dict[str, Any]:
    """A user made with the admin key (``password=None``: the answer carries a reset link)."""
    body: dict[str, Any] = {"email": email or unique_email("made"), **fields}
    if password is not None:
        body["password"] = password
    response = admin(gw, "POST", "/admin/users", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def admin_invite(gw: Gateway, **fields: Any) -> dict[str, Any]:
    response = admin(gw, "POST", "/admin/invites", json=fields)
    assert response.status_code == 201, response.text
    return dict(response.json())
