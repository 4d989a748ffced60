"""Console security against a real gateway: session cookie flags, CSRF on every form, cross-site login posts,
escaping of stored text, a strict CSP on every page and static file with nothing inline for it to block, long
caching of static files, sessions revoked on logout and password change, secrets masked on the settings page.

The HTML checks walk every page an admin can reach by following links (and the pages forms answer with),
parsing each one with the standard library's parser.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from tests.console_support import PASSWORD, ConsoleSession, console_gateway, console_login, session_cookie
from tests.support import ADMIN_KEY, Gateway, Process

ADMIN_EMAIL = "sec-admin@console.example"
USER_EMAIL = "sec-user@console.example"
NASTY = (
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(2)>',
    "'><svg onload=alert(3)>",
)
SMTP_PASSWORD = "smtp-pass-Qx81"
BOOTSTRAP_SECRET = "boot-secret-key-Zr77"
FERNET = base64.urlsafe_b64encode(os.urandom(32)).decode()
FORMS_WITHOUT_SESSION = ("/console/login", "/console/signup", "/console/reset", "/console/link")


@pytest.fixture(scope="module")
def gw(mock: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with console_gateway(
        tmp_path_factory,
        "console-security",
        mock.port,
        users=((ADMIN_EMAIL, True), (USER_EMAIL, False)),
        TENANTGATE_LOGIN_MAX_FAILURES_PER_ADDRESS="100000",
    ) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def secure_gw(mock: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """Secure cookies always, and secrets in the environment for the settings page to mask."""
    with console_gateway(
        tmp_path_factory,
        "console-security-secure",
        mock.port,
        users=((ADMIN_EMAIL, True),),
        TENANTGATE_COOKIE_SECURE="always",
        TENANTGATE_SECRET_KEY=FERNET,
        TENANTGATE_SMTP_URL=f"smtp://mailer:{SMTP_PASSWORD}@127.0.0.1:1",
        TENANTGATE_BOOTSTRAP_KEYS=f"boot:{BOOTSTRAP_SECRET}",
    ) as gateway:
        yield gateway


@pytest.fixture()
def admin(gw: Gateway) -> Iterator[ConsoleSession]:
    session = ConsoleSession(gw.url, ADMIN_EMAIL)
    yield session
    session.close()


# -- cookies and CSRF -----------------------------------------------------------------------------------------------


def cookie_attributes(response: httpx.Response) -> set[str]:
    header = next(v for v in response.headers.get_list("set-cookie") if v.startswith("tg_session="))
    return {
        part.strip().split("=")[0].lower() + ("=" + part.split("=", 1)[1].strip().lower() if "=" in part else "")
        for part in header.split(";")[1:]
    }


def test_session_cookie_flags_over_http(gw: Gateway) -> None:
    attributes = cookie_attributes(console_login(gw.url, ADMIN_EMAIL))
    assert {"httponly", "samesite=lax", "path=/"} <= attributes
    assert "secure" not in attributes


def test_session_cookie_is_secure_when_configured(secure_gw: Gateway) -> None:
    attributes = cookie_attributes(console_login(secure_gw.url, ADMIN_EMAIL))
    assert {"httponly", "samesite=lax", "secure"} <= attributes


def test_console_forms_need_the_csrf_token(gw: Gateway, admin: ConsoleSession) -> None:
    for fields in ({}, {"csrf_token": "0" * 64}, {"csrf_token": admin.csrf[:-1]}, {"csrf_token": "x" * 500}):
        refused = admin.http.post("/console/admin/tenants", data={"name": "csrf-victim", **fields})
        assert refused.status_code == 403
        assert "CSRF" in refused.text
        password = admin.http.post("/console/account/password", data={"current_password": PASSWORD, **fields})
        assert password.status_code == 403
    with gw.admin() as client:
        assert "csrf-victim" not in client.get("/admin/tenants").text
    # a logout without the token does not end the session
    admin.http.post("/console/logout", data={})
    assert admin.http.get("/console/admin/tenants").status_code == 200
    # the right token in the form, or in the X-CSRF-Token header (htmx), works
    assert admin.post("/console/admin/tenants", name="csrf-ok").status_code == 303
    by_header = admin.http.post(
        "/console/admin/tenants", data={"name": "csrf-ok-2"}, headers={"x-csrf-token": admin.csrf}
    )
    assert by_header.status_code == 303


def test_cross_site_posts_are_refused(gw: Gateway, admin: ConsoleSession) -> None:
    evil = {"origin": "https://evil.example"}
    response = console_login(gw.url, ADMIN_EMAIL, headers=evil)
    assert response.status_code == 403
    assert "tg_session" not in response.headers.get("set-cookie", "")
    assert console_login(gw.url, ADMIN_EMAIL, headers={"origin": gw.url}).status_code == 303
    forged = admin.http.post("/console/admin/tenants", data={"csrf_token": admin.csrf, "name": "cross"}, headers=evil)
    assert forged.status_code == 403


# -- sessions end -----------------------------------------------------------------------------------------------


def test_logout_revokes_the_session(gw: Gateway) -> None:
    session = ConsoleSession(gw.url, ADMIN_EMAIL)
    assert session.http.get("/me").status_code == 200
    out = session.post("/console/logout")
    assert out.status_code == 303 and out.headers["location"] == "/console/login"
    assert session.http.get("/me").status_code == 401  # the old cookie, sent again
    page = session.http.get("/console/admin/tenants")
    assert page.status_code == 303 and page.headers["location"].startswith("/console/login")


def test_password_change_revokes_every_session(gw: Gateway) -> None:
    with gw.admin() as client:
        email = "sec-pw@console.example"
        assert client.post("/admin/users", json={"email": email, "password": PASSWORD}).status_code == 201
    here, there = ConsoleSession(gw.url, email), ConsoleSession(gw.url, email)
    new_password = PASSWORD + "-new"
    changed = here.post(
        "/console/account/password", current_password=PASSWORD, new_password=new_password, password_again=new_password
    )
    assert changed.status_code == 303
    fresh = session_cookie(changed)
    assert there.http.get("/me").status_code == 401
    assert here.http.get("/me").status_code == 401  # the cookie before the change
    assert httpx.get(f"{gw.url}/me", headers={"cookie": f"tg_session={fresh}"}).status_code == 200
    assert console_login(gw.url, email).status_code == 401  # the old password: the login page again, with an error
    assert console_login(gw.url, email, new_password).status_code == 303


# -- every page: CSP, nothing inline, escaping, labels ------------------------------------------------------------


class PageAudit(HTMLParser):
    """Collects what the checks need from one page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []
        self.links: list[str] = []
        self.assets: list[str] = []
        self.ids: list[str] = []
        self.label_for: set[str] = set()
        self.fields: list[tuple[str, dict[str, str]]] = []
        self.forms: list[dict[str, Any]] = []
        self.buttons: list[dict[str, Any]] = []
        self._script: dict[str, str] | None = None
        self._button: dict[str, Any] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        for name, value in values.items():
            if name.startswith("on"):
                self.problems.append(f"<{tag} {name}=…> event handler attribute")
            if name == "style":
                self.problems.append(f"<{tag} style=…> inline style")
            if name in (
                "href",
                "src",
                "action",
                "formaction",
                "hx-get",
                "hx-post",
            ) and value.strip().lower().startswith("javascript:"):
                self.problems.append(f"<{tag} {name}={value!r}> javascript: URL")
            if name.startswith("hx-on") or (name == "hx-vals" and value.startswith("js:")):
                self.problems.append(f"<{tag} {name}> needs eval")
        if "id" in values:
            self.ids.append(values["id"])
        if tag == "style":
            self.problems.append("<style> element")
        if tag == "script":
            self._script = values
            if not values.get("src"):
                self.problems.append("<script> without src")
            else:
                self.assets.append(values["src"])
        if tag == "link" and values.get("rel") == "stylesheet":
            self.assets.append(values.get("href", ""))
        if tag == "a" and values.get("href"):
            self.links.append(values["href"])
        if tag == "label" and values.get("for"):
            self.label_for.add(values["for"])
        if tag in ("input", "select", "textarea") and values.get("type") not in ("hidden", "submit", "button"):
            self.fields.append((tag, values))
        if tag == "form":
            self.forms.append({**values, "csrf": False})
        if tag == "input" and values.get("name") == "csrf_token" and self.forms:
            self.forms[-1]["csrf"] = bool(values.get("value"))
        if tag == "button":
            self._button = {**values, "text": ""}
            self.buttons.append(self._button)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._script = None
        if tag == "button":
            self._button = None

    def handle_data(self, data: str) -> None:
        if self._script is not None and data.strip():
            self.problems.append("inline <script> body")
        if self._button is not None:
            self._button["text"] += data

    def check(self, where: str) -> list[str]:
        problems = [f"{where}: {p}" for p in self.problems]
        duplicates = {i for i in self.ids if self.ids.count(i) > 1}
        if duplicates:
            problems.append(f"{where}: duplicate ids {sorted(duplicates)}")
        for tag, values in self.fields:
            named = values.get("id") in self.label_for or values.get("aria-label") or values.get("aria-labelledby")
            if not named:
                problems.append(f"{where}: <{tag} name={values.get('name')!r}> has no label")
        for form in self.forms:
            posted = form.get("method", "get").lower() == "post"
            if posted and not form["csrf"] and form.get("action") not in FORMS_WITHOUT_SESSION:
                problems.append(f"{where}: POST form {form.get('action')!r} without a CSRF token")
        for button in self.buttons:
            if not (button["text"].strip() or button.get("aria-label") or button.get("title")):
                problems.append(f"{where}: button without an accessible name")
        return problems


