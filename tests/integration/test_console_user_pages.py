"""The console's user pages over plain HTTP (no browser): logins, CSRF, escaping, security headers, the secret
shown once, errors that keep the form, usage that stays one's own, and the team pages' permissions.

One gateway process in open sign-up mode for the module; every person signs up through the console's own form
and is then driven with explicit ``Cookie`` headers (the client keeps no cookie jar)."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tenantgate.console.render import CSP
from tests.console_support import PASSWORD, console_gateway, csrf_of, session_cookie
from tests.support import Gateway, Process

MAX_KEYS = 6
GET_PAGES = ("/console/keys", "/console/usage", "/console/playground", "/console/tenants")


class _NoCookies(DefaultCookiePolicy):
    def set_ok(self, cookie: Any, request: Any) -> bool:
        return False

    def return_ok(self, cookie: Any, request: Any) -> bool:
        return False


@pytest.fixture(scope="module")
def gw(mock: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with console_gateway(
        tmp_path_factory,
        "console-user",
        mock.port,
        TENANTGATE_SIGNUP="open",
        TENANTGATE_MAX_KEYS_PER_USER=str(MAX_KEYS),
        TENANTGATE_LOGIN_MAX_FAILURES_PER_ADDRESS="100000",
    ) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def client(gw: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gw.url, cookies=CookieJar(policy=_NoCookies()), timeout=30) as http:
        yield http


@dataclass
class Person:
    http: httpx.Client
    email: str
    cookie: str
    csrf: str

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.get(path, headers={"Cookie": f"tg_session={self.cookie}"}, **kwargs)

    def post(self, path: str, data: dict[str, Any] | None = None, *, csrf: str | None = "session") -> httpx.Response:
        """A console form post; ``csrf`` None leaves the token out, any other string replaces it."""
        fields = dict(data or {})
        if csrf is not None:
            fields["csrf_token"] = self.csrf if csrf == "session" else csrf
        return self.http.post(path, data=fields, headers={"Cookie": f"tg_session={self.cookie}"})

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Cookie": f"tg_session={self.cookie}", "X-CSRF-Token": self.csrf}
        return self.http.request(method, path, headers=headers, **kwargs)

    def tenant_id(self) -> str:
        return str(self.api("GET", "/me").json()["memberships"][0]["tenant_id"])

    def create_key(self, **fields: Any) -> tuple[httpx.Response, str]:
        """Create a key with the console form; the answer and the secret it shows."""
        response = self.post("/console/keys", {"name": f"key-{uuid.uuid4().hex[:6]}", **fields})
        assert response.status_code == 201, response.text
        return response, secret_of(response)


def secret_of(response: httpx.Response) -> str:
    found = re.search(r'<code class="secret" id="new-secret">([^<]+)</code>', response.text)
    assert found, response.text
    return found.group(1)


def sign_up(client: httpx.Client, invite: str = "") -> Person:
    email = f"u-{uuid.uuid4().hex[:10]}@example.com"
    fields = {"email": email, "password": PASSWORD, "password_again": PASSWORD, "invite": invite}
    response = client.post("/console/signup", data=fields)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/console/keys?welcome=1"
    cookie = session_cookie(response)
    page = client.get("/console/keys?welcome=1", headers={"Cookie": f"tg_session={cookie}"})
    assert page.status_code == 200
    assert "Create your first key below" in page.text and "Welcome" in page.text
    return Person(client, email, cookie, csrf_of(page.text))


def chat(gw: Gateway, key: str, model: str = "mock-gpt") -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}
    return httpx.post(f"{gw.v1}/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def wait_refused(gw: Gateway, key: str) -> None:
    deadline = time.monotonic() + 5
    while chat(gw, key).status_code != 401:
        assert time.monotonic() < deadline, "the key still works 5 s after it was revoked"
        time.sleep(0.05)


def flash_error(response: httpx.Response) -> str:
    found = re.search(r'<div class="flash error" role="alert">([^<]*)</div>', response.text)
    assert found, response.text
    return html.unescape(found.group(1))


def test_pages_need_a_login(client: httpx.Client) -> None:
    for path in (*GET_PAGES, "/console/usage?days=7&measure=cost", "/console/tenants/ten_nope"):
        response = client.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"] == f"/console/login?next={quote(path, safe='')}", path
    chart = client.get("/console/usage/chart.json?by=day")
    assert chart.status_code == 401 and chart.json()["error"]["code"] == "not_authenticated"
    for path in ("/console/keys", "/console/keys/key_x/revoke", "/console/tenants/t/invites"):
        response = client.post(path, data={"csrf_token": "x", "name": "k"})
        assert response.status_code == 303 and response.headers["location"].startswith("/console/login?next="), path
    assert client.post("/console/playground/key").status_code == 401


def test_forms_refuse_a_missing_or_wrong_csrf_token(client: httpx.Client, gw: Gateway) -> None:
    owner = sign_up(client)
    tenant = owner.tenant_id()
    _, secret = owner.create_key(name="kept")
    key_id = owner.api("GET", "/me/keys").json()["data"][0]["id"]
    forms = {
        "/console/keys": {"name": "sneaky"},
        f"/console/keys/{key_id}/revoke": {},
        f"/console/keys/{key_id}/rotate": {},
        f"/console/tenants/{tenant}/invites": {"email": "", "role": "member"},
        f"/console/tenants/{tenant}/members/{owner.api('GET', '/me').json()['user']['id']}/role": {"role": "admin"},
        f"/console/tenants/{tenant}/keys/{key_id}/revoke": {},
    }
    for path, data in forms.items():
        for token in (None, "0" * 64, ""):
            response = owner.post(path, data, csrf=token)
            assert response.status_code == 403, (path, token, response.status_code)
            assert "text/html" in response.headers["content-type"]
            assert "CSRF" in html.unescape(response.text), path
            assert response.headers["content-security-policy"] == CSP
    # Nothing happened: one key, still working, no other key; the owner is still the owner.
    keys = owner.api("GET", "/me/keys").json()["data"]
    assert [(k["name"], k["revoked"]) for k in keys] == [("kept", False)]
    assert chat(gw, secret).status_code == 200
    assert owner.api("GET", "/me").json()["memberships"][0]["role"] == "owner"
    playground = client.post("/console/playground/key", headers={"Cookie": f"tg_session={owner.cookie}"})
    assert playground.status_code == 403 and playground.json()["error"]["code"] == "csrf_failed"


def test_security_headers_on_every_page(client: httpx.Client) -> None:
    person = sign_up(client)
    tenant = person.tenant_id()
    created, _ = person.create_key()
    pages = [
        *(person.get(path) for path in GET_PAGES),
        person.get(f"/console/tenants/{tenant}"),
        person.get("/console/tenants/ten_unknown"),  # the error page
        person.get("/console/usage/chart.json?by=day"),
        person.get("/console/usage/chart.json?by=nope"),
        created,
        person.post("/console/keys", {"name": ""}),  # a refused form
    ]
    for response in pages:
        where = f"{response.request.method} {response.request.url.path} -> {response.status_code}"
        assert response.headers["content-security-policy"] == CSP, where
        assert response.headers["x-frame-options"] == "DENY", where
        assert response.headers["x-content-type-options"] == "nosniff", where
        assert response.headers["cache-control"] == "no-store", where
        if "text/html" in response.headers["content-type"]:
            body = response.text
            assert " style=" not in body and "javascript:" not in body.lower(), where
            assert not re.search(r"<script(?![^>]*\bsrc=)", body), where  # no inline script
            assert not re.search(r"\son[a-z]+=", body), where  # no inline handler


def test_key_names_are_escaped(client: httpx.Client) -> None:
    person = sign_up(client)
    created, _ = person.create_key(name="<script>alert(1)</script>")
    listed = person.get("/console/keys")
    for response in (created, listed):
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in response.text
        assert "<script>alert(1)" not in response.text


def test_the_secret_is_shown_once(client: httpx.Client, gw: Gateway) -> None:
    person = sign_up(client)
    created, secret = person.create_key(name="once", models=["mock-gpt"], rpm="30")
    assert created.headers["cache-control"] == "no-store"
    assert secret.startswith("tg-")
    assert 'data-copy-target="#new-secret">Copy key</button>' in created.text
    for snippet in ("snippet-curl", "snippet-python", "snippet-node"):
        assert f'id="{snippet}"' in created.text
    assert f"{gw.url}/v1" in created.text and "mock-gpt" in created.text
    assert chat(gw, secret).status_code == 200
    listed = person.get("/console/keys")
    assert "once" in listed.text and "30 req/min" in listed.text
    public, _, private = secret.rpartition("-")
    assert public + "-…" in listed.text  # the prefix only
    for page in (listed, person.get("/console/usage"), person.api("GET", "/me/keys")):
        assert secret not in page.text and private not in page.text


def snippet_of(response: httpx.Response, name: str) -> str:
    found = re.search(rf'<code id="snippet-{name}">([^<]+)</code>', response.text)
    assert found, response.text
    return html.unescape(found.group(1))


def test_the_snippets_run(client: httpx.Client, gw: Gateway) -> None:
    """The Python and curl examples on the key's page work as pasted (the Node one needs Node: only its text)."""
    person = sign_up(client)
    created, secret = person.create_key(models=["mock-gpt"])
    python = subprocess.run(
        [sys.executable, "-c", snippet_of(created, "python")], capture_output=True, text=True, timeout=60
    )
    assert python.returncode == 0, python.stderr
    assert python.stdout.strip()  # the mock's reply
    if shutil.which("curl"):
        curl = subprocess.run(["bash", "-c", snippet_of(created, "curl")], capture_output=True, text=True, timeout=60)
        assert curl.returncode == 0, curl.stderr
        assert '"chat.completion"' in curl.stdout
    node = snippet_of(created, "node")
    assert f'baseURL: "{gw.v1}"' in node and f'apiKey: "{secret}"' in node and 'model: "mock-gpt"' in node


