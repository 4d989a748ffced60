"""The console's chat playground in a real browser: a reply streams in word by word (the mock upstream sends one
word per chunk, 60 ms apart here), with its tokens and cost; a refused key is replaced once, transparently."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import shoot
from tests.console_support import PASSWORD, console_gateway, fill_login_form
from tests.support import Gateway, Process, start_mock

# Records every distinct text of the last assistant message while it streams (set up before sending).
WATCH_REPLY = """() => {
  window.__replyTexts = [];
  const log = document.getElementById("pg-transcript");
  new MutationObserver(() => {
    const replies = log.querySelectorAll(".msg.assistant .msg-text");
    const text = replies.length ? replies[replies.length - 1].textContent : "";
    const seen = window.__replyTexts;
    if (text && seen[seen.length - 1] !== text) seen.push(text);
  }).observe(log, { childList: true, subtree: true, characterData: true });
}"""


@pytest.fixture(scope="module")
def slow_mock() -> Iterator[Process]:
    process = start_mock("--api-key", "upstream-secret-abc123", "--chunk-delay", "0.06")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def playground_gw(slow_mock: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with console_gateway(tmp_path_factory, "console-playground", slow_mock.port, TENANTGATE_SIGNUP="open") as gw:
        yield gw


def log_in(page: Page, gw: Gateway) -> str:
    """Sign up through the API, log in through the login page; the user's id."""
    email = f"pg-{uuid.uuid4().hex[:8]}@example.com"
    response = httpx.post(f"{gw.url}/auth/signup", json={"email": email, "password": PASSWORD}, timeout=30)
    assert response.status_code == 201, response.text
    page.goto(f"{gw.url}/console/playground")  # not logged in: the login page, then back here
    fill_login_form(page, email)
    expect(page).to_have_url(re.compile(r"/console/playground$"))
    return str(response.json()["user"]["id"])


def send(page: Page, text: str) -> None:
    page.get_by_label("Message").fill(text)
    page.get_by_role("button", name="Send").click()


def test_reply_streams_in_with_tokens_and_cost(page: Page, playground_gw: Gateway) -> None:
    log_in(page, playground_gw)
    expect(page.get_by_role("heading", name="Playground", level=1)).to_be_visible()
    page.get_by_label("Model").select_option("mock-gpt")
    page.evaluate(WATCH_REPLY)

    send(page, "tell me about gateways")
    transcript = page.get_by_role("log", name="Conversation")
    expect(transcript.locator(".msg.user")).to_have_text("tell me about gateways")
    reply = transcript.locator(".msg.assistant").last
    # The mock answers 8 words cycling through the prompt's words; mock-gpt costs $1 / $2 per million tokens.
    meta = reply.locator(".msg-meta")
    expect(meta).to_have_text(
        re.compile(r"^7 prompt \+ 8 completion tokens · \$0\.000023 · \d+\.\d s$"), timeout=15_000
    )
    words = "tell me about gateways tell me about gateways"
    expect(reply.locator(".msg-text")).to_have_text(words)
    texts = page.evaluate("window.__replyTexts")
    partial = [t for t in texts if t not in ("…", words)]
    assert len(partial) >= 3, f"the reply did not stream in: {texts}"  # it grew word by word
    assert all(words.startswith(t) for t in partial), texts
    expect(page.get_by_role("button", name="Send")).to_be_enabled()

    # A second turn carries the conversation: 7 + 11 (the reply) + 5 prompt tokens (3 per message, the mock counts).
    send(page, "and limits")
    expect(transcript.locator(".msg.assistant")).to_have_count(2)
    expect(transcript.locator(".msg.assistant").last.locator(".msg-meta")).to_contain_text(
        "23 prompt + 8 completion tokens", timeout=15_000
    )
    shoot(page, "playground")

    # The playground key is the user's one temporary key: revoked elsewhere, the next turn gets a new one.
    keys = page.evaluate("fetch('/me/keys').then((r) => r.json())")["data"]
    active = [key for key in keys if not key["revoked"]]
    assert [key["name"] for key in active] == ["Playground (console)"], keys
    status = page.evaluate(
        """(id) => fetch('/me/keys/' + id, {method: 'DELETE', headers: {'X-CSRF-Token': window.tenantgate.csrf()}})
        .then((r) => r.status)""",
        active[0]["id"],
    )
    assert status == 200
    send(page, "still there")
    expect(transcript.locator(".msg.assistant")).to_have_count(3)
    expect(transcript.locator(".msg.assistant").last.locator(".msg-meta")).to_contain_text(
        "completion tokens", timeout=15_000
    )
    expect(transcript.locator(".msg.error")).to_have_count(0)
    keys = page.evaluate("fetch('/me/keys').then((r) => r.json())")["data"]
    assert sum(1 for key in keys if not key["revoked"]) == 1, keys


def test_gateway_error_is_shown(page: Page, playground_gw: Gateway) -> None:
    """An error answer of the gateway (here: a spent budget) is shown in the transcript in its own words, and the
    message is back in the box to send again."""
    user_id = log_in(page, playground_gw)
    with playground_gw.admin() as admin:
        assert admin.patch(f"/admin/users/{user_id}", json={"budget_usd": 0}).status_code == 200
    send(page, "hello")
    error = page.get_by_role("log", name="Conversation").get_by_role("alert")
    expect(error).to_contain_text(re.compile("budget", re.IGNORECASE), timeout=15_000)
    expect(page.locator(".msg.assistant")).to_have_count(0)
    expect(page.get_by_label("Message")).to_have_value("hello")
    expect(page.get_by_role("button", name="Send")).to_be_enabled()