def csp_problems(response: httpx.Response, where: str) -> list[str]:
    policy = response.headers.get("content-security-policy")
    if not policy:
        return [f"{where}: no Content-Security-Policy"]
    directives = {part.split()[0]: part.split()[1:] for part in (p.strip() for p in policy.split(";")) if part}
    problems = []
    for name, wanted in (
        ("default-src", ["'self'"]),
        ("script-src", ["'self'"]),
        ("style-src", ["'self'"]),
        ("object-src", ["'none'"]),
        ("frame-ancestors", ["'none'"]),
        ("base-uri", ["'none'"]),
    ):
        if directives.get(name) != wanted:
            problems.append(f"{where}: {name} is {directives.get(name)}, want {wanted}")
    if re.search(r"unsafe-(inline|eval|hashes)|\*|strict-dynamic", policy):
        problems.append(f"{where}: CSP allows too much: {policy}")
    if response.headers.get("x-content-type-options") != "nosniff":
        problems.append(f"{where}: no nosniff")
    return problems


def crawl(client: httpx.Client, start: list[str], limit: int = 150) -> dict[str, httpx.Response]:
    """Every console page reachable by GET links from ``start`` (same origin, under /console/)."""
    seen: dict[str, httpx.Response] = {}
    queue = list(start)
    while queue and len(seen) < limit:
        path = queue.pop(0)
        if path in seen:
            continue
        response = client.get(path)
        seen[path] = response
        if "text/html" not in response.headers.get("content-type", ""):
            continue
        parser = PageAudit()
        parser.feed(response.text)
        for href in parser.links:
            target = urljoin(path, href)
            parts = urlsplit(target)
            if parts.netloc or not parts.path.startswith("/console/") or parts.path.startswith("/console/static/"):
                continue
            clean = parts.path + (f"?{parts.query}" if parts.query else "")
            if clean not in seen and clean not in queue:
                queue.append(clean)
    return seen