def test_create_errors_keep_the_form(client: httpx.Client) -> None:
    person = sign_up(client)
    typed = {"name": "my <app>", "rpm": "20", "tpm": "500", "budget_usd": "1.5", "budget_period": "weekly"}
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"models": ["mock-gpt", "no-such-model"]}, 400, "Unknown model(s): no-such-model."),
        ({"rpm": "100000"}, 400, "rpm 100000 is above your tenant's 60"),  # the personal tenant allows 60 rpm
        ({"expires_on": "2001-01-01"}, 400, "The expiry date has passed"),
        ({"expires_on": "next week"}, 400, "The expiry must be a date"),
        ({"max_concurrency": "-3"}, 400, "Max concurrent requests must be a whole number"),
        ({"budget_usd": "lots"}, 400, "The budget must be an amount in USD"),
        ({"name": ""}, 400, "Give the key a name"),
        ({"tenant_id": "ten_not_mine"}, 404, "No tenant with id"),
    ]
    for change, status, message in cases:
        response = person.post("/console/keys", {**typed, "models": ["mock-small"], **change})
        assert response.status_code == status, (change, response.status_code)
        assert message in flash_error(response), change
        page = response.text
        if change.get("name") != "":
            assert 'value="my &lt;app&gt;"' in page
        assert 'value="mock-small" checked' in page or "no-such-model" in str(change)
        assert '<option value="weekly" selected>' in page
        budget = change.get("budget_usd", "1.5")
        assert re.search(rf'<input id="key-budget" name="budget_usd" [^>]*value="{budget}">', page), change
    assert person.api("GET", "/me/keys").json()["data"] == []
    for _ in range(MAX_KEYS):
        person.create_key()
    over = person.post("/console/keys", {"name": "one too many"})
    assert over.status_code == 429
    assert f"You already hold {MAX_KEYS} active keys" in flash_error(over)
    assert 'value="one too many"' in over.text


