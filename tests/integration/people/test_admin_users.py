"""The admin API for people: users, their memberships and sessions, invites."""

from __future__ import annotations

from typing import Any

from tests.integration.people.helpers import (
    PASSWORD,
    admin,
    admin_invite,
    call,
    chat,
    create_user,
    error_of,
    login,
    signup,
    try_login,
    unique_email,
    wait_key_refused,
)
from tests.support import ADMIN_KEY, Gateway


def new_tenant(gw: Gateway, **limits: Any) -> dict[str, Any]:
    response = admin(gw, "POST", "/admin/tenants", json={"name": unique_email("tenant"), **limits})
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_users_need_the_admin_key(closed_gw: Gateway) -> None:
    for method, path in (("GET", "/admin/users"), ("POST", "/admin/users"), ("GET", "/admin/invites")):
        error_of(call(closed_gw, method, path), 401)
        bad = call(closed_gw, method, path, headers={"Authorization": "Bearer not-the-admin-key-0000"})
        error_of(bad, 401, "invalid_admin_key")


def test_create_list_get_update_a_user(closed_gw: Gateway) -> None:
    email = unique_email("crud")
    made = create_user(closed_gw, email.upper(), name="Crud", rpm=30, budget_usd=2.0, budget_period="weekly")
    assert made["id"].startswith("usr_") and made["email"] == email and made["name"] == "Crud"
    assert (made["rpm"], made["budget_usd"], made["budget_period"], made["is_admin"]) == (30, 2.0, "weekly", False)
    assert "reset" not in made and "password" not in str(made).lower()
    error_of(admin(closed_gw, "POST", "/admin/users", json={"email": email, "password": PASSWORD}), 409, "email_taken")
    assert made["id"] in {row["id"] for row in admin(closed_gw, "GET", "/admin/users").json()["data"]}
    fetched = admin(closed_gw, "GET", f"/admin/users/{made['id']}").json()
    assert fetched["email"] == email and [m["role"] for m in fetched["memberships"]] == ["owner"]
    new_email = unique_email("renamed")
    patched = admin(
        closed_gw, "PATCH", f"/admin/users/{made['id']}", json={"email": new_email, "name": "Renamed", "rpm": 5}
    )
    assert patched.status_code == 200, patched.text
    assert (patched.json()["email"], patched.json()["name"], patched.json()["rpm"]) == (new_email, "Renamed", 5)
    assert patched.json()["budget_usd"] == 2.0  # fields left out are kept
    error_of(try_login(closed_gw, email), 401, "invalid_credentials")
    assert login(closed_gw, new_email).me()["limits"]["rpm"] == 5
    other = create_user(closed_gw)
    clash = admin(closed_gw, "PATCH", f"/admin/users/{other['id']}", json={"email": new_email.upper()})
    error_of(clash, 409, "email_taken")
    for null in ("email", "is_admin"):
        error_of(admin(closed_gw, "PATCH", f"/admin/users/{other['id']}", json={null: None}), 400)
    audit = admin(closed_gw, "GET", "/admin/audit", params={"target_id": made["id"]}).json()["data"]
    assert {"user.create", "user.update"} <= {entry["action"] for entry in audit}
    assert all(entry["actor"].startswith("admin-key:") for entry in audit if entry["action"] == "user.create")
    assert PASSWORD not in str(audit)


def test_a_user_made_for_a_tenant_joins_it_and_gets_no_personal_tenant(closed_gw: Gateway) -> None:
    team = new_tenant(closed_gw)
    made = create_user(closed_gw, tenant_id=team["id"], role="admin")
    memberships = admin(closed_gw, "GET", f"/admin/users/{made['id']}").json()["memberships"]
    assert [(m["tenant_id"], m["role"]) for m in memberships] == [(team["id"], "admin")]
    tenants = admin(closed_gw, "GET", "/admin/tenants").json()["data"]
    assert made["email"] not in {t["name"] for t in tenants}
    missing = admin(closed_gw, "POST", "/admin/users", json={"email": unique_email(), "tenant_id": "ten_missing"})
    assert error_of(missing, 400, "tenant_not_found")["param"] == "tenant_id"


def test_memberships_put_and_delete(closed_gw: Gateway) -> None:
    team = new_tenant(closed_gw)
    made = create_user(closed_gw)
    person = login(closed_gw, made["email"])
    put = admin(closed_gw, "PUT", f"/admin/users/{made['id']}/memberships/{team['id']}", json={"role": "member"})
    assert put.status_code == 200 and put.json()["role"] == "member" and put.json()["tenant_id"] == team["id"]
    changed = admin(closed_gw, "PUT", f"/admin/users/{made['id']}/memberships/{team['id']}", json={"role": "owner"})
    assert changed.json()["role"] == "owner"
    assert {m["tenant_id"]: m["role"] for m in person.me()["memberships"]}[team["id"]] == "owner"
    key = person.new_key(tenant_id=team["id"])
    assert chat(closed_gw, key["key"]).status_code == 200
    removed = admin(closed_gw, "DELETE", f"/admin/users/{made['id']}/memberships/{team['id']}")
    assert removed.status_code == 200 and removed.json()["removed"] is True
    wait_key_refused(closed_gw, key["key"])
    assert team["id"] not in person.tenant_ids()
    error_of(admin(closed_gw, "DELETE", f"/admin/users/{made['id']}/memberships/{team['id']}"), 404)
    error_of(
        admin(closed_gw, "PUT", f"/admin/users/{made['id']}/memberships/ten_missing", json={"role": "member"}), 404
    )
    bad_role = admin(closed_gw, "PUT", f"/admin/users/{made['id']}/memberships/{team['id']}", json={"role": "god"})
    error_of(bad_role, 400)


