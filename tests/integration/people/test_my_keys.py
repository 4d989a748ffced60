"""A person's own API keys: created within caps, used with the OpenAI SDK, metered privately, revoked, rotated."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.integration.people.helpers import (
    OPEN_TENANT_LIMITS,
    OPEN_USER_LIMITS,
    Person,
    StartGateway,
    admin,
    chat,
    error_of,
    poll,
    signup,
    stop_soon,
    wait_key_refused,
)
from tests.support import Gateway

MAX_KEYS = 2


@pytest.fixture(scope="module")
def few_keys_gw(start_people_gateway: StartGateway) -> Iterator[Gateway]:
    gw = start_people_gateway(TENANTGATE_SIGNUP="open", TENANTGATE_MAX_KEYS_PER_USER=str(MAX_KEYS))
    yield gw
    stop_soon(gw)


def sdk(gw: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0)


def ask(client: openai.OpenAI) -> str:
    answer = client.chat.completions.create(model="mock-gpt", messages=[{"role": "user", "content": "hi"}])
    content = answer.choices[0].message.content
    assert content
    return content


def refused_by_sdk(client: openai.OpenAI) -> bool:
    try:
        ask(client)
    except openai.AuthenticationError:
        return True
    return False


def test_the_secret_is_shown_once(open_gw: Gateway) -> None:
    person = signup(open_gw)
    created = person.new_key(name="ci", models=["mock-gpt"])
    secret = created["key"]
    assert secret.startswith(created["prefix"]) and len(secret) > len(created["prefix"]) + 20
    hidden = secret[len(created["prefix"]) :]
    listed = person.get("/me/keys")
    assert listed.status_code == 200
    [row] = listed.json()["data"]
    assert "key" not in row and row["id"] == created["id"] and row["name"] == "ci" and row["models"] == ["mock-gpt"]
    tenant = created["tenant_id"]
    for text in (
        listed.text,
        person.get(f"/me/tenants/{tenant}/keys").text,
        str(person.me()),
        admin(open_gw, "GET", "/admin/keys", params={"tenant_id": tenant}).text,
        admin(open_gw, "GET", f"/admin/keys/{created['id']}").text,
        admin(open_gw, "GET", "/admin/audit", params={"target_id": created["id"]}).text,
    ):
        assert hidden not in text


def test_a_key_cannot_exceed_the_users_or_the_tenants_caps(open_gw: Gateway) -> None:
    person = signup(open_gw)
    user_rpm, tenant_tpm = OPEN_USER_LIMITS["rpm"], OPEN_TENANT_LIMITS["tpm"]

    def refused(**limits: Any) -> str:
        return str(error_of(person.post("/me/keys", json=limits), 400, "over_cap")["message"])

    assert "user's 100" in refused(rpm=user_rpm + 1)
    assert "tenant's 50000" in refused(tpm=tenant_tpm + 1)
    assert "tenant's 6" in refused(max_concurrency=7)
    assert "tenant's 7.5" in refused(budget_usd=7.51)
    both = refused(rpm=OPEN_TENANT_LIMITS["rpm"] + 1)
    assert "user's 100" in both and "tenant's 120" in both
    assert person.get("/me/keys").json()["data"] == []
    at_caps = person.new_key(rpm=user_rpm, tpm=tenant_tpm, max_concurrency=6, budget_usd=7.5)
    assert (at_caps["rpm"], at_caps["tpm"], at_caps["budget_usd"]) == (100, 50_000, 7.5)
    # an admin lowers the user's caps: new keys follow them
    lowered = admin(open_gw, "PATCH", f"/admin/users/{person.id}", json={"rpm": 10, "tpm": 1000})
    assert lowered.status_code == 200 and (lowered.json()["rpm"], lowered.json()["tpm"]) == (10, 1000)
    assert "user's 10" in refused(rpm=11)
    assert "user's 1000" in refused(tpm=1001)
    assert person.new_key(rpm=10, tpm=1000)["rpm"] == 10


def test_unknown_models_and_past_expiry_are_refused(open_gw: Gateway) -> None:
    person = signup(open_gw)
    unknown = error_of(person.post("/me/keys", json={"models": ["mock-gpt", "no-such-model"]}), 400, "unknown_model")
    assert unknown["param"] == "models" and "no-such-model" in unknown["message"]
    past = error_of(person.post("/me/keys", json={"expires_at": "2020-01-01T00:00:00Z"}), 400)
    assert past["param"] == "expires_at"
    assert person.get("/me/keys").json()["data"] == []
    limited = person.new_key(models=["mock-gpt"])
    assert chat(open_gw, limited["key"], "mock-gpt").status_code == 200
    error_of(chat(open_gw, limited["key"], "mock-small"), 404)  # outside its list: as if it did not exist


def test_a_personal_key_works_with_the_openai_sdk_and_its_usage_is_private(open_gw: Gateway) -> None:
    person, other = signup(open_gw), signup(open_gw)
    key = person.new_key(name="sdk")
    ask(sdk(open_gw, key["key"]))
    usage = person.get("/me/usage", params={"group_by": "model"})
    assert usage.status_code == 200, usage.text
    [by_model] = usage.json()["by_model"]
    assert by_model["model"] == "mock-gpt" and by_model["requests"] == 1 and by_model["cost_usd"] > 0
    assert usage.json()["totals"]["requests"] == 1
    [record] = person.get("/me/usage/records").json()["data"]
    assert record["key_id"] == key["id"] and record["model"] == "mock-gpt" and record["status"] == 200
    by_key = person.get("/me/usage", params={"key_id": key["id"], "group_by": "model"}).json()
    assert by_key["totals"]["requests"] == 1
    csv = person.get("/me/usage", params={"group_by": "model", "format": "csv"})
    assert csv.headers["content-type"].startswith("text/csv") and "mock-gpt" in csv.text
    assert person.me()["spend"]["spent_usd"] > 0
    # another person sees none of it
    theirs = other.get("/me/usage", params={"group_by": "model"}).json()
    assert theirs["totals"]["requests"] == 0 and theirs["by_model"] == []
    assert other.get("/me/usage/records").json()["data"] == []
    error_of(other.get("/me/usage", params={"key_id": key["id"]}), 404, "key_not_found")
    assert other.me()["spend"]["spent_usd"] == 0


def test_a_revoked_key_is_refused_by_the_sdk(open_gw: Gateway) -> None:
    person = signup(open_gw)
    key = person.new_key()
    client = sdk(open_gw, key["key"])
    ask(client)
    revoked = person.delete(f"/me/keys/{key['id']}")
    assert revoked.status_code == 200 and revoked.json()["revoked"] is True
    poll(lambda: refused_by_sdk(client), what="the SDK to get 401 for the revoked key")
    [row] = person.get("/me/keys").json()["data"]
    assert row["revoked"] is True and row["revoked_at"]


def test_rotating_a_key_stops_the_old_secret(open_gw: Gateway) -> None:
    person = signup(open_gw)
    old = person.new_key(name="rotating", models=["mock-gpt"], rpm=5)
    ask(sdk(open_gw, old["key"]))
    rotated = person.post(f"/me/keys/{old['id']}/rotate")
    assert rotated.status_code == 201, rotated.text
    new = rotated.json()
    assert new["id"] != old["id"] and new["key"] != old["key"]
    assert (new["name"], new["models"], new["rpm"], new["tenant_id"]) == ("rotating", ["mock-gpt"], 5, old["tenant_id"])
    poll(lambda: refused_by_sdk(sdk(open_gw, old["key"])), what="the old secret to be refused")
    ask(sdk(open_gw, new["key"]))
    error_of(person.post(f"/me/keys/{old['id']}/rotate"), 400, "key_revoked")
    states = {row["id"]: row["revoked"] for row in person.get("/me/keys").json()["data"]}
    assert states == {old["id"]: True, new["id"]: False}


def test_a_manager_may_revoke_but_not_rotate_a_members_key(open_gw: Gateway) -> None:
    """Rotating hands out the new secret: a manager must not get a working key that spends as someone else."""
    owner, member = signup(open_gw), signup(open_gw)
    tenant = owner.personal_tenant()
    invite = owner.post(f"/me/tenants/{tenant}/invites", json={"role": "member"}).json()
    assert member.post("/me/invites/accept", json={"token": invite["token"]}).status_code == 200
    key = member.new_key(tenant_id=tenant)
    error_of(owner.post(f"/me/keys/{key['id']}/rotate"), 403, "not_key_owner")
    assert chat(open_gw, key["key"]).status_code == 200
    assert [row["id"] for row in member.get("/me/keys").json()["data"]] == [key["id"]]
    assert owner.delete(f"/me/keys/{key['id']}").status_code == 200
    wait_key_refused(open_gw, key["key"])


def test_at_most_max_keys_per_user(few_keys_gw: Gateway) -> None:
    person: Person = signup(few_keys_gw)
    first, _second = person.new_key(), person.new_key()
    error_of(person.post("/me/keys", json={}), 429, "too_many_keys")
    assert len(person.get("/me/keys").json()["data"]) == MAX_KEYS
    rotated = person.post(f"/me/keys/{first['id']}/rotate")  # a rotation keeps the count
    assert rotated.status_code == 201, rotated.text
    error_of(person.post("/me/keys", json={}), 429, "too_many_keys")
    assert person.delete(f"/me/keys/{rotated.json()['id']}").status_code == 200
    third = person.new_key()  # a revoked key no longer counts
    assert chat(few_keys_gw, third["key"]).status_code == 200
    error_of(person.post("/me/keys", json={}), 429, "too_many_keys")
    assert signup(few_keys_gw).new_key()["id"]  # the cap is per person


def test_an_expired_key_is_not_rotated_into_a_dead_one(open_gw: Gateway) -> None:
    person = signup(open_gw)
    key = person.new_key(name="short-lived")
    expired = admin(open_gw, "PATCH", f"/admin/keys/{key['id']}", json={"expires_at": "2020-01-01T00:00:00Z"})
    assert expired.status_code == 200, expired.text
    error_of(person.post(f"/me/keys/{key['id']}/rotate"), 400, "key_expired")
    assert [row["id"] for row in person.get("/me/keys").json()["data"]] == [key["id"]]  # no new key was made