def test_rotate_and_revoke(client: httpx.Client, gw: Gateway) -> None:
    person = sign_up(client)
    _, old_secret = person.create_key(name="rotating")
    key_id = person.api("GET", "/me/keys").json()["data"][0]["id"]
    rotated = person.post(f"/console/keys/{key_id}/rotate")
    assert rotated.status_code == 201 and rotated.headers["cache-control"] == "no-store"
    assert "Key rotated" in rotated.text and "The old secret no longer works" in rotated.text
    new_secret = secret_of(rotated)
    assert new_secret != old_secret
    wait_refused(gw, old_secret)
    assert chat(gw, new_secret).status_code == 200

    new_id = next(k["id"] for k in person.api("GET", "/me/keys").json()["data"] if not k["revoked"])
    revoked = person.post(f"/console/keys/{new_id}/revoke")
    assert revoked.status_code == 303 and revoked.headers["location"] == "/console/keys?done=revoked"
    page = person.get(revoked.headers["location"])
    assert "Key revoked." in page.text
    assert page.text.count('<span class="badge bad">revoked</span>') == 2
    assert f"/console/keys/{new_id}/revoke" not in page.text  # no action left on a revoked key
    wait_refused(gw, new_secret)

    stranger = sign_up(client)
    _, stranger_secret = stranger.create_key()
    stranger_key = stranger.api("GET", "/me/keys").json()["data"][0]["id"]
    for action in ("revoke", "rotate"):
        response = person.post(f"/console/keys/{stranger_key}/{action}")
        assert response.status_code == 404 and "No key with id" in html.unescape(response.text)
    assert chat(gw, stranger_secret).status_code == 200


