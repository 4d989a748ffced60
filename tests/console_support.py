"""What the console tests share: a gateway process for a test module, console logins (a session cookie and the
page's CSRF token), and the admin API calls they check results with.

Browser tests use this module too, so nothing here needs an event loop or imports Playwright at run time.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.support import Gateway, mock_config, start_gateway

if TYPE_CHECKING:
    from playwright.sync_api import Page

PASSWORD = "correct-horse-battery"
FAST_HEALTH_CHECKS = "routing:\n  health_check_interval: 0.5\n"  # config: backends turn healthy within a second
ADMIN_PAGES = (
    "/console/admin/tenants",
    "/console/admin/users",
    "/console/admin/keys",
    "/console/admin/backends",
    "/console/admin/usage",
    "/console/admin/audit",
    "/console/admin/settings",
)


@contextmanager
def console_gateway(
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    mock_port: int,
    *,
    config_extra: str = "",
    users: Iterable[tuple[str, bool]] = (),
    **env: str,
) -> Iterator[Gateway]:
    """A gateway on its own SQLite file, routing to the mock upstream at ``mock_port``, with ``users`` ((email,
    is_admin) pairs, password :data:`PASSWORD`) created; stopped on leaving the block."""
    tmp = tmp_path_factory.mktemp(name)
    gateway = start_gateway(
        f"sqlite+aiosqlite:///{tmp / 'tg.db'}", tmp, mock_config(mock_port) + config_extra, open_files=None, **env
    )
    try:
        with gateway.admin() as client:
            for email, is_admin in users:
                body = {"email": email, "password": PASSWORD, "is_admin": is_admin}
                answer = client.post("/admin/users", json=body)
                assert answer.status_code == 201, answer.text
        yield gateway
    finally:
        gateway.process.stop()


def admin_api(gw: Gateway, method: str, path: str, **kwargs: Any) -> Any:
    """One admin API call with the admin key; it must succeed. Its JSON body."""
    with gw.admin() as client:
        response = client.request(method, path, **kwargs)
    assert response.status_code < 300, response.text
    return response.json()


def csrf_of(page: str) -> str:
    """The CSRF token a console page carries in ``<meta name="csrf-token">``."""
    found = re.search(r'<meta name="csrf-token" content="([^"]+)"', page)
    assert found, page[:2000]
    return found.group(1)


def session_cookie(response: httpx.Response) -> str:
    """The ``tg_session`` cookie a login or sign-up answer sets."""
    found = re.search(r"tg_session=([^;]+)", response.headers.get("set-cookie", ""))
    assert found, response.headers
    return found.group(1)


def console_login(base_url: str, email: str, password: str = PASSWORD, **kwargs: Any) -> httpx.Response:
    """The login form posted once, as a visitor (the answer as it comes)."""
    return httpx.post(f"{base_url}/console/login", data={"email": email, "password": password}, timeout=30, **kwargs)


class ConsoleSession:
    """A browser-like client logged in through the login form. It sends its session cookie by header (so a
    ``Secure`` cookie works over plain http too) and the page's CSRF token with every form it posts."""

    def __init__(self, base_url: str, email: str, password: str = PASSWORD) -> None:
        login = console_login(base_url, email, password)
        assert login.status_code == 303, login.text
        self.cookie = session_cookie(login)
        self.http = httpx.Client(
            base_url=base_url, follow_redirects=False, timeout=30, headers={"cookie": f"tg_session={self.cookie}"}
        )
        self.csrf = csrf_of(self.http.get("/console/account").text)

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.http.get(path, params=params or None)

    def post(self, path: str, **fields: Any) -> httpx.Response:
        return self.http.post(path, data={"csrf_token": self.csrf, **fields})

    def close(self) -> None:
        self.http.close()


def fill_login_form(page: Page, email: str, password: str = PASSWORD) -> None:
    """In a browser on the login page: type the email and password, press Log in."""
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