@pytest.fixture(scope="module")
def nasty_world(gw: Gateway, mock: Process) -> dict[str, str]:
    """Stored text that would run if a page forgot to escape it: tenant, user, backend, key and invite names."""
    with gw.admin() as client:
        ids: dict[str, str] = {}
        for n, text in enumerate(NASTY):
            tenant = client.post("/admin/tenants", json={"name": text}).json()
            ids[f"tenant{n}"] = tenant["id"]
            client.post("/admin/keys", json={"tenant_id": tenant["id"], "name": text})
            user = client.post(
                "/admin/users",
                json={
                    "email": f"nasty{n}@console.example",
                    "name": text,
                    "password": PASSWORD,
                    "tenant_id": tenant["id"],
                },
            ).json()
            ids[f"user{n}"] = user["id"]
            client.post("/admin/invites", json={"email": f"invitee{n}@console.example", "tenant_id": tenant["id"]})
            backend = client.post(
                "/admin/backends", json={"name": text, "base_url": f"http://127.0.0.1:{mock.port}/v1", "models": [text]}
            )
            assert backend.status_code == 201, backend.text
            ids[f"backend{n}"] = backend.json()["id"]
        key = client.post("/admin/keys", json={"tenant_id": ids["tenant0"]}).json()["key"]
    with httpx.Client(base_url=gw.v1, headers={"Authorization": f"Bearer {key}"}, timeout=30) as v1:
        v1.post("/chat/completions", json={"model": NASTY[0], "messages": [{"role": "user", "content": "hi"}]})
    return ids


@pytest.fixture(scope="module")
def admin_pages(gw: Gateway, nasty_world: dict[str, str]) -> dict[str, httpx.Response]:
    session = ConsoleSession(gw.url, ADMIN_EMAIL)
    start = [
        "/console/admin/tenants",
        "/console/admin/users",
        "/console/admin/keys",
        "/console/admin/backends",
        "/console/admin/backends/health",
        "/console/admin/usage",
        "/console/admin/usage?group=tenant&measure=cost_usd",
        "/console/admin/usage?group=model",
        "/console/admin/usage?group=key",
        "/console/admin/usage?group=nope",
        "/console/admin/audit",
        "/console/admin/settings",
        "/console/account",
        f"/console/admin/users/{nasty_world['user0']}",
        f"/console/admin/backends/{nasty_world['backend1']}",
    ]
    pages = crawl(session.http, start)
    # the pages forms answer with: one-time links, refused input, a failed action
    pages["POST new user"] = session.post("/console/admin/users", email="handover@console.example")
    pages["POST invite"] = session.post("/console/admin/invites", invite_tenant=nasty_world["tenant1"])
    pages["POST bad tenant"] = session.post("/console/admin/tenants", name=NASTY[1], rpm="-1")
    pages["POST bad backend"] = session.post(
        f"/console/admin/backends/{nasty_world['backend2']}", base_url="x", models=NASTY[2]
    )
    pages["POST login link"] = session.post(f"/console/admin/users/{nasty_world['user2']}/login-link")
    pages["POST missing"] = session.post("/console/admin/tenants/nope/delete")
    session.close()
    assert len(pages) > 25, sorted(pages)
    return pages