def test_usage_shows_only_ones_own(client: httpx.Client, gw: Gateway) -> None:
    alice, bob = sign_up(client), sign_up(client)
    _, alice_key = alice.create_key(name="alice-key")
    _, bob_key = bob.create_key(name="bob-key")
    for _ in range(2):
        assert chat(gw, alice_key, "mock-gpt").status_code == 200
    assert chat(gw, bob_key, "mock-small").status_code == 200

    spec = alice.get("/console/usage/chart.json?by=model&measure=requests").json()
    assert spec["type"] == "bar" and spec["labels"] == ["mock-gpt"]
    assert spec["datasets"] == [{"label": "Requests", "data": [2]}]
    tokens = alice.get("/console/usage/chart.json?by=model&measure=tokens").json()
    assert [d["label"] for d in tokens["datasets"]] == ["Prompt tokens", "Completion tokens"]
    assert tokens["y_label"] == "Tokens"
    by_day = alice.get("/console/usage/chart.json?by=day&days=7").json()
    assert len(by_day["labels"]) == 7 and sum(by_day["datasets"][0]["data"]) == 2
    everything = alice.get("/console/usage/chart.json?by=day").json()  # no measure: all three series
    assert [d["label"] for d in everything["datasets"]] == ["Requests", "Tokens", "Cost (USD)"]
    assert bob.get("/console/usage/chart.json?by=model").json()["labels"] == ["mock-small"]

    page = alice.get("/console/usage")
    assert page.status_code == 200
    assert page.text.count("<td>alice-key</td>") == 2
    assert "mock-small" not in page.text.split('id="recent"')[1] and "bob-key" not in page.text
    assert '<span class="stat-value">2</span>' in page.text
    assert 'data-chart="/console/usage/chart.json?by=day&amp;measure=requests&amp;days=30"' in page.text

    bob_tenant = bob.tenant_id()
    assert alice.get(f"/console/usage/chart.json?by=day&tenant_id={bob_tenant}").status_code == 404
    assert alice.get(f"/console/usage?tenant_id={bob_tenant}").status_code == 404
    for query in ("", "by=week", "by=day&measure=joules", "by=day&days=3", "by=day&tenant_id=%00"):
        response = alice.get(f"/console/usage/chart.json?{query}")
        assert response.status_code == 400, query
        assert response.json()["error"]["message"]


