"""Login throttling: failed logins per account and per client address (every test calls from 127.0.0.1)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.integration.people.helpers import (
    StartGateway,
    error_of,
    login,
    signup,
    stop_soon,
    try_login,
    unique_email,
    with_key,
)
from tests.support import Gateway

PER_ACCOUNT = 3
PER_ADDRESS = 4


@pytest.fixture(scope="module")
def account_gw(start_people_gateway: StartGateway) -> Iterator[Gateway]:
    gw = start_people_gateway(
        TENANTGATE_SIGNUP="open",
        TENANTGATE_LOGIN_MAX_FAILURES_PER_ACCOUNT=str(PER_ACCOUNT),
        TENANTGATE_LOGIN_MAX_FAILURES_PER_ADDRESS="100000",
    )
    yield gw
    stop_soon(gw)


@pytest.fixture(scope="module")
def address_gw(start_people_gateway: StartGateway) -> Iterator[Gateway]:
    gw = start_people_gateway(
        TENANTGATE_SIGNUP="open",
        TENANTGATE_LOGIN_MAX_FAILURES_PER_ACCOUNT="100000",
        TENANTGATE_LOGIN_MAX_FAILURES_PER_ADDRESS=str(PER_ADDRESS),
        TENANTGATE_LOGIN_THROTTLE_WINDOW_SECONDS="600",
    )
    yield gw
    stop_soon(gw)


def assert_throttled(response: httpx.Response, window: float) -> None:
    error_of(response, 429, "login_throttled")
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= window + 1, retry_after
    assert "set-cookie" not in response.headers


def test_failures_per_account_lock_even_the_right_password(account_gw: Gateway) -> None:
    victim = signup(account_gw)
    bystander = signup(account_gw)
    for _ in range(PER_ACCOUNT):
        error_of(try_login(account_gw, victim.email, "guessed-password"), 401, "invalid_credentials")
    assert_throttled(try_login(account_gw, victim.email), 900)
    assert_throttled(try_login(account_gw, victim.email.upper()), 900)  # the same account, however spelled
    assert victim.get("/me").status_code == 200  # open sessions are not affected
    assert login(account_gw, bystander.email).id == bystander.id  # another account from the same address


def test_unknown_accounts_are_throttled_alike(account_gw: Gateway) -> None:
    nobody = unique_email("nobody")
    for _ in range(PER_ACCOUNT):
        error_of(try_login(account_gw, nobody, "guessed-password"), 401, "invalid_credentials")
    assert_throttled(try_login(account_gw, nobody, "guessed-password"), 900)


def test_a_successful_login_clears_the_account_failures(account_gw: Gateway) -> None:
    person = signup(account_gw)
    for _ in range(2):
        for _ in range(PER_ACCOUNT - 1):
            error_of(try_login(account_gw, person.email, "guessed-password"), 401, "invalid_credentials")
        assert login(account_gw, person.email).id == person.id


def test_failures_per_address_lock_every_account_from_it(address_gw: Gateway) -> None:
    person = signup(address_gw)
    for _ in range(PER_ADDRESS):  # each on another account: only the address counts them together
        error_of(try_login(address_gw, unique_email("spray"), "guessed-password"), 401, "invalid_credentials")
    assert_throttled(try_login(address_gw, person.email), 600)
    assert_throttled(try_login(address_gw, unique_email("fresh")), 600)


def test_wrong_current_passwords_are_throttled_like_logins(account_gw: Gateway) -> None:
    """A stolen session cannot guess the account's password through the password change form."""
    person = signup(account_gw)
    change = {"current_password": "guessed-password", "new_password": "another long passphrase"}
    for _ in range(PER_ACCOUNT):
        error_of(person.post("/auth/password", json=change), 400, "wrong_password")
    right = {"current_password": person.password, "new_password": "another long passphrase"}
    assert_throttled(person.post("/auth/password", json=right), 900)
    assert_throttled(try_login(account_gw, person.email), 900)  # one count for both doors


def test_a_personal_key_cannot_change_the_password(account_gw: Gateway) -> None:
    person = signup(account_gw)
    key = person.new_key(name="scripts")["key"]
    body = {"current_password": person.password, "new_password": "another long passphrase"}
    response = with_key(account_gw, key, "POST", "/auth/password", json=body)
    error_of(response, 403, "session_required")
    assert login(account_gw, person.email).id == person.id  # the password did not change
