"""Bad input to the people API gets a 4xx JSON error naming the problem, never a 5xx, and changes nothing."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.integration.people.helpers import (
    PASSWORD,
    Person,
    admin,
    call,
    error_of,
    signup,
    try_signup,
    unique_email,
)
from tests.support import ADMIN_KEY, Gateway

LONG_PASSWORD = "p" * 1025


def assert_4xx(response: httpx.Response) -> dict[str, Any]:
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    return error_of(response, response.status_code)


@pytest.fixture(scope="module")
def person(open_gw: Gateway) -> Person:
    return signup(open_gw)


def users_count(gw: Gateway) -> int:
    return len(admin(gw, "GET", "/admin/users").json()["data"])


def raw_post(gw: Gateway, path: str, content: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return call(gw, "POST", path, content=content, headers={"content-type": "application/json", **(headers or {})})


@pytest.mark.parametrize(
    "email",
    [
        "",
        "   ",
        "no-at-sign",
        "two@@example.com",
        "a b@example.com",
        "user@exa mple.com",
        "user@localhost",
        "user@-example.com",
        "nul\x00@example.com",
        "tab\t@example.com",
        "c1\x9b@example.com",
        "bidi\u202e@example.com",
        "zwsp\u2028@example.com",
        "x" * 65 + "@example.com",
        "a@" + "b" * 300 + ".com",
    ],
)
def test_invalid_emails_are_refused_at_sign_up(open_gw: Gateway, email: str) -> None:
    error = assert_4xx(try_signup(open_gw, email))
    assert error["param"] == "email", error


def long_email(length: int) -> str:
    local = unique_email("x").split("@")[0].ljust(64, "x")
    domain = ".example.org"
    return f"{local}@{'d' * (length - len(local) - 1 - len(domain))}{domain}"


def test_the_longest_email_fits_everything_it_names(open_gw: Gateway) -> None:
    """An address names the personal tenant and, as ``user:<email>``, audit entries and invites: 200-character
    columns. The longest accepted address fits them all; a longer one is refused up front."""
    error_of(try_signup(open_gw, long_email(196)), 400, "invalid_email")
    email = long_email(195)
    taken = admin(open_gw, "POST", "/admin/tenants", json={"name": email})  # its tenant needs another name
    assert taken.status_code == 201, taken.text
    person = signup(open_gw, email)
    assert len(person.email) == 195
    [membership] = person.me()["memberships"]
    name = membership["tenant_name"]
    assert len(name) <= 200 and name != email and name.endswith(")"), name
    twin = signup(open_gw, long_email(195))
    assert twin.me()["memberships"][0]["tenant_name"] == twin.email
    invite = person.post(f"/me/tenants/{membership['tenant_id']}/invites", json={"role": "member"})
    assert invite.status_code == 201, invite.text
    actor = f"user:{email}"
    assert len(actor) <= 200
    entries = admin(open_gw, "GET", "/admin/audit", params={"actor": actor}).json()["data"]
    assert {"user.signup", "invite.create"} <= {entry["action"] for entry in entries}
    invites = {row["id"]: row for row in admin(open_gw, "GET", "/admin/invites").json()["data"]}
    assert invites[invite.json()["id"]]["created_by"] == actor


def test_bad_sign_up_bodies(open_gw: Gateway) -> None:
    before = users_count(open_gw)
    email = unique_email("bad")
    for body in (
        {"email": email, "password": LONG_PASSWORD},
        {"email": email, "password": "short"},
        {"email": email, "password": " " * 12},
        {"email": email, "password": ""},
        {"email": email, "password": PASSWORD, "name": "nul\x00name"},
        {"email": email, "password": PASSWORD, "name": "line\nbreak"},
        {"email": email, "password": PASSWORD, "name": "n" * 201},
        {"email": email, "password": PASSWORD, "name": "   "},
        {"email": email, "password": PASSWORD, "is_admin": True},
        {"email": email, "password": PASSWORD, "invite": "i" * 129},
        {"email": email, "password": PASSWORD, "invite": ""},
        {"email": 42, "password": PASSWORD},
        {"email": email, "password": None},
        {"email": email, "password": ["list"]},
        {"email": [email], "password": PASSWORD},
        {"email": email, "password": PASSWORD, "name": 7},
        {"email": email},
        {},
    ):
        assert_4xx(call(open_gw, "POST", "/auth/signup", json=body))
    for content in (b"", b"not json", b"[]", b'"a string"', b"null", b'{"email": "x@example.com",', b"\xff\xfe"):
        assert_4xx(raw_post(open_gw, "/auth/signup", content))
    surrogate = b'{"email": "\\ud800@example.com", "password": "' + PASSWORD.encode() + b'"}'
    assert_4xx(raw_post(open_gw, "/auth/signup", surrogate))
    assert users_count(open_gw) == before


def test_overlong_and_odd_logins(open_gw: Gateway, person: Person) -> None:
    weird = (
        {"email": person.email, "password": LONG_PASSWORD},
        {"email": "e" * 300 + "@example.com", "password": PASSWORD},
        {"email": person.email, "password": ""},
        {"email": person.email, "password": PASSWORD, "remember": True},
        {"email": person.email},
        {"email": None, "password": PASSWORD},
        {"email": person.email, "password": 12345678901},
    )
    for body in weird:
        assert_4xx(call(open_gw, "POST", "/auth/login", json=body))
    assert_4xx(raw_post(open_gw, "/auth/login", b'{"email": "a@b.c", "password": "\\ud800\\udfff\\ud800xxxxxxx"}'))
    error_of(call(open_gw, "POST", "/auth/login", json={"email": "nul\x00@example.com", "password": "x" * 12}), 401)


def test_bad_password_change_reset_and_link_bodies(open_gw: Gateway, person: Person) -> None:
    body: dict[str, Any]
    for body in (
        {"current_password": PASSWORD, "new_password": LONG_PASSWORD},
        {"current_password": LONG_PASSWORD, "new_password": PASSWORD},
        {"current_password": PASSWORD},
        {"current_password": PASSWORD, "new_password": 5},
        {"current_password": PASSWORD, "new_password": PASSWORD + "x", "extra": 1},
    ):
        assert_4xx(person.post("/auth/password", json=body))
    for body in (
        {"token": "t" * 129, "new_password": PASSWORD},
        {"token": "", "new_password": PASSWORD},
        {"token": "abc", "new_password": LONG_PASSWORD},
        {"token": None, "new_password": PASSWORD},
        {"token": "abc\x00", "new_password": PASSWORD},
    ):
        assert_4xx(call(open_gw, "POST", "/auth/reset", json=body))
    for body in ({"token": "t" * 129}, {"token": 1}, {}, {"token": "abc", "more": 1}):
        assert_4xx(call(open_gw, "POST", "/auth/link", json=body))
        assert_4xx(person.post("/me/invites/accept", json=body))
    assert person.get("/me").status_code == 200  # still logged in with the same password


def test_bad_key_requests(open_gw: Gateway, person: Person) -> None:
    for body in (
        {"name": "nul\x00"},
        {"name": "n" * 201},
        {"name": "bidi\u202ename"},
        {"rpm": "fast"},
        {"rpm": 0},
        {"rpm": -1},
        {"rpm": 2**40},
        {"rpm": 1.5},
        {"budget_usd": -1},
        {"budget_usd": 1e300},
        {"budget_period": "hourly"},
        {"models": "mock-gpt"},
        {"models": [1, 2]},
        {"models": ["nul\x00"]},
        {"tenant_id": "ten\x00"},
        {"tenant_id": "t" * 201},
        {"tenant_id": 5},
        {"expires_at": "2030-01-01T00:00:00"},
        {"expires_at": "not a date"},
        {"expires_at": "9999-12-31T23:59:59Z"},
        {"user_id": person.id},
        {"key": "tg-chosen-secret"},
    ):
        assert_4xx(person.post("/me/keys", json=body))
    for content in (b"NaN", b'{"rpm": NaN}', b'{"budget_usd": Infinity}', b'{"budget_usd": 1e999}', b"[1]"):
        assert_4xx(person.post("/me/keys", content=content, headers={"content-type": "application/json"}))
    assert person.get("/me/keys").json()["data"] == []


def test_bad_role_and_invite_bodies(open_gw: Gateway, person: Person) -> None:
    body: dict[str, Any]
    tenant = person.personal_tenant()
    for body in ({"role": "superuser"}, {"role": None}, {"role": 1}, {}, {"role": "member", "tenant_id": tenant}):
        assert_4xx(person.patch(f"/me/tenants/{tenant}/members/{person.id}", json=body))
    for body in (
        {"role": "god"},
        {"email": "not-an-email"},
        {"email": "x" * 300 + "@example.com"},
        {"expires_in_hours": 0},
        {"expires_in_hours": -1},
        {"expires_in_hours": 1e9},
        {"expires_in_hours": "soon"},
        {"tenant_id": tenant},
    ):
        assert_4xx(person.post(f"/me/tenants/{tenant}/invites", json=body))
    bidi = unique_email("bidi\u202e")
    for body in ({"email": bidi}, {"role": "member", "tenant_id": "ten\x00"}, {"email": ""}):
        assert_4xx(admin(open_gw, "POST", "/admin/invites", json=body))
    assert {m["role"] for m in person.me()["memberships"]} == {"owner"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/me/keys/{bad}"),
        ("POST", "/me/keys/{bad}/rotate"),
        ("GET", "/me/tenants/{bad}/members"),
        ("GET", "/me/tenants/{bad}/keys"),
        ("POST", "/me/tenants/{bad}/invites"),
        ("PATCH", "/me/tenants/{tenant}/members/{bad}"),
        ("DELETE", "/me/tenants/{tenant}/members/{bad}"),
        ("PATCH", "/me/tenants/{bad}/members/{bad}"),
    ],
)
@pytest.mark.parametrize(
    "bad", ["%00", "x%0Ay", "k" * 201, "%FF", "%ED%A0%80", "..%2F..%2Fadmin", "%E2%80%AE", "'%20OR%201=1"]
)
def test_bad_ids_in_me_paths(open_gw: Gateway, person: Person, method: str, path: str, bad: str) -> None:
    url = path.format(bad=bad, tenant=person.personal_tenant())
    body = {"role": "member"} if method in ("PATCH", "POST") else None
    assert_4xx(person.request(method, url, json=body))


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/admin/users/{bad}"),
        ("PATCH", "/admin/users/{bad}"),
        ("DELETE", "/admin/users/{bad}"),
        ("POST", "/admin/users/{bad}/reset-link"),
        ("POST", "/admin/users/{bad}/login-link"),
        ("DELETE", "/admin/users/{bad}/sessions"),
        ("PUT", "/admin/users/{user}/memberships/{bad}"),
        ("DELETE", "/admin/users/{user}/memberships/{bad}"),
        ("DELETE", "/admin/invites/{bad}"),
    ],
)
@pytest.mark.parametrize("bad", ["%00", "x%0Ay", "k" * 201, "%FF", "%ED%A0%80", "%E2%80%AE"])
def test_bad_ids_in_admin_paths(open_gw: Gateway, person: Person, method: str, path: str, bad: str) -> None:
    url = path.format(bad=bad, user=person.id)
    body = {"role": "member"} if method == "PUT" else ({"name": "x"} if method == "PATCH" else None)
    assert_4xx(call(open_gw, method, url, json=body, headers={"Authorization": f"Bearer {ADMIN_KEY}"}))


def test_bad_admin_user_bodies(open_gw: Gateway, person: Person) -> None:
    body: dict[str, Any]
    before = users_count(open_gw)
    for body in (
        {"email": "not-an-email"},
        {"email": unique_email("bidi\u202e")},
        {"email": unique_email("c1\x85")},
        {"email": unique_email(), "password": LONG_PASSWORD},
        {"email": unique_email(), "password": "short"},
        {"email": unique_email(), "is_admin": "maybe"},
        {"email": unique_email(), "role": "god", "tenant_id": person.personal_tenant()},
        {"email": unique_email(), "tenant_id": "ten\x00"},
        {"email": unique_email(), "name": "nul\x00"},
        {"email": unique_email(), "rpm": -5},
        {"email": unique_email(), "password_hash": "$argon2id$v=19$m=1,t=1,p=1$x$y"},
    ):
        assert_4xx(admin(open_gw, "POST", "/admin/users", json=body))
    assert users_count(open_gw) == before
    for body in (
        {"email": "nope"},
        {"email": None},
        {"is_admin": None},
        {"is_admin": "maybe"},
        {"disabled": "perhaps"},
        {"name": "\x00"},
        {"rpm": 0},
        {"id": "usr_other"},
        {"password": PASSWORD},
    ):
        assert_4xx(admin(open_gw, "PATCH", f"/admin/users/{person.id}", json=body))
    assert person.me()["user"]["email"] == person.email and person.me()["user"]["is_admin"] is False


@pytest.mark.parametrize(
    "query",
    [
        {"since": "garbage"},
        {"until": "9999-12-31T23:00:00Z"},
        {"since": "0001-01-01T00:00:00+05:00"},
        {"group_by": "model,nonsense"},
        {"group_by": "model,model"},
        {"group_by": "\x00"},
        {"top": "0"},
        {"top": "many"},
        {"format": "xml"},
        {"tenant_id": "\x00"},
        {"tenant_id": "t" * 201},
        {"key_id": "k" * 201},
        {"key_id": "key_missing"},
        {"tenant_id": "ten_missing"},
        {"model": "m\x00"},
    ],
)
def test_bad_usage_queries(person: Person, query: dict[str, str]) -> None:
    assert_4xx(person.get("/me/usage", params=query))
    if set(query) & {"since", "until", "tenant_id", "key_id", "model"}:
        assert_4xx(person.get("/me/usage/records", params=query))


def test_bad_usage_record_limits(person: Person) -> None:
    for limit in ("0", "-1", "1001", "lots"):
        assert_4xx(person.get("/me/usage/records", params={"limit": limit}))


def test_bad_credentials_headers(open_gw: Gateway, person: Person) -> None:
    for headers in (
        {"Cookie": "tg_session=" + "x" * 500},
        {"Cookie": "tg_session="},
        {"Cookie": "tg_session=%00"},
        {"Authorization": "Bearer tg-notakey"},
        {"Authorization": "Bearer tg-aaaaaaaaaaaa-" + "b" * 43},
        {"Authorization": "Bearer " + "tg-" + "x" * 5000},
        {"Authorization": "Basic Zm9vOmJhcg=="},
        {"X-API-Key": "tg-aaaaaaaaaaaa-" + "b" * 43},
    ):
        error_of(call(open_gw, "GET", "/me", headers=headers), 401)
    latin = call(open_gw, "GET", "/me", headers={"Cookie": b"tg_session=\xe9\xff"})  # type: ignore[dict-item]
    error_of(latin, 401)
    forged = person.post("/me/keys", json={}, headers={"X-CSRF-Token": b"\xe9" * 64})  # type: ignore[dict-item]
    error_of(forged, 403, "csrf_failed")


def test_a_tenant_key_is_not_a_person(open_gw: Gateway) -> None:
    tenant = admin(open_gw, "POST", "/admin/tenants", json={"name": unique_email("plain")}).json()
    key = admin(open_gw, "POST", "/admin/keys", json={"tenant_id": tenant["id"]}).json()["key"]
    error_of(call(open_gw, "GET", "/me", headers={"Authorization": f"Bearer {key}"}), 401, "not_a_user_key")