def test_stored_text_is_escaped_everywhere(admin_pages: dict[str, httpx.Response]) -> None:
    tenants = admin_pages["/console/admin/tenants"].text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in tenants
    for where, response in admin_pages.items():
        for text in NASTY:
            assert text not in response.text, f"{where} shows {text!r} unescaped"


def test_every_console_page_has_a_strict_csp_and_nothing_inline(
    gw: Gateway, admin_pages: dict[str, httpx.Response]
) -> None:
    problems: list[str] = []
    html_pages = 0
    for where, response in admin_pages.items():
        assert response.status_code < 500, where
        if response.is_redirect:
            continue
        if where.startswith(("/console/admin/", "POST")) or "text/html" in response.headers.get("content-type", ""):
            problems += csp_problems(response, where)
        if "text/html" in response.headers.get("content-type", ""):
            html_pages += 1
            parser = PageAudit()
            parser.feed(response.text)
            problems += parser.check(where)
    with httpx.Client(base_url=gw.url, follow_redirects=False) as anonymous:
        for path in ("/console/login", "/console/signup", "/console/reset?token=x", "/console/link?token=x"):
            response = anonymous.get(path)
            parser = PageAudit()
            parser.feed(response.text)
            problems += csp_problems(response, path) + parser.check(path)
    plain = ConsoleSession(gw.url, USER_EMAIL)
    for path in ("/console/admin/tenants", "/console/admin/settings", "/console/account"):
        response = plain.http.get(path)
        parser = PageAudit()
        parser.feed(response.text)
        problems += csp_problems(response, f"as a user: {path}") + parser.check(f"as a user: {path}")
    assert not problems, "\n".join(problems)
    assert html_pages > 20


def test_static_files_are_immutable_with_csp_and_unknown_ones_404(gw: Gateway) -> None:
    page = httpx.get(f"{gw.url}/console/login")
    parser = PageAudit()
    parser.feed(page.text)
    assets = [a for a in parser.assets if a.startswith("/console/static/")]
    assert len(assets) >= 4, assets
    with httpx.Client(base_url=gw.url) as client:
        for asset in assets:
            response = client.get(asset)
            assert response.status_code == 200, asset
            cache = response.headers["cache-control"]
            assert "immutable" in cache and "max-age=31536000" in cache and "public" in cache
            assert not csp_problems(response, asset)
            assert client.head(asset).status_code == 200
        digest, name = assets[0].split("/")[3], assets[0].split("/", 4)[4]
        for missing in (
            f"/console/static/{digest}/nope.js",
            f"/console/static/0000000000000000/{name}",
            f"/console/static/{digest}/%2e%2e/%2e%2e/render.py",
            f"/console/static/{digest}/..%2f..%2fpages_admin.py",
            "/console/static/x/templates/base.html",
        ):
            response = client.get(missing)
            assert response.status_code == 404, missing
            assert "immutable" not in response.headers.get("cache-control", "")


# -- secrets on the settings page --------------------------------------------------------------------------------


def test_settings_page_masks_every_secret(secure_gw: Gateway) -> None:
    token = session_cookie(console_login(secure_gw.url, ADMIN_EMAIL))
    page = httpx.get(f"{secure_gw.url}/console/admin/settings", headers={"cookie": f"tg_session={token}"})
    assert page.status_code == 200
    for secret in (ADMIN_KEY, FERNET, SMTP_PASSWORD, BOOTSTRAP_SECRET):
        assert secret not in page.text
    assert page.text.count("***") >= 4
    assert "TENANTGATE_SMTP_URL" in page.text and "TENANTGATE_COOKIE_SECURE" in page.text


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+asyncpg://app:s3cret@db:5432/tg", "postgresql+asyncpg://app:***@db:5432/tg"),
        ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("redis://cache:6379/0", "redis://cache:6379/0"),
        (
            "postgresql://app@db/tg?sslmode=require&password=s3cret",
            "postgresql://app@db/tg?sslmode=require&password=***",
        ),
        ("sqlite+aiosqlite:///./tenantgate.db", "sqlite+aiosqlite:///./tenantgate.db"),
        ("redis://u:p@host:notaport/0", "***"),
    ],
)
def test_database_and_redis_urls_lose_their_password(url: str, shown: str) -> None:
    from tenantgate.console.admin_reports import mask_url

    assert mask_url(url) == shown
