"""Three gateway processes sharing PostgreSQL and Redis enforce a USER's limits exactly as one.

A person owns keys: every key counts against its own limits, its user's and its tenant's. Here one user holds two
personal keys and the requests of both are spread over three replicas, so only a user scope shared in Redis can
hold the user's limit exactly.

The user is made through the admin API (it gets a personal tenant it owns), logs in, and creates its two keys
with ``POST /me/keys``. The personal tenant starts with the config's default limits (60 rpm, 4 in flight, ...),
which would bind before the user's; each test widens them first so the user level is the tightest one.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.pg import reset_postgres
from tests.support import REDIS_URL, Gateway, Process, mock_config, require_redis, start_gateway

PASSWORD = "a long password 123"
ROOMY = {"rpm": 100_000, "tpm": 100_000_000, "max_concurrency": 10_000, "budget_usd": 1_000.0}
BODY = {"model": "mock-gpt", "messages": [{"role": "user", "content": "user level"}]}
# mock-gpt's prices in the test config, in nano-USD per token: 1 USD and 2 USD per million.
INPUT_NANO, OUTPUT_NANO = 1_000, 2_000
TEMPLATE_ALLOWANCE = 64  # prompt tokens reserved on top of the body's bytes (tenantgate.metering.bounds)


@pytest.fixture(scope="module")
def replicas(mock: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Gateway]]:
    asyncio.run(require_redis())  # fail loudly when Redis is missing
    tmp: Path = tmp_path_factory.mktemp("replicas-user")
    database = reset_postgres()
    gateways: list[Gateway] = []
    try:
        for _ in range(3):  # the same secret file: every replica must decrypt the same credentials
            gateways.append(start_gateway(database, tmp, mock_config(mock.port), TENANTGATE_REDIS_URL=REDIS_URL))
        yield gateways
    finally:
        for gateway in gateways:
            gateway.process.stop()


@dataclass
class Person:
    id: str
    tenant_id: str
    keys: list[dict[str, Any]]  # as POST /me/keys answered: "id", "key" (the secret), ...


def create_user(gateway: Gateway, **limits: Any) -> tuple[str, str, str]:
    """A user with a password and its personal tenant: ``(user id, email, tenant id)``."""
    email = f"person-{secrets.token_hex(5)}@example.org"
    with gateway.admin() as admin:
        created = admin.post("/admin/users", json={"email": email, "password": PASSWORD, **limits})
        assert created.status_code == 201, created.text
        user_id = created.json()["id"]
        for name, value in limits.items():
            assert created.json()[name] == value, created.json()
        memberships = admin.get(f"/admin/users/{user_id}").json()["memberships"]
    owned = [m["tenant_id"] for m in memberships if m["role"] == "owner"]
    assert len(owned) == 1, memberships
    return user_id, email, owned[0]


def widen_tenant(gateway: Gateway, tenant_id: str) -> None:
    with gateway.admin() as admin:
        response = admin.patch(f"/admin/tenants/{tenant_id}", json=ROOMY)
    assert response.status_code == 200, response.text


def patch_user(gateway: Gateway, user_id: str, **changes: Any) -> None:
    with gateway.admin() as admin:
        response = admin.patch(f"/admin/users/{user_id}", json=changes)
    assert response.status_code == 200, response.text
    for name, value in changes.items():
        assert response.json()[name] == value, response.json()


def personal_keys(gateway: Gateway, email: str, count: int, **key_limits: Any) -> list[dict[str, Any]]:
    """Log in as the user (session cookie + CSRF token) and create ``count`` keys of its own."""
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        login = client.post("/auth/login", json={"email": email, "password": PASSWORD})
        assert login.status_code == 200, login.text
        session = login.cookies.get("tg_session")
        assert session, login.headers
        headers = {"X-CSRF-Token": login.json()["csrf_token"], "Cookie": f"tg_session={session}"}
        client.cookies.clear()  # exactly the cookie above, whatever the jar would do with 127.0.0.1
        keys = []
        for index in range(count):
            made = client.post("/me/keys", json={"name": f"laptop-{index}", **key_limits}, headers=headers)
            assert made.status_code == 201, made.text
            keys.append(made.json())
    return keys


def new_person(gateway: Gateway, *, user_limits: dict[str, Any], key_limits: dict[str, Any]) -> Person:
    """A user with two personal keys, its personal tenant widened so the user level is what binds.

    Every limit is in place before the keys exist, so no replica can hold a stale copy of them: each replica
    reads a key, its user and its tenant from the database the first time it sees the key.
    """
    user_id, email, tenant_id = create_user(gateway, **user_limits)
    widen_tenant(gateway, tenant_id)
    return Person(user_id, tenant_id, personal_keys(gateway, email, 2, **key_limits))


def user_view(gateway: Gateway, person: Person) -> dict[str, Any]:
    with gateway.admin() as admin:
        response = admin.get(f"/admin/users/{person.id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def usage_of(gateway: Gateway, path: str) -> dict[str, Any]:
    with gateway.admin() as admin:
        response = admin.get(path)
    assert response.status_code == 200, response.text
    usage = response.json()["usage"]
    assert usage is not None, f"{path} has no limits"
    return dict(usage)


async def spread(replicas: list[Gateway], keys: list[str], count: int, body: bytes) -> list[tuple[str, httpx.Response]]:
    """``count`` concurrent chat calls, alternating the keys and cycling the replicas (every key meets every
    replica): ``(key, response)`` pairs in the order they were sent."""
    clients = [
        httpx.AsyncClient(base_url=g.v1, timeout=60, limits=httpx.Limits(max_connections=count)) for g in replicas
    ]
    try:
        plan = [(keys[i % len(keys)], clients[i % len(clients)]) for i in range(count)]
        calls = [
            client.post(
                "/chat/completions",
                content=body,
                headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            )
            for key, client in plan
        ]
        responses = await asyncio.gather(*calls)
        return [(key, response) for (key, _), response in zip(plan, responses, strict=True)]
    finally:
        for client in clients:
            await client.aclose()


def encoded(body: dict[str, Any]) -> bytes:
    """The exact bytes sent, so the test knows the prompt bound the gateway reserves (body bytes + 64)."""
    return json.dumps(body, separators=(",", ":")).encode()


async def settled(gateway: Gateway, person: Person, spent: float, deadline_s: float = 10.0) -> dict[str, Any]:
    """Poll the user's live usage until nothing is in flight and the spend reached ``spent``.

    Settles run just after each answer on the replica that made it, so they may land a moment after the client
    has every response."""
    deadline = time.monotonic() + deadline_s
    while True:
        usage = dict(user_view(gateway, person)["usage"])
        done = usage["in_flight"] == 0 and usage["reserved_usd"] == 0.0
        if (done and usage["spent_usd"] == pytest.approx(spent, abs=1e-12)) or time.monotonic() > deadline:
            return usage
        await asyncio.sleep(0.05)


async def test_user_rpm_exact_across_three_replicas_and_two_keys(replicas: list[Gateway]) -> None:
    """User rpm 7, each key rpm 6, the tenant roomy: 40 calls over two keys and three replicas admit exactly 7.

    Without the user scope each key would admit 6 (12 in all); with a user scope kept per replica, up to 21.
    """
    person = new_person(replicas[0], user_limits={"rpm": 7}, key_limits={"rpm": 6})
    secrets_of = [k["key"] for k in person.keys]
    results = await spread(replicas, secrets_of, 40, encoded(BODY))
    statuses = [response.status_code for _, response in results]
    assert statuses.count(200) == 7, statuses
    assert statuses.count(429) == 33, statuses
    per_key = {key: sum(r.status_code == 200 for k, r in results if k == key) for key in secrets_of}
    assert all(count <= 6 for count in per_key.values()), per_key
    errors = [response.json()["error"] for _, response in results if response.status_code == 429]
    assert all(e["code"] == "rate_limit_exceeded" for e in errors), errors
    # The key with fewer admissions (at most 3 of 7) was refused only by the user level.
    assert any(f"user:{person.id}: 7 requests per minute" in e["message"] for e in errors), errors
    assert not any(f"tenant:{person.tenant_id}" in e["message"] for e in errors), errors
    # Every replica reports the same shared counters: the admitted requests, counted once at every level.
    for gateway in replicas:
        assert user_view(gateway, person)["usage"]["requests"] == 7
    assert usage_of(replicas[1], f"/admin/tenants/{person.tenant_id}")["requests"] == 7
    key_requests = [usage_of(replicas[2], f"/admin/keys/{k['id']}")["requests"] for k in person.keys]
    assert sorted(key_requests) == sorted(per_key.values())


async def test_user_budget_exact_across_three_replicas_and_two_keys(replicas: list[Gateway]) -> None:
    """A user budget that fits exactly 5 reservations, two keys each allowed the whole budget, 24 calls.

    Each call reserves (body bytes + 64) prompt tokens and max_tokens output tokens; the mock generates exactly
    max_tokens words and counts a 4-token prompt, so a settle frees only the unused prompt tokens, under 10 %
    of the reservation. With the budget at 5.5 reservations, a 6th admission would need more than half a
    reservation freed, which 5 settles cannot free: exactly 5 are admitted however the calls interleave.
    """
    max_tokens, fits = 2000, 5
    body = encoded({**BODY, "max_tokens": max_tokens, "mock": {"chunks": max_tokens}})
    reserved_nano = (len(body) + TEMPLATE_ALLOWANCE) * INPUT_NANO + max_tokens * OUTPUT_NANO
    budget = (fits * reserved_nano + reserved_nano // 2) / 1e9
    user_id, email, tenant_id = create_user(replicas[2])
    patch_user(replicas[2], user_id, budget_usd=budget, budget_period="total")
    widen_tenant(replicas[2], tenant_id)
    # A replica that saw no request of these keys yet reads them (and the user's budget) from the database.
    person = Person(user_id, tenant_id, personal_keys(replicas[2], email, 2, budget_usd=budget))
    secrets_of = [k["key"] for k in person.keys]

    results = await spread(replicas, secrets_of, 24, body)
    admitted = [response for _, response in results if response.status_code == 200]
    refused = [response for _, response in results if response.status_code != 200]
    assert len(admitted) == fits, [r.status_code for _, r in results]
    assert {r.status_code for r in refused} == {429}
    errors = [r.json()["error"] for r in refused]
    assert all(e["code"] == "insufficient_quota" for e in errors), errors
    assert any(f"Budget for user:{person.id}" in e["message"] for e in errors), errors

    costs = []
    for response in admitted:
        usage = response.json()["usage"]
        assert usage["completion_tokens"] == max_tokens, usage  # the premise of "exactly 5" above
        costs.append(usage["prompt_tokens"] * INPUT_NANO + usage["completion_tokens"] * OUTPUT_NANO)
    assert all(2 * fits * cost > (2 * fits - 1) * reserved_nano for cost in costs), (costs, reserved_nano)
    spent = sum(costs) / 1e9

    usage = await settled(replicas[0], person, spent)
    assert usage["in_flight"] == 0 and usage["reserved_usd"] == 0.0, usage
    assert usage["spent_usd"] == pytest.approx(spent, abs=1e-12), "the user was not billed what was used"
    assert usage["spent_usd"] <= budget, "three replicas together overspent the user's budget"
    assert usage["requests"] == fits
    # The settles billed the tenant and each key too, the same amounts.
    assert usage_of(replicas[1], f"/admin/tenants/{person.tenant_id}")["spent_usd"] == pytest.approx(spent)
    key_spent = [usage_of(replicas[2], f"/admin/keys/{k['id']}")["spent_usd"] for k in person.keys]
    assert sum(key_spent) == pytest.approx(spent)
    # What is left is less than one reservation: refused for good, from any replica, with either key.
    for gateway, key in zip(replicas, [*secrets_of, secrets_of[0]], strict=True):
        response = httpx.post(
            f"{gateway.v1}/chat/completions",
            content=body,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            timeout=30,
        )
        assert response.status_code == 429, response.text
        assert response.headers["x-should-retry"] == "false"
        assert f"Budget for user:{person.id}" in response.json()["error"]["message"]


async def test_user_limit_patched_later_binds_on_every_replica(replicas: list[Gateway]) -> None:
    """Every replica has already cached both keys when the admin sets the user's rpm; once each replica shows
    the user's limit in its rate-limit headers, the user's rpm holds exactly across all of them."""
    person = new_person(replicas[0], user_limits={}, key_limits={})
    secrets_of = [k["key"] for k in person.keys]
    for _, response in await spread(replicas, secrets_of, 6, encoded(BODY)):  # each key on each replica
        assert response.status_code == 200, response.text
    patch_user(replicas[1], person.id, rpm=9)

    # Poll each replica until it answers with the user's limit. Only those answers count against the user (an
    # answer under the old settings has no user scope): exactly one per replica.
    counted = 0
    deadline = time.monotonic() + 10
    async with httpx.AsyncClient(timeout=30) as client:
        for index, gateway in enumerate(replicas):
            while True:
                response = await client.post(
                    f"{gateway.v1}/chat/completions",
                    json=BODY,
                    headers={"Authorization": f"Bearer {secrets_of[index % 2]}"},
                )
                assert response.status_code == 200, response.text
                if response.headers["x-ratelimit-limit-requests"] == "9":
                    counted += 1
                    break
                assert response.headers["x-ratelimit-limit-requests"] == str(ROOMY["rpm"])
                assert time.monotonic() < deadline, f"replica {index} still ignores the user's new rpm"
                await asyncio.sleep(0.05)
    assert counted == 3

    results = await spread(replicas, secrets_of, 30, encoded(BODY))
    statuses = [response.status_code for _, response in results]
    assert statuses.count(200) == 9 - counted, statuses
    assert set(statuses) == {200, 429}
    assert user_view(replicas[2], person)["usage"]["requests"] == 9
