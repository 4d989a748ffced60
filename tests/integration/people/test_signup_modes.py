"""Sign-up in every mode: closed, invite, open and domain, with and without invites."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.integration.people.helpers import (
    OPEN_TENANT_LIMITS,
    OPEN_USER_LIMITS,
    PASSWORD,
    StartGateway,
    admin,
    admin_invite,
    call,
    create_user,
    error_of,
    login,
    poll,
    signup,
    stop_soon,
    try_login,
    try_signup,
    unique_email,
)
from tests.support import Gateway

DEFAULT_TENANT_LIMITS = {"rpm": 60, "tpm": 100_000, "max_concurrency": 4, "budget_usd": 5.0, "budget_period": "monthly"}
NO_LIMITS = {"rpm": None, "tpm": None, "max_concurrency": None, "budget_usd": None, "budget_period": None}


@pytest.fixture(scope="module")
def invite_gw(start_people_gateway: StartGateway) -> Iterator[Gateway]:
    """Invite-only, set by the config file's ``signup.mode`` (no TENANTGATE_SIGNUP); reset links that expire as
    soon as they are made (a lifetime under the clock's resolution)."""
    gw = start_people_gateway("signup:\n  mode: invite\n", TENANTGATE_RESET_TTL_HOURS="1e-12")
    yield gw
    stop_soon(gw)


@pytest.fixture(scope="module")
def domain_gw(start_people_gateway: StartGateway) -> Iterator[Gateway]:
    """Sign-up for two domains; the personal-tenant limits are the built-in defaults."""
    gw = start_people_gateway(TENANTGATE_SIGNUP="domain:Example.org, @corp.example.net")
    yield gw
    stop_soon(gw)


def user_named(gw: Gateway, email: str) -> dict[str, Any] | None:
    users = admin(gw, "GET", "/admin/users").json()["data"]
    found = [user for user in users if user["email"] == email]
    return found[0] if found else None


def tenant(gw: Gateway, tenant_id: str) -> dict[str, Any]:
    response = admin(gw, "GET", f"/admin/tenants/{tenant_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def limits_of(row: dict[str, Any]) -> dict[str, Any]:
    return {name: row[name] for name in NO_LIMITS}


def test_auth_config_tells_each_mode(
    open_gw: Gateway, closed_gw: Gateway, invite_gw: Gateway, domain_gw: Gateway
) -> None:
    gateways = {"open": open_gw, "closed": closed_gw, "invite": invite_gw, "domain": domain_gw}
    answers = {name: call(gw, "GET", "/auth/config") for name, gw in gateways.items()}
    assert {name: r.status_code for name, r in answers.items()} == dict.fromkeys(gateways, 200)
    assert answers["open"].json() == {"signup": "open", "domains": []}
    assert answers["closed"].json() == {"signup": "closed", "domains": []}
    assert answers["invite"].json() == {"signup": "invite", "domains": []}
    assert answers["domain"].json() == {"signup": "domain", "domains": ["corp.example.net", "example.org"]}


# -- closed ----------------------------------------------------------------------------------------------------


def test_closed_refuses_sign_up_without_invite(closed_gw: Gateway) -> None:
    email = unique_email("closed")
    error_of(try_signup(closed_gw, email), 403, "signup_not_allowed")
    assert user_named(closed_gw, email) is None
    error_of(try_login(closed_gw, email), 401, "invalid_credentials")


def test_closed_admin_made_user_logs_in(closed_gw: Gateway) -> None:
    made = create_user(closed_gw, unique_email("made"), PASSWORD, name="Made By Admin")
    person = login(closed_gw, made["email"])
    me = person.me()
    assert me["user"]["id"] == made["id"] and me["user"]["name"] == "Made By Admin"
    assert [m["role"] for m in me["memberships"]] == ["owner"]  # a personal tenant
    assert me["csrf_token"] == person.csrf


def test_closed_admin_made_user_without_password_sets_one_with_the_reset_link(closed_gw: Gateway) -> None:
    made = create_user(closed_gw, unique_email("nopass"), password=None)
    reset = made["reset"]
    assert reset["token"] and reset["url"].endswith(f"/console/reset?token={reset['token']}")
    assert reset["mailed"] is False
    error_of(try_login(closed_gw, made["email"]), 401, "invalid_credentials")  # no password yet
    done = call(closed_gw, "POST", "/auth/reset", json={"token": reset["token"], "new_password": PASSWORD})
    assert done.status_code == 200, done.text
    assert done.json() == {"reset": True, "email": made["email"]}
    assert login(closed_gw, made["email"]).id == made["id"]


def test_closed_sign_up_with_an_invite(closed_gw: Gateway) -> None:
    invite = admin_invite(closed_gw)
    assert invite["url"].endswith(f"/console/signup?invite={invite['token']}")
    person = signup(closed_gw, invite=invite["token"])
    assert [m["role"] for m in person.me()["memberships"]] == ["owner"]  # no tenant on the invite: a personal one
    listed = {row["id"]: row for row in admin(closed_gw, "GET", "/admin/invites").json()["data"]}
    assert listed[invite["id"]]["state"] == "used" and listed[invite["id"]]["used"] is True
    error_of(try_signup(closed_gw, unique_email(), invite=invite["token"]), 400, "invite_used")


# -- invite ----------------------------------------------------------------------------------------------------


def test_invite_mode_refuses_sign_up_without_one(invite_gw: Gateway) -> None:
    email = unique_email("noinvite")
    error_of(try_signup(invite_gw, email), 403, "signup_not_allowed")
    error_of(try_signup(invite_gw, email, invite="not-a-real-invite-token"), 400, "invalid_invite")
    assert user_named(invite_gw, email) is None


def test_invite_works_once(invite_gw: Gateway) -> None:
    invite = admin_invite(invite_gw)
    first = signup(invite_gw, invite=invite["token"])
    assert first.me()["user"]["email"] == first.email
    second = unique_email("second")
    error_of(try_signup(invite_gw, second, invite=invite["token"]), 400, "invite_used")
    assert user_named(invite_gw, second) is None


def test_invite_bound_to_an_email_refuses_another(invite_gw: Gateway) -> None:
    email = unique_email("bound")
    invite = admin_invite(invite_gw, email=email.upper())
    assert invite["email"] == email  # stored normalised
    other = unique_email("other")
    error_of(try_signup(invite_gw, other, invite=invite["token"]), 400, "invite_email")
    assert user_named(invite_gw, other) is None
    person = signup(invite_gw, f"  {email.title()} ", invite=invite["token"])  # the refusal did not use it up
    assert person.me()["user"]["email"] == email


def test_invite_to_a_tenant_joins_it_with_the_role_and_makes_no_personal_tenant(invite_gw: Gateway) -> None:
    team = admin(invite_gw, "POST", "/admin/tenants", json={"name": f"team-{unique_email('t')}"}).json()
    tenants_before = {row["id"] for row in admin(invite_gw, "GET", "/admin/tenants").json()["data"]}
    invite = admin_invite(invite_gw, tenant_id=team["id"], role="admin")
    assert invite["tenant_id"] == team["id"] and invite["role"] == "admin"
    person = signup(invite_gw, invite=invite["token"])
    memberships = person.me()["memberships"]
    assert [(m["tenant_id"], m["role"]) for m in memberships] == [(team["id"], "admin")]
    tenants_after = {row["id"] for row in admin(invite_gw, "GET", "/admin/tenants").json()["data"]}
    assert tenants_after == tenants_before
    members = person.get(f"/me/tenants/{team['id']}/members")  # an admin of the tenant may list its members
    assert members.status_code == 200 and [m["email"] for m in members.json()["data"]] == [person.email]
    key = person.new_key()  # the default tenant of the new key is the one it joined
    assert key["tenant_id"] == team["id"]


def test_expired_or_withdrawn_invite_is_refused(invite_gw: Gateway) -> None:
    expiring = admin_invite(invite_gw, expires_in_hours=0.0003)  # about a second

    def state() -> str | None:
        rows = admin(invite_gw, "GET", "/admin/invites").json()["data"]
        found = [row["state"] for row in rows if row["id"] == expiring["id"]]
        return found[0] if found and found[0] == "expired" else None

    poll(state, timeout=15, what="the invite to expire")
    email = unique_email("late")
    error_of(try_signup(invite_gw, email, invite=expiring["token"]), 400, "invalid_invite")
    instant = admin_invite(invite_gw, expires_in_hours=1e-12)  # shorter than the clock's resolution: no time
    error_of(try_signup(invite_gw, email, invite=instant["token"]), 400, "invalid_invite")
    withdrawn = admin_invite(invite_gw)
    assert admin(invite_gw, "DELETE", f"/admin/invites/{withdrawn['id']}").json() == {
        "id": withdrawn["id"],
        "revoked": True,
    }
    error_of(try_signup(invite_gw, email, invite=withdrawn["token"]), 400, "invalid_invite")
    assert user_named(invite_gw, email) is None


def test_concurrent_sign_ups_get_one_account_per_address_and_one_use_per_invite(invite_gw: Gateway) -> None:
    email = unique_email("race")
    invite = admin_invite(invite_gw)
    others = [unique_email("racer") for _ in range(6)]
    with ThreadPoolExecutor(6) as pool:
        same_address = list(
            pool.map(lambda _: try_signup(invite_gw, email, invite=admin_invite(invite_gw)["token"]), range(6))
        )
        same_invite = list(pool.map(lambda address: try_signup(invite_gw, address, invite=invite["token"]), others))
    assert sorted(r.status_code for r in same_address) == [201] + [409] * 5
    assert all(r.json()["error"]["code"] == "email_taken" for r in same_address if r.status_code == 409)
    assert sorted(r.status_code for r in same_invite) == [201] + [400] * 5
    assert all(r.json()["error"]["code"] == "invite_used" for r in same_invite if r.status_code == 400)
    assert user_named(invite_gw, email) is not None
    assert sum(user_named(invite_gw, address) is not None for address in others) == 1


def test_an_expired_reset_link_is_refused(invite_gw: Gateway) -> None:
    made = create_user(invite_gw, password=None)  # its reset link is already expired on this gateway
    refused = call(invite_gw, "POST", "/auth/reset", json={"token": made["reset"]["token"], "new_password": PASSWORD})
    error_of(refused, 400, "invalid_token")
    error_of(try_login(invite_gw, made["email"]), 401, "invalid_credentials")


# -- open ------------------------------------------------------------------------------------------------------


def test_open_sign_up_gets_a_personal_tenant_with_the_configured_limits(open_gw: Gateway) -> None:
    email = unique_email("OpEn", "Example.COM")
    person = signup(open_gw, email, name="Open Person")
    assert person.email == email.lower() and person.user["email"] == email.lower()
    me = person.me()
    assert me["user"]["name"] == "Open Person" and me["user"]["is_admin"] is False
    assert me["limits"] == {**NO_LIMITS, **OPEN_USER_LIMITS}
    [membership] = me["memberships"]
    assert membership["role"] == "owner" and membership["tenant_name"] == email.lower()
    assert limits_of(tenant(open_gw, membership["tenant_id"])) == OPEN_TENANT_LIMITS
    error_of(try_signup(open_gw, email.upper()), 409, "email_taken")


# -- domain ----------------------------------------------------------------------------------------------------


def test_domain_sign_up_for_a_listed_domain(domain_gw: Gateway) -> None:
    for email in (unique_email("d", "Example.ORG"), unique_email("d", "corp.example.net")):
        person = signup(domain_gw, email)
        [membership] = person.me()["memberships"]
        assert membership["role"] == "owner"
        assert limits_of(tenant(domain_gw, membership["tenant_id"])) == DEFAULT_TENANT_LIMITS


@pytest.mark.parametrize(
    "domain", ["example.com", "evil.example.org", "example.org.evil.com", "notexample.org", "example.net"]
)
def test_domain_sign_up_refuses_other_domains(domain_gw: Gateway, domain: str) -> None:
    email = unique_email("x", domain)
    error_of(try_signup(domain_gw, email), 403, "signup_not_allowed")
    assert user_named(domain_gw, email) is None


def test_domain_mode_accepts_an_invite_for_another_domain(domain_gw: Gateway) -> None:
    invite = admin_invite(domain_gw)
    person = signup(domain_gw, unique_email("guest", "elsewhere.io"), invite=invite["token"])
    assert [m["role"] for m in person.me()["memberships"]] == ["owner"]
