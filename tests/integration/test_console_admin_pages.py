"""The platform-admin console pages against a real gateway process (httpx, no browser).

Who may see them (admins only: a normal user gets a 403 page, a visitor the login page), every form working
through the admin API's own code path and audited as ``user:<email>``, bad form input answered with a 4xx page
naming the field (never a 5xx), and the live health partial the backends page polls.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.console_support import (
    ADMIN_PAGES,
    FAST_HEALTH_CHECKS,
    PASSWORD,
    ConsoleSession,
    admin_api,
    console_gateway,
)
from tests.support import ADMIN_KEY, Gateway, Process

ADMIN_EMAIL = "root@console.example"
USER_EMAIL = "plain@console.example"
ACTOR = f"user:{ADMIN_EMAIL}"


def alert(response: httpx.Response) -> str:
    """The text of the page's error message (``role="alert"``)."""
    found = re.search(r'role="alert"[^>]*>(.*?)</p>', response.text, re.S)
    assert found, response.text[:3000]
    return html.unescape(found.group(1)).strip()


def query_of(location: str) -> str:
    return location.partition("?")[2]


@pytest.fixture(scope="module")
def gw(mock: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with console_gateway(
        tmp_path_factory,
        "console-admin",
        mock.port,
        config_extra=FAST_HEALTH_CHECKS,
        users=((ADMIN_EMAIL, True), (USER_EMAIL, False)),
        TENANTGATE_LOGIN_MAX_FAILURES_PER_ADDRESS="100000",
    ) as gateway:
        yield gateway


@pytest.fixture()
def admin(gw: Gateway) -> Iterator[ConsoleSession]:
    console = ConsoleSession(gw.url, ADMIN_EMAIL)
    yield console
    console.close()


@pytest.fixture()
def plain(gw: Gateway) -> Iterator[ConsoleSession]:
    console = ConsoleSession(gw.url, USER_EMAIL)
    yield console
    console.close()


def audit(gw: Gateway, **filters: str) -> list[dict[str, Any]]:
    with gw.admin() as client:
        response = client.get("/admin/audit", params={"actor": ACTOR, **filters})
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


# -- who may see the pages --------------------------------------------------------------------------------------


def test_a_normal_user_gets_403_on_every_admin_page_and_form(gw: Gateway, plain: ConsoleSession) -> None:
    tenant = gw.create_tenant("not-for-plain-users")
    for path in (*ADMIN_PAGES, f"/console/admin/tenants/{tenant['id']}"):
        response = plain.get(path)
        assert response.status_code == 403, path
        assert "platform admins" in response.text
        assert "content-security-policy" in response.headers
    for path in ("/console/admin/tenants", f"/console/admin/tenants/{tenant['id']}/delete", "/console/admin/backends"):
        assert plain.post(path, name="sneaky", base_url="http://127.0.0.1:1/v1", models="m").status_code == 403
    assert plain.get("/console/admin/backends/health").status_code == 403
    assert plain.get("/console/admin/usage/chart.json").status_code == 403
    assert admin_api(gw, "GET", f"/admin/tenants/{tenant['id']}")["name"] == "not-for-plain-users"
    assert not [t for t in admin_api(gw, "GET", "/admin/tenants")["data"] if t["name"] == "sneaky"]


def test_a_visitor_is_sent_to_the_login_page(gw: Gateway) -> None:
    with httpx.Client(base_url=gw.url, follow_redirects=False) as anonymous:
        for path in ADMIN_PAGES:
            response = anonymous.get(path)
            assert response.status_code == 303
            assert response.headers["location"].startswith("/console/login?next=")
        assert anonymous.get("/console/admin/backends/health").status_code == 401
        polled = anonymous.get("/console/admin/backends/health", headers={"hx-request": "true"})
        assert polled.status_code == 286  # htmx stops polling, and shows the way back in
        assert 'href="/console/login"' in polled.text
        assert anonymous.get("/console/admin/usage/chart.json").status_code == 401


def test_every_admin_page_renders_for_an_admin(admin: ConsoleSession) -> None:
    for path in ADMIN_PAGES:
        response = admin.get(path)
        assert response.status_code == 200, (path, response.text[:2000])
        assert "<h1>" in response.text
        assert 'aria-current="page"' in response.text


# -- tenants and keys -------------------------------------------------------------------------------------------


def test_tenant_create_edit_delete_are_audited(gw: Gateway, admin: ConsoleSession) -> None:
    created = admin.post("/console/admin/tenants", name="console-acme", rpm="60", budget_usd="5", budget_period="daily")
    assert created.status_code == 303, created.text
    tenant_id = created.headers["location"].split("/")[-1].split("?")[0]
    assert (
        admin_api(gw, "GET", f"/admin/tenants/{tenant_id}").items()
        >= {"rpm": 60, "budget_usd": 5.0, "tpm": None}.items()
    )
    page = admin.get(created.headers["location"])
    assert page.status_code == 200
    assert "Tenant created." in page.text
    assert "Requests this minute" in page.text  # live usage against the limits
    listing = admin.get("/console/admin/tenants").text
    assert "console-acme" in listing and tenant_id in listing and "60 rpm" in listing

    saved = admin.post(f"/console/admin/tenants/{tenant_id}", name="console-acme-2", rpm="", tpm="1000")
    assert saved.status_code == 303
    row = admin_api(gw, "GET", f"/admin/tenants/{tenant_id}")
    assert (row["name"], row["rpm"], row["tpm"], row["budget_usd"]) == ("console-acme-2", None, 1000, None)

    assert admin.post(f"/console/admin/tenants/{tenant_id}/delete").status_code == 303
    with gw.admin() as client:
        assert client.get(f"/admin/tenants/{tenant_id}").status_code == 404
    actions = [(entry["action"], entry["target_id"]) for entry in audit(gw, target_type="tenant")]
    for action in ("tenant.create", "tenant.update", "tenant.delete"):
        assert (action, tenant_id) in actions


def test_tenant_page_lists_its_members(gw: Gateway, admin: ConsoleSession) -> None:
    tenant = gw.create_tenant("with-members")
    user = admin_api(gw, "POST", "/admin/users", json={"email": "member@console.example", "password": PASSWORD})
    admin_api(gw, "PUT", f"/admin/users/{user['id']}/memberships/{tenant['id']}", json={"role": "admin"})
    page = admin.get(f"/console/admin/tenants/{tenant['id']}").text
    assert "member@console.example" in page and f"/console/admin/users/{user['id']}" in page


def test_keys_page_lists_filters_and_revokes(gw: Gateway, admin: ConsoleSession) -> None:
    first = gw.create_tenant("keys-one")
    second = gw.create_tenant("keys-two")
    key_one = gw.create_key(first["id"], name="alpha-key")
    key_two = gw.create_key(second["id"], name="beta-key")
    everything = admin.get("/console/admin/keys").text
    assert "alpha-key" in everything and "beta-key" in everything and "keys-one" in everything
    only_one = admin.get("/console/admin/keys", tenant_id=first["id"]).text
    assert "alpha-key" in only_one and "beta-key" not in only_one
    assert key_one["key"] not in everything  # never a secret, only the prefix
    assert key_one["prefix"] in everything

    revoked = admin.post(f"/console/admin/keys/{key_two['id']}/revoke", tenant_id=second["id"])
    assert revoked.status_code == 303
    assert query_of(revoked.headers["location"]) == f"tenant_id={second['id']}&done=key_revoked"
    assert admin_api(gw, "GET", f"/admin/keys/{key_two['id']}")["revoked"] is True
    assert ("key.revoke", key_two["id"]) in [(e["action"], e["target_id"]) for e in audit(gw, target_type="key")]


# -- users and invites ------------------------------------------------------------------------------------------


def test_user_created_without_password_gets_a_reset_link_to_hand_over(gw: Gateway, admin: ConsoleSession) -> None:
    page = admin.post("/console/admin/users", email="NoPass@Console.example", name="No Pass", rpm="30")
    assert page.status_code == 200, page.text
    link = re.search(r'<code class="secret" id="handover-url">([^<]+)</code>', page.text)
    assert link, page.text
    assert 'data-copy-target="#handover-url"' in page.text
    url = html.unescape(link.group(1))
    assert "/console/reset?token=" in url
    user = next(u for u in admin_api(gw, "GET", "/admin/users")["data"] if u["email"] == "nopass@console.example")
    assert (user["name"], user["rpm"], user["is_admin"]) == ("No Pass", 30, False)
    token = url.split("token=")[1]
    with httpx.Client(base_url=gw.url, follow_redirects=False) as visitor:
        reset = visitor.post(
            "/console/reset", data={"token": token, "new_password": PASSWORD, "password_again": PASSWORD}
        )
        assert reset.status_code == 303
        assert visitor.post("/console/login", data={"email": user["email"], "password": PASSWORD}).status_code == 303
    assert ("user.create", user["id"]) in [(e["action"], e["target_id"]) for e in audit(gw, target_type="user")]


def test_user_edit_page_forms(gw: Gateway, admin: ConsoleSession) -> None:
    created = admin.post("/console/admin/users", email="edit-me@console.example", password=PASSWORD, is_admin="1")
    assert created.status_code == 303, created.text
    user_id = created.headers["location"].split("/")[-1].split("?")[0]
    base = f"/console/admin/users/{user_id}"
    assert admin_api(gw, "GET", f"/admin/users/{user_id}")["is_admin"] is True

    saved = admin.post(base, email="edit-me@console.example", name="Edited", tpm="5000", budget_usd="2.5")
    assert saved.status_code == 303
    row = admin_api(gw, "GET", f"/admin/users/{user_id}")
    assert (row["name"], row["is_admin"], row["tpm"], row["budget_usd"]) == ("Edited", False, 5000, 2.5)

    tenant = gw.create_tenant("user-page-tenant")
    assert admin.post(f"{base}/memberships", tenant_id=tenant["id"], role="member").status_code == 303
    assert admin.post(f"{base}/memberships/{tenant['id']}", role="owner").status_code == 303
    memberships = admin_api(gw, "GET", f"/admin/users/{user_id}")["memberships"]
    assert [(m["tenant_id"], m["role"]) for m in memberships if m["tenant_id"] == tenant["id"]] == [
        (tenant["id"], "owner")
    ]
    page = admin.get(base).text
    assert "user-page-tenant" in page and "Live usage against their limits" in page
    assert admin.post(f"{base}/memberships/{tenant['id']}/remove").status_code == 303
    assert tenant["id"] not in [m["tenant_id"] for m in admin_api(gw, "GET", f"/admin/users/{user_id}")["memberships"]]

    for button, path_part in (("reset-link", "/console/reset?token="), ("login-link", "/console/link?token=")):
        shown = admin.post(f"{base}/{button}")
        assert shown.status_code == 200
        assert path_part in shown.text and 'data-copy-target="#handover-url"' in shown.text

    their = ConsoleSession(gw.url, "edit-me@console.example")
    assert admin.post(f"{base}/logout").status_code == 303
    assert their.get("/console/account").status_code == 303  # their session ended: back to the login page
    their.close()

    assert admin.post(f"{base}/state", disabled="1").status_code == 303
    assert admin_api(gw, "GET", f"/admin/users/{user_id}")["disabled"] is True
    with httpx.Client(base_url=gw.url) as visitor:
        refused = visitor.post("/auth/login", json={"email": "edit-me@console.example", "password": PASSWORD})
        assert refused.status_code == 401
    assert admin.post(f"{base}/state", disabled="0").status_code == 303
    assert admin_api(gw, "GET", f"/admin/users/{user_id}")["disabled"] is False

    assert admin.post(f"{base}/delete").status_code == 303
    with gw.admin() as client:
        assert client.get(f"/admin/users/{user_id}").status_code == 404
    actions = {e["action"] for e in audit(gw, target_id=user_id)} | {
        e["action"] for e in audit(gw, target_id=tenant["id"])
    }
    expected = {"user.create", "user.update", "member.put", "member.remove", "user.reset_link", "user.login_link"}
    assert expected | {"user.logout", "user.delete"} <= actions


def test_an_admin_cannot_lock_themself_out(gw: Gateway, admin: ConsoleSession) -> None:
    me = next(u for u in admin_api(gw, "GET", "/admin/users")["data"] if u["email"] == ADMIN_EMAIL)
    for path, fields in (
        (f"/console/admin/users/{me['id']}/state", {"disabled": "1"}),
        (f"/console/admin/users/{me['id']}/delete", {}),
        (f"/console/admin/users/{me['id']}", {"email": ADMIN_EMAIL}),  # is_admin unticked
    ):
        response = admin.post(path, **fields)
        assert response.status_code == 403, path
        assert "your own account" in alert(response)
    assert admin_api(gw, "GET", f"/admin/users/{me['id']}").items() >= {"is_admin": True, "disabled": False}.items()


def test_invites_create_list_and_withdraw(gw: Gateway, admin: ConsoleSession) -> None:
    tenant = gw.create_tenant("invite-target")
    shown = admin.post(
        "/console/admin/invites",
        invite_email="Invited@Console.example",
        invite_tenant=tenant["id"],
        invite_role="admin",
    )
    assert shown.status_code == 200, shown.text
    assert "/console/signup?invite=" in shown.text and 'data-copy-target="#handover-url"' in shown.text
    invite = next(i for i in admin_api(gw, "GET", "/admin/invites")["data"] if i["email"] == "invited@console.example")
    assert (invite["tenant_id"], invite["role"], invite["state"]) == (tenant["id"], "admin", "open")
    page = admin.get("/console/admin/users").text
    assert "invited@console.example" in page and f"/console/admin/invites/{invite['id']}/withdraw" in page

    assert admin.post(f"/console/admin/invites/{invite['id']}/withdraw").status_code == 303
    withdrawn = next(i for i in admin_api(gw, "GET", "/admin/invites")["data"] if i["id"] == invite["id"])
    assert withdrawn["state"] == "expired"
    assert f"/console/admin/invites/{invite['id']}/withdraw" not in admin.get("/console/admin/users").text
    actions = [(e["action"], e["target_id"]) for e in audit(gw, target_type="invite")]
    assert ("invite.create", invite["id"]) in actions and ("invite.revoke", invite["id"]) in actions


# -- backends ---------------------------------------------------------------------------------------------------


def test_backend_register_edit_toggle_delete(gw: Gateway, admin: ConsoleSession, mock: Process) -> None:
    secret = "upstream-secret-abc123"
    registered = admin.post(
        "/console/admin/backends",
        name="console-backend",
        base_url=f"http://127.0.0.1:{mock.port}/v1",
        api_key=secret,
        models="console-model, mock-gpt",
        weight="3",
        priority="2",
    )
    assert registered.status_code == 303, registered.text
    row = next(b for b in admin_api(gw, "GET", "/admin/backends")["data"] if b["name"] == "console-backend")
    assert (row["weight"], row["priority"], row["has_api_key"]) == (3, 2, True)
    assert [m["name"] for m in row["models"]] == ["console-model", "mock-gpt"]
    listing = admin.get("/console/admin/backends").text
    assert secret not in listing
    assert f'href="/console/admin/backends/{row["id"]}"' in listing
    assert 'href="/console/admin/backends/cfg_mock-a"' not in listing  # config backends are read-only

    # A priced model keeps its price when the list is edited in the console.
    admin_api(
        gw,
        "PATCH",
        f"/admin/backends/{row['id']}",
        json={"models": [{"name": "console-model", "input_price_per_mtok": 7}]},
    )
    edit = admin.get(f"/console/admin/backends/{row['id']}")
    assert edit.status_code == 200 and secret not in edit.text
    saved = admin.post(
        f"/console/admin/backends/{row['id']}",
        base_url=f"http://127.0.0.1:{mock.port}/v1/",
        models="console-model, console-extra",
        weight="5",
        priority="",
    )
    assert saved.status_code == 303, saved.text
    row = admin_api(gw, "GET", f"/admin/backends/{row['id']}")
    assert row["weight"] == 5 and row["priority"] == 2 and row["has_api_key"] is True
    assert [(m["name"], m["input_price_per_mtok"]) for m in row["models"]] == [
        ("console-model", 7.0),
        ("console-extra", 0.0),
    ]

    assert admin.post(f"/console/admin/backends/{row['id']}/enabled", enabled="0", back="list").status_code == 303
    assert admin_api(gw, "GET", f"/admin/backends/{row['id']}")["state"] == "disabled"
    assert admin.post(f"/console/admin/backends/{row['id']}/enabled", enabled="1").status_code == 303
    assert admin_api(gw, "GET", f"/admin/backends/{row['id']}")["enabled"] is True
    assert (
        admin.post(
            f"/console/admin/backends/{row['id']}", base_url=row["base_url"], models="console-model", remove_api_key="1"
        ).status_code
        == 303
    )
    assert admin_api(gw, "GET", f"/admin/backends/{row['id']}")["has_api_key"] is False

    assert admin.post(f"/console/admin/backends/{row['id']}/delete").status_code == 303
    with gw.admin() as client:
        assert client.get(f"/admin/backends/{row['id']}").status_code == 404
    entries = audit(gw, target_id=row["id"])
    assert {"backend.create", "backend.update", "backend.delete"} <= {e["action"] for e in entries}
    assert secret not in str(entries)
    assert admin.post("/console/admin/backends/cfg_mock-a/delete").status_code == 404
    assert admin.get("/console/admin/backends/cfg_mock-a").status_code == 404


def test_backends_health_partial(gw: Gateway, admin: ConsoleSession) -> None:
    deadline = time.monotonic() + 15
    while True:
        partial = admin.get("/console/admin/backends/health")
        assert partial.status_code == 200
        assert partial.headers["cache-control"] == "no-store"
        if 'id="bh-cfg_mock-a-state" hx-swap-oob="true"><span class="badge ok">healthy' in partial.text:
            break
        assert time.monotonic() < deadline, partial.text
        time.sleep(0.3)
    assert re.search(r'id="bh-cfg_mock-a-latency" hx-swap-oob="true">\d+\.\d</span>', partial.text)
    assert "<html" not in partial.text and "live" in partial.text
    page = admin.get("/console/admin/backends").text
    assert 'hx-get="/console/admin/backends/health?shown=' in page and 'hx-trigger="every 2s"' in page
    # a backend the page shows that is gone is marked removed; one it does not show yet is announced
    gone = admin.get("/console/admin/backends/health", shown="bk_gone").text
    assert 'id="bh-bk_gone-state" hx-swap-oob="true"><span class="badge muted">removed' in gone
    assert "new backend" in gone and "bh-cfg_mock-a-state" not in gone


# -- usage, audit, settings -------------------------------------------------------------------------------------


def test_usage_page_chart_and_csv(gw: Gateway, admin: ConsoleSession) -> None:
    tenant = gw.create_tenant("usage-tenant")
    key = gw.create_key(tenant["id"])["key"]
    with httpx.Client(base_url=gw.v1, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
        for _ in range(3):
            answer = client.post(
                "/chat/completions", json={"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}
            )
            assert answer.status_code == 200, answer.text
    page = admin.get("/console/admin/usage", group="tenant", since="", until="", top="5", measure="cost_usd")
    assert page.status_code == 200
    assert "usage-tenant" in page.text
    chart_url = html.unescape(re.search(r'data-chart="([^"]+)"', page.text).group(1))
    chart = admin.get(chart_url).json()
    assert chart["type"] == "bar" and chart["y_label"] == "Cost (USD)"
    assert "usage-tenant" in chart["labels"]
    assert chart["datasets"][0]["data"][chart["labels"].index("usage-tenant")] > 0

    csv_url = html.unescape(re.search(r'href="(/admin/usage\?[^"]+)"', page.text).group(1))
    assert "format=csv" in csv_url and "group_by=tenant" in csv_url and "top=5" in csv_url
    csv = admin.get(csv_url)  # the admin's session works on /admin GETs
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert tenant["id"] in csv.text
    with gw.admin() as client:
        assert client.get(csv_url).text == csv.text

    by_day = admin.get("/console/admin/usage").text  # first visit: the last 30 days by day
    day_chart = admin.get(html.unescape(re.search(r'data-chart="([^"]+)"', by_day).group(1))).json()
    assert day_chart["type"] == "line" and len(day_chart["labels"]) == 30
    assert sum(day_chart["datasets"][0]["data"]) >= 3


def test_audit_page_filters_and_pages(gw: Gateway, admin: ConsoleSession) -> None:
    for n in range(55):
        assert admin.post("/console/admin/tenants", name=f"audit-page-{n:02d}").status_code == 303
    page = admin.get("/console/admin/audit", actor=ACTOR, action="tenant.create")
    assert page.status_code == 200
    assert page.text.count("<code>tenant.create</code>") == 50
    assert '"name": "audit-page-54"' in html.unescape(page.text)  # changes as one line of JSON, newest first
    older = re.search(r'href="(/console/admin/audit\?[^"]*before_id=\d+)"', page.text)
    assert older
    second = admin.get(html.unescape(older.group(1)))
    assert second.status_code == 200 and '"name": "audit-page-00"' in html.unescape(second.text)
    assert "← Newest" in second.text
    none = admin.get("/console/admin/audit", actor="user:nobody@example.com")
    assert "No entry matches these filters" in none.text


def test_settings_page_shows_settings_and_config_defaults(gw: Gateway, admin: ConsoleSession) -> None:
    page = admin.get("/console/admin/settings")
    assert page.status_code == 200
    for text in ("TENANTGATE_DATABASE_URL", "TENANTGATE_SYNC_INTERVAL", "TENANTGATE_COOKIE_SECURE", "closed"):
        assert text in page.text
    for text in ("tenant_limits.rpm", "personal_tenant_limits.budget_usd", "health_check_interval"):
        assert text in page.text
    assert ADMIN_KEY not in page.text and "***" in page.text


# -- bad input ----------------------------------------------------------------------------------------------------


DEAD = {"name": "b", "base_url": "http://127.0.0.1:1/v1"}
BAD_FORMS = [
    ("/console/admin/tenants", {"name": "x", "rpm": "abc"}, 400, "Requests per minute"),
    ("/console/admin/tenants", {"name": "x", "rpm": "-1"}, 400, "Requests per minute"),
    ("/console/admin/tenants", {"name": "x", "tpm": "99999999999999"}, 400, "Tokens per minute"),
    ("/console/admin/tenants", {"name": "x", "budget_usd": "1e400"}, 400, "Budget (USD)"),
    ("/console/admin/tenants", {"name": "x", "budget_period": "yearly"}, 400, "Budget period"),
    ("/console/admin/tenants", {"name": ""}, 400, "Name"),
    ("/console/admin/tenants", {"name": "a\x00b"}, 400, "Name"),
    ("/console/admin/tenants", {"name": "x" * 300}, 400, "Name"),
    ("/console/admin/tenants/nope", {"name": "x"}, 404, "No tenant"),
    ("/console/admin/tenants/nope/delete", {}, 404, "No tenant"),
    ("/console/admin/keys/nope/revoke", {}, 404, "No key"),
    ("/console/admin/users", {"email": "not-an-email"}, 400, "email"),
    ("/console/admin/users", {"email": "a@b.example", "password": "short"}, 400, "password"),
    ("/console/admin/users", {"email": "a@b.example", "tenant_id": "nope"}, 400, "No tenant"),
    ("/console/admin/users", {"email": "a@b.example", "tenant_id": "x", "role": "god"}, 400, "Role"),
    ("/console/admin/users", {"email": "a@b.example", "max_concurrency": "0"}, 400, "Concurrent requests"),
    ("/console/admin/users/nope", {"email": "a@b.example"}, 404, "No user"),
    ("/console/admin/users/nope/state", {"disabled": "1"}, 404, "No user"),
    ("/console/admin/users/nope/memberships", {"tenant_id": "x", "role": "member"}, 404, "No user"),
    ("/console/admin/users/nope/reset-link", {}, 404, "No user"),
    ("/console/admin/users/nope/login-link", {}, 404, "No user"),
    ("/console/admin/users/nope/logout", {}, 404, "No user"),
    ("/console/admin/invites", {"invite_email": "bad"}, 400, "email"),
    ("/console/admin/invites", {"invite_hours": "-3"}, 400, "Expires in (hours)"),
    ("/console/admin/invites", {"invite_hours": "nan"}, 400, "Expires in (hours)"),
    ("/console/admin/invites", {"invite_tenant": "nope"}, 400, "No tenant"),
    ("/console/admin/invites/nope/withdraw", {}, 404, "No invite"),
    ("/console/admin/backends", {"name": "b", "base_url": "ftp://x", "models": "m"}, 400, "Base URL"),
    ("/console/admin/backends", {**DEAD, "models": " , "}, 400, "Models"),
    ("/console/admin/backends", {"name": "b", "base_url": "http://10.0.0.1/v1", "models": "m"}, 400, "private"),
    ("/console/admin/backends", {"name": "b", "base_url": "http://127.0.0.1:99999/v1", "models": "m"}, 400, "Base URL"),
    ("/console/admin/backends", {**DEAD, "models": "m", "weight": "x"}, 400, "Weight"),
    ("/console/admin/backends", {**DEAD, "models": "m", "priority": "2000000"}, 400, "Priority"),
    ("/console/admin/backends", {**DEAD, "models": "m", "api_key": "a b"}, 400, "API key"),
    ("/console/admin/backends", {**DEAD, "models": "m\x01"}, 400, "Models (entry 1)"),
    ("/console/admin/backends/cfg_mock-a", {"base_url": "http://127.0.0.1:1/v1", "models": "m"}, 404, "No backend"),
    ("/console/admin/backends/nope/enabled", {"enabled": "0"}, 404, "No backend"),
    ("/console/admin/backends/nope/delete", {}, 404, "No backend"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "fields", "status", "names"), BAD_FORMS)
def test_bad_form_input_is_a_4xx_page_naming_the_problem(
    admin: ConsoleSession, path: str, fields: dict[str, str], status: int, names: str
) -> None:
    response = admin.post(path, **fields)
    assert response.status_code == status, response.text[:3000]
    assert response.headers["content-type"].startswith("text/html")
    assert names.lower() in alert(response).lower()


@pytest.mark.parametrize(
    ("path", "params", "names"),
    [
        ("/console/admin/usage", {"group": "nope"}, "Group by"),
        ("/console/admin/usage", {"group": "day", "since": "2026-13-01"}, "Since"),
        ("/console/admin/usage", {"group": "day", "since": "2026-02-01", "until": "2026-01-01"}, "Since"),
        ("/console/admin/usage", {"group": "day", "until": "9999-12-31"}, "Until"),
        ("/console/admin/usage", {"group": "day", "top": "0"}, "Top"),
        ("/console/admin/usage", {"group": "day", "tenant_id": "\x00"}, "Tenant must not"),
        ("/console/admin/audit", {"before_id": "abc"}, "Page"),
        ("/console/admin/audit", {"before_id": "99999999999"}, "Page"),
        ("/console/admin/audit", {"actor": "\x00"}, "actor"),
    ],
)
def test_bad_query_input_is_a_400_page(admin: ConsoleSession, path: str, params: dict[str, str], names: str) -> None:
    response = admin.get(path, **params)
    assert response.status_code == 400
    assert names.lower() in alert(response).lower()


def test_bad_chart_query_is_a_json_400(admin: ConsoleSession) -> None:
    response = admin.get("/console/admin/usage/chart.json", group="day", top="abc")
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "top"


def test_malformed_posts_are_refused_without_a_5xx(admin: ConsoleSession) -> None:
    too_big = admin.http.post(
        "/console/admin/tenants",
        content=b"name=" + b"x" * 70_000,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert too_big.status_code == 413
    not_utf8 = admin.http.post(
        "/console/admin/tenants",
        content=b"csrf_token=" + admin.csrf.encode() + b"&name=\xff\xfe",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert not_utf8.status_code == 403
    many = "&".join(f"f{n}=1" for n in range(600))
    flood = admin.http.post(
        "/console/admin/tenants",
        content=f"csrf_token={admin.csrf}&{many}".encode(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert flood.status_code == 403
