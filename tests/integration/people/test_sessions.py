"""Sessions: the cookie's flags, CSRF on cookie writes, logout, password change and reset, login links,
disabled users."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.people.helpers import (
    PASSWORD,
    StartGateway,
    admin,
    call,
    chat,
    cookie_attributes,
    error_of,
    login,
    poll,
    session_cookie,
    set_cookie_value,
    signup,
    stop_soon,
    try_login,
    unique_email,
    wait_key_refused,
    with_key,
)
from tests.support import Gateway

NEW_PASSWORD = "a-brand-new-passphrase"


@pytest.fixture(scope="module")
def secure_gw(start_people_gateway: StartGateway) -> Iterator[Gateway]:
    gw = start_people_gateway(TENANTGATE_SIGNUP="open", TENANTGATE_COOKIE_SECURE="always")
    yield gw
    stop_soon(gw)


def assert_lax_http_only_cookie(attributes: dict[str, str]) -> None:
    assert "httponly" in attributes, attributes
    assert attributes.get("samesite", "").lower() == "lax", attributes
    assert attributes.get("path") == "/", attributes
    assert int(attributes["max-age"]) > 3600, attributes


def test_cookie_flags_over_plain_http(open_gw: Gateway) -> None:
    email = unique_email("flags")
    signed_up = call(open_gw, "POST", "/auth/signup", json={"email": email, "password": PASSWORD})
    logged_in = call(open_gw, "POST", "/auth/login", json={"email": email, "password": PASSWORD})
    for response in (signed_up, logged_in):
        attributes = cookie_attributes(response)
        assert_lax_http_only_cookie(attributes)
        assert "secure" not in attributes, attributes
        assert response.headers["cache-control"] == "no-store"
    assert session_cookie(signed_up) != session_cookie(logged_in)
    assert signed_up.json()["csrf_token"] != logged_in.json()["csrf_token"]


def test_cookie_is_secure_when_configured(secure_gw: Gateway) -> None:
    person = signup(secure_gw)
    for response in (
        call(secure_gw, "POST", "/auth/signup", json={"email": unique_email("sec"), "password": PASSWORD}),
        try_login(secure_gw, person.email),
    ):
        attributes = cookie_attributes(response)
        assert_lax_http_only_cookie(attributes)
        assert "secure" in attributes, attributes


def test_csrf_is_required_on_cookie_writes(open_gw: Gateway) -> None:
    person = signup(open_gw)
    other = signup(open_gw)
    error_of(person.post("/me/keys", json={}, csrf=False), 403, "csrf_failed")
    error_of(person.post("/me/keys", json={}, csrf="0" * 64), 403, "csrf_failed")
    error_of(person.post("/me/keys", json={}, csrf=other.csrf), 403, "csrf_failed")  # another session's token
    error_of(person.post("/me/keys", json={}, csrf=person.csrf + "0"), 403, "csrf_failed")
    error_of(person.post("/me/keys", json={}, csrf=person.csrf * 3), 403, "csrf_failed")
    assert person.get("/me/keys").json()["data"] == []  # none of those made a key
    assert person.me()["csrf_token"] == person.csrf  # GETs need no token; /me hands it out
    key = person.new_key(name="with-csrf")
    error_of(person.delete(f"/me/keys/{key['id']}", csrf=False), 403, "csrf_failed")
    error_of(person.post(f"/me/keys/{key['id']}/rotate", csrf=False), 403, "csrf_failed")
    error_of(person.delete("/me/sessions", csrf=False), 403, "csrf_failed")
    error_of(
        person.post("/auth/password", json={"current_password": PASSWORD, "new_password": NEW_PASSWORD}, csrf=False),
        403,
        "csrf_failed",
    )
    assert chat(open_gw, key["key"]).status_code == 200  # not revoked, not rotated
    assert person.me()["user"]["id"] == person.id  # the session survived, the password is unchanged
    login(open_gw, person.email)
    # a personal key needs no CSRF token, and a cookie is not needed either
    made = with_key(open_gw, key["key"], "POST", "/me/keys", json={"name": "by-key"})
    assert made.status_code == 201, made.text
    assert with_key(open_gw, key["key"], "DELETE", f"/me/keys/{made.json()['id']}").status_code == 200


def test_logout_ends_the_session(open_gw: Gateway) -> None:
    person = signup(open_gw)
    elsewhere = login(open_gw, person.email)
    error_of(person.post("/auth/logout", csrf=False), 403, "csrf_failed")
    assert person.get("/me").status_code == 200  # a forged logout did nothing
    out = person.post("/auth/logout")
    assert out.status_code == 200 and out.json() == {"logged_out": True}
    cleared = cookie_attributes(out)
    assert cleared.get("max-age") == "0" or "expires" in cleared, cleared
    assert set_cookie_value(out) in ("", '""')
    error_of(person.get("/me"), 401, "not_authenticated")  # the old cookie replayed
    error_of(person.post("/me/keys", json={}), 401, "not_authenticated")
    assert elsewhere.get("/me").status_code == 200  # only this session ended
    assert call(open_gw, "POST", "/auth/logout").status_code == 200  # without a session: nothing to do


def test_password_change_revokes_every_session_and_sets_a_new_cookie(open_gw: Gateway) -> None:
    person = signup(open_gw)
    other = login(open_gw, person.email)
    wrong = person.post("/auth/password", json={"current_password": "not-my-password", "new_password": NEW_PASSWORD})
    error_of(wrong, 400, "wrong_password")
    weak = person.post("/auth/password", json={"current_password": PASSWORD, "new_password": "short"})
    error_of(weak, 400, "weak_password")
    assert person.get("/me").status_code == 200 and other.get("/me").status_code == 200
    changed = person.post("/auth/password", json={"current_password": PASSWORD, "new_password": NEW_PASSWORD})
    assert changed.status_code == 200, changed.text
    assert_lax_http_only_cookie(cookie_attributes(changed))
    new_cookie, new_csrf = session_cookie(changed), changed.json()["csrf_token"]
    assert new_cookie != person.cookie and new_csrf != person.csrf
    error_of(person.get("/me"), 401, "not_authenticated")
    error_of(other.get("/me"), 401, "not_authenticated")
    assert person.get("/me", cookie=new_cookie).json()["user"]["id"] == person.id
    assert person.post("/me/keys", json={}, cookie=new_cookie, csrf=new_csrf).status_code == 201
    error_of(try_login(open_gw, person.email, PASSWORD), 401, "invalid_credentials")
    assert login(open_gw, person.email, NEW_PASSWORD).id == person.id


def test_admin_reset_link_sets_a_password_once_and_ends_sessions(open_gw: Gateway) -> None:
    person = signup(open_gw)
    link = admin(open_gw, "POST", f"/admin/users/{person.id}/reset-link")
    assert link.status_code == 201, link.text
    token = link.json()["token"]
    assert link.json()["url"].endswith(f"/console/reset?token={token}")
    weak = call(open_gw, "POST", "/auth/reset", json={"token": token, "new_password": "short"})
    error_of(weak, 400, "weak_password")
    assert person.get("/me").status_code == 200  # a refused reset neither used the link nor ended sessions
    done = call(open_gw, "POST", "/auth/reset", json={"token": token, "new_password": NEW_PASSWORD})
    assert done.status_code == 200 and done.json() == {"reset": True, "email": person.email}
    error_of(person.get("/me"), 401, "not_authenticated")
    again = call(open_gw, "POST", "/auth/reset", json={"token": token, "new_password": "yet-another-password"})
    error_of(again, 400, "invalid_token")
    error_of(try_login(open_gw, person.email, PASSWORD), 401, "invalid_credentials")
    error_of(try_login(open_gw, person.email, "yet-another-password"), 401, "invalid_credentials")
    assert login(open_gw, person.email, NEW_PASSWORD).id == person.id
    bogus = call(open_gw, "POST", "/auth/reset", json={"token": "x" * 43, "new_password": NEW_PASSWORD})
    error_of(bogus, 400, "invalid_token")


def test_login_link_works_once(open_gw: Gateway) -> None:
    person = signup(open_gw)
    link = admin(open_gw, "POST", f"/admin/users/{person.id}/login-link")
    assert link.status_code == 201, link.text
    token = link.json()["token"]
    assert link.json()["url"].endswith(f"/console/link?token={token}")
    used = call(open_gw, "POST", "/auth/link", json={"token": token})
    assert used.status_code == 200, used.text
    assert_lax_http_only_cookie(cookie_attributes(used))
    cookie = session_cookie(used)
    assert person.get("/me", cookie=cookie).json()["user"]["id"] == person.id
    error_of(call(open_gw, "POST", "/auth/link", json={"token": token}), 401, "invalid_token")
    error_of(call(open_gw, "POST", "/auth/link", json={"token": "y" * 43}), 401, "invalid_token")
    reset = admin(open_gw, "POST", f"/admin/users/{person.id}/reset-link").json()["token"]
    error_of(call(open_gw, "POST", "/auth/link", json={"token": reset}), 401, "invalid_token")  # not a login link


def test_unknown_email_and_wrong_password_get_the_same_answer(open_gw: Gateway) -> None:
    person = signup(open_gw)
    wrong_password = try_login(open_gw, person.email, "not-the-password")
    unknown_email = try_login(open_gw, unique_email("nobody"), "not-the-password")
    assert wrong_password.status_code == unknown_email.status_code == 401
    assert wrong_password.json() == unknown_email.json()
    assert wrong_password.json()["error"]["code"] == "invalid_credentials"
    assert "set-cookie" not in wrong_password.headers and "set-cookie" not in unknown_email.headers


def test_my_sessions_listed_and_ended_everywhere(open_gw: Gateway) -> None:
    person = signup(open_gw)
    other = login(open_gw, person.email)
    listed = person.get("/me/sessions").json()["data"]
    assert len(listed) == 2 and all(row["client"].startswith("127.0.0.1") for row in listed)
    assert person.delete("/me/sessions").json() == {"revoked": 2}
    error_of(person.get("/me"), 401, "not_authenticated")
    error_of(other.get("/me"), 401, "not_authenticated")
    third = login(open_gw, person.email)
    ended = admin(open_gw, "DELETE", f"/admin/users/{person.id}/sessions")
    assert ended.status_code == 200 and ended.json() == {"revoked": 1}
    error_of(third.get("/me"), 401, "not_authenticated")


def test_disabled_user_cannot_log_in_and_its_keys_stop(open_gw: Gateway) -> None:
    person = signup(open_gw)
    key = person.new_key()
    assert chat(open_gw, key["key"]).status_code == 200
    disabled = admin(open_gw, "PATCH", f"/admin/users/{person.id}", json={"disabled": True})
    assert disabled.status_code == 200 and disabled.json()["disabled"] is True
    error_of(try_login(open_gw, person.email), 401, "user_disabled")
    error_of(person.get("/me"), 401, "not_authenticated")  # its sessions ended
    refused = wait_key_refused(open_gw, key["key"])
    assert refused.json()["error"]["code"] == "user_disabled"
    error_of(with_key(open_gw, key["key"], "GET", "/me"), 401)
    enabled = admin(open_gw, "PATCH", f"/admin/users/{person.id}", json={"disabled": False})
    assert enabled.status_code == 200 and enabled.json()["disabled"] is False
    error_of(person.get("/me"), 401, "not_authenticated")  # disabling ended the sessions for good
    assert login(open_gw, person.email).id == person.id
    poll(lambda: chat(open_gw, key["key"]).status_code == 200, what="the key to work again")
