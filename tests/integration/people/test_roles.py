"""Roles in a tenant (owner, admin, member), what each may see and do, and platform admins on /admin."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from tests.integration.people.helpers import (
    Person,
    admin,
    chat,
    create_user,
    error_of,
    login,
    signup,
    wait_key_refused,
    with_key,
)
from tests.support import Gateway


@dataclass
class Team:
    """A tenant owned by ``owner`` with an ``admin`` and a ``member``; ``outsider`` has a tenant of its own."""

    tenant: str
    owner: Person
    admin: Person
    member: Person
    outsider: Person
    outsider_tenant: str
    outsider_key: dict[str, Any]


def join(owner: Person, tenant: str, person: Person, role: str) -> None:
    invite = owner.post(f"/me/tenants/{tenant}/invites", json={"email": person.email, "role": role})
    assert invite.status_code == 201, invite.text
    assert invite.json()["role"] == role and invite.json()["tenant_id"] == tenant
    accepted = person.post("/me/invites/accept", json={"token": invite.json()["token"]})
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["role"] == role and accepted.json()["tenant_id"] == tenant


@pytest.fixture()
def team(open_gw: Gateway) -> Team:
    owner, tenant_admin, member, outsider = (signup(open_gw) for _ in range(4))
    tenant = owner.personal_tenant()
    join(owner, tenant, tenant_admin, "admin")
    join(owner, tenant, member, "member")
    outsider_tenant = outsider.personal_tenant()
    return Team(tenant, owner, tenant_admin, member, outsider, outsider_tenant, outsider.new_key())


def roles_in(person: Person, tenant: str) -> dict[str, str]:
    response = person.get(f"/me/tenants/{tenant}/members")
    assert response.status_code == 200, response.text
    return {row["email"]: row["role"] for row in response.json()["data"]}


def test_invites_join_with_their_role(team: Team) -> None:
    assert roles_in(team.owner, team.tenant) == {
        team.owner.email: "owner",
        team.admin.email: "admin",
        team.member.email: "member",
    }
    member_roles = {m["tenant_id"]: m["role"] for m in team.member.me()["memberships"]}
    assert member_roles[team.tenant] == "member" and len(member_roles) == 2  # and its personal tenant
    invite = team.owner.post(f"/me/tenants/{team.tenant}/invites", json={"email": team.outsider.email}).json()
    error_of(team.member.post("/me/invites/accept", json={"token": invite["token"]}), 400, "invalid_invite")
    expired = team.owner.post(f"/me/tenants/{team.tenant}/invites", json={"expires_in_hours": 1e-12}).json()
    error_of(team.outsider.post("/me/invites/accept", json={"token": expired["token"]}), 400, "invite_used")
    assert team.tenant not in team.outsider.tenant_ids()
    assert team.outsider.post("/me/invites/accept", json={"token": invite["token"]}).status_code == 200
    again = team.owner.post(f"/me/tenants/{team.tenant}/invites", json={"role": "member"}).json()
    error_of(team.member.post("/me/invites/accept", json={"token": again["token"]}), 409, "already_member")
    error_of(team.member.post("/me/invites/accept", json={"token": "not-an-invite"}), 400, "invalid_invite")


def test_a_member_cannot_see_another_tenant(team: Team) -> None:
    member, other = team.member, team.outsider_tenant
    for path in (f"/me/tenants/{other}/keys", f"/me/tenants/{other}/members", "/me/tenants/ten_nosuchtenant/keys"):
        error_of(member.get(path), 404, "tenant_not_found")
    error_of(member.get("/me/usage", params={"tenant_id": other}), 404, "tenant_not_found")
    error_of(member.get("/me/usage/records", params={"tenant_id": other}), 404, "tenant_not_found")
    error_of(member.get("/me/usage", params={"key_id": team.outsider_key["id"]}), 404, "key_not_found")
    error_of(member.get("/me/usage/records", params={"key_id": team.outsider_key["id"]}), 404, "key_not_found")
    error_of(member.delete(f"/me/keys/{team.outsider_key['id']}"), 404, "key_not_found")
    error_of(member.post(f"/me/keys/{team.outsider_key['id']}/rotate"), 404, "key_not_found")
    error_of(member.post("/me/keys", json={"tenant_id": other}), 404, "tenant_not_found")
    error_of(member.post(f"/me/tenants/{other}/invites", json={"role": "member"}), 404, "tenant_not_found")
    error_of(member.delete(f"/me/tenants/{other}/members/{team.outsider.id}"), 404, "tenant_not_found")
    error_of(member.patch(f"/me/tenants/{other}/members/{team.outsider.id}", json={"role": "member"}), 404)
    assert chat(member.gw, team.outsider_key["key"]).status_code == 200  # untouched
    # the same holds for the tenant's owner: it manages its own tenant only
    error_of(team.owner.get(f"/me/tenants/{other}/keys"), 404, "tenant_not_found")


def test_a_member_cannot_manage_the_tenant(team: Team) -> None:
    member, tenant = team.member, team.tenant
    error_of(member.get(f"/me/tenants/{tenant}/members"), 403, "tenant_role_required")
    error_of(member.get(f"/me/tenants/{tenant}/keys"), 403, "tenant_role_required")
    error_of(member.patch(f"/me/tenants/{tenant}/members/{member.id}", json={"role": "admin"}), 403)
    error_of(member.patch(f"/me/tenants/{tenant}/members/{team.admin.id}", json={"role": "member"}), 403)
    error_of(member.delete(f"/me/tenants/{tenant}/members/{team.admin.id}"), 403, "tenant_role_required")
    error_of(member.post(f"/me/tenants/{tenant}/invites", json={"role": "member"}), 403, "tenant_role_required")
    owner_key = team.owner.new_key(tenant_id=tenant)
    error_of(member.delete(f"/me/keys/{owner_key['id']}"), 404, "key_not_found")
    assert roles_in(team.owner, tenant)[member.email] == "member"
    assert chat(member.gw, owner_key["key"]).status_code == 200


def test_a_tenant_admin_cannot_touch_ownership(team: Team) -> None:
    tenant_admin, tenant = team.admin, team.tenant
    members = f"/me/tenants/{tenant}/members"
    error_of(tenant_admin.patch(f"{members}/{team.member.id}", json={"role": "owner"}), 403, "owner_required")
    error_of(tenant_admin.patch(f"{members}/{tenant_admin.id}", json={"role": "owner"}), 403, "owner_required")
    error_of(tenant_admin.patch(f"{members}/{team.owner.id}", json={"role": "member"}), 403, "owner_required")
    error_of(tenant_admin.delete(f"{members}/{team.owner.id}"), 403, "owner_required")
    error_of(tenant_admin.post(f"/me/tenants/{tenant}/invites", json={"role": "owner"}), 403, "owner_required")
    assert roles_in(team.owner, tenant)[team.owner.email] == "owner"
    # what an admin may do: change members' roles below owner, invite members
    promoted = tenant_admin.patch(f"{members}/{team.member.id}", json={"role": "admin"})
    assert promoted.status_code == 200 and promoted.json()["role"] == "admin"
    assert tenant_admin.patch(f"{members}/{team.member.id}", json={"role": "member"}).json()["role"] == "member"
    assert tenant_admin.post(f"/me/tenants/{tenant}/invites", json={"role": "admin"}).status_code == 201


def test_the_last_owner_cannot_leave(team: Team) -> None:
    owner, tenant = team.owner, team.tenant
    members = f"/me/tenants/{tenant}/members"
    error_of(owner.delete(f"{members}/{owner.id}"), 409, "last_owner")
    error_of(owner.patch(f"{members}/{owner.id}", json={"role": "admin"}), 409, "last_owner")
    assert roles_in(owner, tenant)[owner.email] == "owner"
    assert owner.patch(f"{members}/{team.member.id}", json={"role": "owner"}).json()["role"] == "owner"
    left = owner.delete(f"{members}/{owner.id}")
    assert left.status_code == 200 and left.json()["removed"] is True
    assert tenant not in owner.tenant_ids()
    error_of(team.member.delete(f"{members}/{team.member.id}"), 409, "last_owner")


def test_removing_a_member_revokes_its_keys_in_that_tenant(team: Team) -> None:
    member, gw = team.member, team.member.gw
    in_team = member.new_key(tenant_id=team.tenant, name="team-key")
    own = member.new_key(name="own-key")
    assert own["tenant_id"] != team.tenant  # its default tenant is the one it owns
    assert chat(gw, in_team["key"]).status_code == 200
    assert in_team["id"] in {row["id"] for row in team.admin.get(f"/me/tenants/{team.tenant}/keys").json()["data"]}
    removed = team.admin.delete(f"/me/tenants/{team.tenant}/members/{member.id}")
    assert removed.status_code == 200, removed.text
    refused = wait_key_refused(gw, in_team["key"])
    assert refused.json()["error"]["code"] == "revoked_api_key"
    assert chat(gw, own["key"]).status_code == 200  # its keys elsewhere still work
    mine = {row["id"]: row["revoked"] for row in member.get("/me/keys").json()["data"]}
    assert mine == {in_team["id"]: True, own["id"]: False}
    error_of(member.get(f"/me/tenants/{team.tenant}/members"), 404, "tenant_not_found")
    error_of(member.post("/me/keys", json={"tenant_id": team.tenant}), 404, "tenant_not_found")


def test_a_member_leaving_on_its_own_loses_its_keys_there(team: Team) -> None:
    member, gw = team.member, team.member.gw
    in_team = member.new_key(tenant_id=team.tenant)
    left = member.delete(f"/me/tenants/{team.tenant}/members/{member.id}")
    assert left.status_code == 200, left.text
    wait_key_refused(gw, in_team["key"])
    assert team.member.email not in roles_in(team.owner, team.tenant)


def test_managers_see_the_tenant_and_members_only_their_own(team: Team) -> None:
    gw = team.owner.gw
    member_key = team.member.new_key(tenant_id=team.tenant)
    owner_key = team.owner.new_key(tenant_id=team.tenant)
    assert chat(gw, member_key["key"]).status_code == 200
    assert chat(gw, owner_key["key"]).status_code == 200
    tenant_usage = team.admin.get("/me/usage", params={"tenant_id": team.tenant, "group_by": "model"}).json()
    assert tenant_usage["totals"]["requests"] == 2
    own_view = team.member.get("/me/usage", params={"tenant_id": team.tenant, "group_by": "model"}).json()
    assert own_view["totals"]["requests"] == 1
    records = team.member.get("/me/usage/records", params={"tenant_id": team.tenant}).json()["data"]
    assert [row["key_id"] for row in records] == [member_key["id"]]
    error_of(team.member.get("/me/usage", params={"key_id": owner_key["id"]}), 404, "key_not_found")
    by_key = team.owner.get("/me/usage", params={"tenant_id": team.tenant, "key_id": member_key["id"]}).json()
    assert by_key["totals"]["requests"] == 1
    # a manager may revoke a member's key in its tenant
    assert team.admin.delete(f"/me/keys/{member_key['id']}").json()["revoked"] is True
    wait_key_refused(gw, member_key["key"])


def test_a_platform_admin_user_uses_the_admin_api_by_session_and_by_key(open_gw: Gateway) -> None:
    made = create_user(open_gw, is_admin=True)
    platform = login(open_gw, made["email"])
    assert platform.get("/admin/tenants").status_code == 200
    error_of(platform.post("/admin/tenants", json={"name": f"t-{platform.id}-a"}, csrf=False), 403, "csrf_failed")
    by_session = platform.post("/admin/tenants", json={"name": f"t-{platform.id}-a"})
    assert by_session.status_code == 201, by_session.text
    key = platform.new_key()
    assert with_key(open_gw, key["key"], "GET", "/admin/users").status_code == 200
    by_key = with_key(open_gw, key["key"], "POST", "/admin/tenants", json={"name": f"t-{platform.id}-b"})
    assert by_key.status_code == 201, by_key.text
    entries = admin(open_gw, "GET", "/admin/audit", params={"actor": f"user:{platform.email}"}).json()["data"]
    created = {(e["action"], e["target_id"]) for e in entries}
    assert {("tenant.create", by_session.json()["id"]), ("tenant.create", by_key.json()["id"])} <= created
    # the admin flag taken away: the same session and key are refused at once
    assert admin(open_gw, "PATCH", f"/admin/users/{platform.id}", json={"is_admin": False}).status_code == 200
    error_of(platform.get("/admin/tenants"), 403, "admin_required")
    error_of(with_key(open_gw, key["key"], "GET", "/admin/tenants"), 403, "admin_required")


def test_a_normal_user_gets_403_on_the_admin_api(open_gw: Gateway) -> None:
    person = signup(open_gw)
    key = person.new_key()
    error_of(person.get("/admin/tenants"), 403, "admin_required")
    error_of(person.get("/admin/users"), 403, "admin_required")
    error_of(person.patch(f"/admin/users/{person.id}", json={"is_admin": True}), 403, "admin_required")
    error_of(with_key(open_gw, key["key"], "GET", "/admin/audit"), 403, "admin_required")
    error_of(with_key(open_gw, key["key"], "POST", "/admin/users", json={"email": "x@example.com"}), 403)
    assert person.me()["user"]["is_admin"] is False


def test_member_actions_are_audited_with_the_user_as_actor(team: Team) -> None:
    gw = team.owner.gw
    key = team.member.new_key(tenant_id=team.tenant)
    assert team.owner.patch(f"/me/tenants/{team.tenant}/members/{team.member.id}", json={"role": "admin"}).is_success
    assert team.owner.delete(f"/me/tenants/{team.tenant}/members/{team.member.id}").is_success

    def actions(actor: str) -> list[tuple[str, str | None]]:
        entries = admin(gw, "GET", "/admin/audit", params={"actor": actor}).json()["data"]
        return [(e["action"], e["target_id"]) for e in entries]

    owner_actions = actions(f"user:{team.owner.email}")
    assert ("member.role", team.tenant) in owner_actions
    assert ("member.remove", team.tenant) in owner_actions
    assert [a for a, _ in owner_actions].count("invite.create") == 2
    member_actions = actions(f"user:{team.member.email}")
    assert ("key.create", key["id"]) in member_actions
    assert ("invite.accept", team.tenant) in member_actions
    assert ("user.signup", team.member.id) in member_actions
