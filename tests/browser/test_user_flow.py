"""The console's main path in a real browser: sign up, create a key, use it with the openai SDK, see the usage,
revoke the key (the SDK is refused), log out. Also takes the README's screenshots of these pages."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator

import openai
import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import shoot
from tests.console_support import PASSWORD, console_gateway
from tests.support import Gateway, Process

CHART_HAS_DATA = """(id) => {
  const canvas = document.getElementById(id);
  const chart = canvas && window.Chart && window.Chart.getChart(canvas);
  return !!chart && chart.data.datasets.some((d) => d.data.some((v) => v > 0));
}"""


@pytest.fixture(scope="module")
def open_gw(mock: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with console_gateway(tmp_path_factory, "console-flow", mock.port, TENANTGATE_SIGNUP="open") as gw:
        yield gw


def sign_up(page: Page, gw: Gateway, email: str, *, screenshot: bool = False) -> None:
    page.goto(f"{gw.url}/console/signup")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Name").fill("Ada Lovelace")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD)
    if screenshot:
        shoot(page, "signup")
    page.get_by_role("button", name="Sign up").click()
    expect(page).to_have_url(re.compile(r"/console/keys\?welcome=1$"))


def test_sign_up_key_sdk_usage_revoke_logout(page: Page, open_gw: Gateway) -> None:
    email = f"ada-{uuid.uuid4().hex[:8]}@example.com"
    sign_up(page, open_gw, email, screenshot=True)

    # Logged in, welcomed, nothing yet: the empty state says what to do.
    expect(page.get_by_role("heading", name="API keys", level=1)).to_be_visible()
    expect(page.get_by_role("status").filter(has_text="Welcome")).to_be_visible()
    expect(page.get_by_text("Create your first key below")).to_be_visible()
    expect(page.get_by_text(email)).to_be_visible()

    # Create a key (one model, a rate limit).
    page.get_by_label("Name", exact=True).fill("my laptop")
    page.get_by_label("mock-gpt", exact=True).check()
    page.get_by_label("Requests per minute").fill("60")
    page.get_by_role("button", name="Create key").click()
    expect(page.get_by_role("heading", name="Key created", level=1)).to_be_visible()
    secret = page.locator(".secret").inner_text().strip()
    assert re.fullmatch(r"tg-[a-z0-9]+-\S+", secret), secret
    python_example = page.locator("#snippet-python").inner_text()
    assert f'base_url="{open_gw.v1}"' in python_example and 'model="mock-gpt"' in python_example
    expect(page.get_by_role("button", name="Copy curl example")).to_be_visible()
    shoot(page, "key-created")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.get_by_role("button", name="Copy key").click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == secret

    # The secret is never shown again: the keys page lists the key by its prefix only.
    page.get_by_role("link", name="Back to your keys").click()
    row = page.locator("#keys tbody tr", has_text="my laptop")
    expect(row).to_contain_text("active")
    expect(row).to_contain_text("60 req/min")
    assert secret not in page.content()
    shoot(page, "keys")

    # Use it with the official SDK.
    client = openai.OpenAI(base_url=open_gw.v1, api_key=secret, max_retries=0, timeout=30)
    reply = client.chat.completions.create(model="mock-gpt", messages=[{"role": "user", "content": "hello there"}])
    assert reply.choices[0].message.content

    # My usage: the request is in the charts and in the recent requests.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Usage").click()
    expect(page.get_by_role("heading", name="My usage", level=1)).to_be_visible()
    recent = page.locator("#recent tbody tr", has_text="mock-gpt")
    expect(recent).to_have_count(1)
    expect(recent).to_contain_text("my laptop")
    expect(recent).to_contain_text("200")
    page.wait_for_function(CHART_HAS_DATA, arg="chart-day", timeout=10_000)
    page.wait_for_function(CHART_HAS_DATA, arg="chart-model", timeout=10_000)
    labels = page.evaluate("Chart.getChart(document.getElementById('chart-model')).data.labels")
    assert labels == ["mock-gpt"]
    expect(page.locator(".stat", has_text="Requests").locator(".stat-value")).to_have_text("1")
    page.wait_for_timeout(400)  # the charts' entry animation (300 ms), for the screenshot
    shoot(page, "usage", full_page=True)

    # Revoke it: the SDK is refused once this replica's key cache follows (it reloads at once here).
    page.get_by_role("link", name="Keys").click()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Revoke key my laptop").click()
    expect(page.get_by_role("status").filter(has_text="Key revoked")).to_be_visible()
    expect(page.locator("#keys tbody tr", has_text="my laptop")).to_contain_text("revoked")
    expect(page.get_by_role("button", name="Revoke key my laptop")).to_have_count(0)
    deadline = time.monotonic() + 5
    while True:
        try:
            client.chat.completions.create(model="mock-gpt", messages=[{"role": "user", "content": "again"}])
        except openai.AuthenticationError:
            break
        assert time.monotonic() < deadline, "the revoked key still works after 5 s"
        time.sleep(0.1)

    # Log out: back on the login page, and the console needs a login again.
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/console/login$"))
    page.goto(f"{open_gw.url}/console/keys")
    expect(page).to_have_url(re.compile(r"/console/login\?next=%2Fconsole%2Fkeys$"))


def test_create_key_error_keeps_the_form(page: Page, open_gw: Gateway) -> None:
    """A refused key (here: a budget above the largest allowed) re-renders the form with the message, values kept."""
    sign_up(page, open_gw, f"bob-{uuid.uuid4().hex[:8]}@example.com")
    page.get_by_label("Name", exact=True).fill("too fast")
    page.get_by_label("mock-small", exact=True).check()
    page.get_by_label("Tokens per minute").fill("999999999")
    page.get_by_label("Budget (USD)").fill("2000000000")  # above the largest budget allowed
    page.get_by_role("button", name="Create key").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("budget")
    expect(page.get_by_label("Name", exact=True)).to_have_value("too fast")
    expect(page.get_by_label("mock-small", exact=True)).to_be_checked()
    expect(page.get_by_label("Tokens per minute")).to_have_value("999999999")
    expect(page.get_by_text("You have no API keys yet")).to_be_visible()