def test_deleting_a_user_ends_its_sessions_and_keys(closed_gw: Gateway) -> None:
    made = create_user(closed_gw)
    person = login(closed_gw, made["email"])
    key = person.new_key()
    assert chat(closed_gw, key["key"]).status_code == 200
    deleted = admin(closed_gw, "DELETE", f"/admin/users/{made['id']}")
    assert deleted.status_code == 200 and deleted.json() == {"id": made["id"], "deleted": True}
    error_of(admin(closed_gw, "GET", f"/admin/users/{made['id']}"), 404, "user_not_found")
    error_of(person.get("/me"), 401, "not_authenticated")
    error_of(try_login(closed_gw, made["email"]), 401, "invalid_credentials")
    wait_key_refused(closed_gw, key["key"])
    again = create_user(closed_gw, made["email"])  # the address is free again
    assert login(closed_gw, made["email"]).id == again["id"] != made["id"]


def test_disabling_is_explicit(closed_gw: Gateway) -> None:
    made = create_user(closed_gw)
    assert admin(closed_gw, "PATCH", f"/admin/users/{made['id']}", json={"disabled": True}).json()["disabled"]
    error_of(admin(closed_gw, "PATCH", f"/admin/users/{made['id']}", json={"disabled": None}), 400)
    assert admin(closed_gw, "GET", f"/admin/users/{made['id']}").json()["disabled"] is True
    error_of(try_login(closed_gw, made["email"]), 401, "user_disabled")


def test_unknown_user_ids_answer_404(closed_gw: Gateway) -> None:
    for method, path in (
        ("GET", "/admin/users/usr_missing"),
        ("PATCH", "/admin/users/usr_missing"),
        ("DELETE", "/admin/users/usr_missing"),
        ("POST", "/admin/users/usr_missing/reset-link"),
        ("POST", "/admin/users/usr_missing/login-link"),
        ("DELETE", "/admin/users/usr_missing/sessions"),
        ("DELETE", "/admin/users/usr_missing/memberships/ten_missing"),
    ):
        body = {"name": "x"} if method == "PATCH" else None
        error_of(admin(closed_gw, method, path, json=body), 404, "user_not_found")


def test_invites_listed_without_tokens_and_withdrawn(closed_gw: Gateway) -> None:
    team = new_tenant(closed_gw)
    email = unique_email("invited")
    bound = admin_invite(closed_gw, email=email, tenant_id=team["id"], role="member", expires_in_hours=2)
    spare = admin_invite(closed_gw)
    listed = admin(closed_gw, "GET", "/admin/invites")
    assert listed.status_code == 200
    rows = {row["id"]: row for row in listed.json()["data"]}
    assert bound["token"] not in listed.text and spare["token"] not in listed.text
    assert rows[bound["id"]]["email"] == email and rows[bound["id"]]["tenant_id"] == team["id"]
    assert rows[bound["id"]]["state"] == "open" and rows[bound["id"]]["created_by"].startswith("admin-key:")
    person = signup(closed_gw, email, invite=bound["token"])
    assert [m["tenant_id"] for m in person.me()["memberships"]] == [team["id"]]
    rows = {row["id"]: row for row in admin(closed_gw, "GET", "/admin/invites").json()["data"]}
    assert rows[bound["id"]]["state"] == "used"
    error_of(admin(closed_gw, "DELETE", f"/admin/invites/{bound['id']}"), 404)  # a used invite stays used
    assert admin(closed_gw, "DELETE", f"/admin/invites/{spare['id']}").status_code == 200
    rows = {row["id"]: row for row in admin(closed_gw, "GET", "/admin/invites").json()["data"]}
    assert rows[spare["id"]]["state"] == "expired"
    error_of(admin(closed_gw, "DELETE", "/admin/invites/inv_missing"), 404)
    missing = admin(closed_gw, "POST", "/admin/invites", json={"tenant_id": "ten_missing"})
    error_of(missing, 400, "tenant_not_found")


def test_admin_key_is_not_a_person(closed_gw: Gateway) -> None:
    """The admin key opens /admin, not /me: it belongs to no user."""
    response = call(closed_gw, "GET", "/me", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    error_of(response, 401, "not_authenticated")