def test_team_pages(client: httpx.Client, gw: Gateway) -> None:
    owner = sign_up(client)
    tenant = owner.tenant_id()
    team = owner.get(f"/console/tenants/{tenant}")
    assert team.status_code == 200 and "Members" in team.text and "Invite someone" in team.text
    invite = owner.post(f"/console/tenants/{tenant}/invites", {"email": "", "role": "member"})
    assert invite.status_code == 201 and 'data-copy-target="#invite-url">Copy invite link' in invite.text
    url = re.search(r'<code class="secret" id="invite-url">([^<]+)</code>', invite.text)
    assert url and url.group(1).startswith(f"{gw.url}/console/signup?invite=")
    member = sign_up(client, invite=url.group(1).rsplit("=", 1)[1])
    member_id = member.api("GET", "/me").json()["user"]["id"]
    assert [m["tenant_id"] for m in member.api("GET", "/me").json()["memberships"]] == [tenant]
    _, member_secret = member.create_key(name="member-key")

    # A member sees a short page; a stranger gets 404 on the team and on every action.
    short = member.get(f"/console/tenants/{tenant}")
    assert short.status_code == 200 and "member" in short.text and "Invite someone" not in short.text
    stranger = sign_up(client)
    assert stranger.get(f"/console/tenants/{tenant}").status_code == 404
    denied = stranger.post(f"/console/tenants/{tenant}/invites", {"role": "member"})
    assert denied.status_code == 404
    assert member.post(f"/console/tenants/{tenant}/invites", {"role": "member"}).status_code == 403

    # The owner sees the member and the member's key, makes them admin; an admin cannot make owners.
    team = owner.get(f"/console/tenants/{tenant}")
    assert member.email in team.text and "member-key" in team.text
    role = owner.post(f"/console/tenants/{tenant}/members/{member_id}/role", {"role": "admin"})
    assert role.status_code == 303 and role.headers["location"] == f"/console/tenants/{tenant}?done=role"
    assert "Role changed." in owner.get(role.headers["location"]).text
    as_admin = member.get(f"/console/tenants/{tenant}")
    assert "Invite someone" in as_admin.text and '<option value="owner"' not in as_admin.text
    refused = member.post(f"/console/tenants/{tenant}/invites", {"role": "owner"})
    assert refused.status_code == 403 and "Only owners invite owners." in flash_error(refused)
    made_owner = member.post(f"/console/tenants/{tenant}/members/{member_id}/role", {"role": "owner"})
    assert made_owner.status_code == 403 and "Only owners grant or take ownership." in flash_error(made_owner)

    # The whole team's usage, for a manager; the member's key revoked by the owner from the team page.
    assert chat(gw, member_secret).status_code == 200
    usage = owner.get(f"/console/usage?tenant_id={tenant}")
    assert usage.status_code == 200 and "<td>member-key</td>" in usage.text
    chart = owner.get(f"/console/usage/chart.json?by=model&tenant_id={tenant}").json()
    assert chart["datasets"][0]["data"] == [1]
    member_key = member.api("GET", "/me/keys").json()["data"][0]["id"]
    stranger.create_key()
    other_tenant_key = stranger.api("GET", "/me/keys").json()["data"][0]["id"]
    assert owner.post(f"/console/tenants/{tenant}/keys/{other_tenant_key}/revoke").status_code == 404
    revoked = owner.post(f"/console/tenants/{tenant}/keys/{member_key}/revoke")
    assert revoked.status_code == 303 and revoked.headers["location"].endswith("?done=key-revoked")
    wait_refused(gw, member_secret)

    # Removing the member; the last owner cannot be removed.
    last = owner.post(f"/console/tenants/{tenant}/members/{owner.api('GET', '/me').json()['user']['id']}/remove")
    assert last.status_code == 409 and "at least one owner" in flash_error(last)
    removed = owner.post(f"/console/tenants/{tenant}/members/{member_id}/remove")
    assert removed.status_code == 303
    assert member.email not in owner.get(f"/console/tenants/{tenant}").text
    assert member.get(f"/console/tenants/{tenant}").status_code == 404
    assert "You belong to no team yet" in member.get("/console/tenants").text


def test_playground_key(client: httpx.Client, gw: Gateway) -> None:
    person = sign_up(client)
    page = person.get("/console/playground")
    assert page.status_code == 200
    assert re.search(r'<script src="/console/static/[0-9a-f]+/playground\.js" defer></script>', page.text)
    assert '<label for="pg-message">Message</label>' in page.text
    first = person.api("POST", "/console/playground/key")
    assert first.status_code == 201 and first.headers["cache-control"] == "no-store"
    body = first.json()
    assert set(body) >= {"key", "expires_at"} and body["name"] == "Playground (console)"
    hours = (datetime.fromisoformat(body["expires_at"]) - datetime.now(UTC)).total_seconds() / 3600
    assert 11.9 < hours <= 12.0
    assert chat(gw, body["key"]).status_code == 200
    second = person.api("POST", "/console/playground/key").json()
    wait_refused(gw, body["key"])  # the earlier one is revoked: playground keys never pile up
    assert chat(gw, second["key"]).status_code == 200
    active = [k for k in person.api("GET", "/me/keys").json()["data"] if not k["revoked"]]
    assert [k["name"] for k in active] == ["Playground (console)"]
