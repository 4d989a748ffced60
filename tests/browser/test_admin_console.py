"""The platform-admin console in a real browser (Debian's Chromium through Playwright's sync API).

The hard requirement: an admin registers a backend in the console, pointing at the mock upstream, and watches
its health badge turn healthy without reloading the page (htmx polls a partial every 2 s; the gateway probes
every 0.5 s here). Also: no CSP violation or console error on any admin page, the one-time link of a new user
with its copy button, sorting and filtering, confirm dialogs, and the README screenshots in both themes.
"""

from __future__ import annotations

import asyncio
import random
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import ConsoleMessage, Page, expect

from tests.browser.conftest import shoot
from tests.console_support import ADMIN_PAGES, FAST_HEALTH_CHECKS, PASSWORD, admin_api, console_gateway, fill_login_form
from tests.support import Gateway, Process

ADMIN_EMAIL = "ops@tenantgate.example"
UPSTREAM_KEY = "upstream-secret-abc123"


@dataclass
class World:
    gw: Gateway
    mock: Process
    tenants: dict[str, dict[str, Any]]


def seed_history(database_url: str, keys: list[tuple[str, str]]) -> None:
    """Thirty days of usage for the charts (written straight to the ledger, in a thread: the sync Playwright
    API keeps an event loop marked running on this one)."""
    from tenantgate.storage.database import create_engine
    from tenantgate.storage.rows import UsageRecord
    from tenantgate.storage.usage import UsageRepo

    rng = random.Random(7)
    now = datetime.now(UTC)
    records = []
    models = (("mock-gpt", 3e-6), ("mock-small", 1e-6), ("gpt-public", 7e-6))
    for day in range(29, 0, -1):
        for (tenant_id, key_id), weight in zip(keys, (1.0, 0.6, 0.3), strict=True):
            for n in range(int(rng.randint(4, 12) * weight * (1.5 if day % 7 in (2, 3) else 1)) + 1):
                model, price = rng.choice(models)
                prompt, completion = rng.randint(200, 2400), rng.randint(50, 900)
                records.append(
                    UsageRecord(
                        f"seed-{day}-{key_id}-{n}",
                        now - timedelta(days=day, minutes=rng.randint(0, 600)),
                        tenant_id,
                        key_id,
                        "chat/completions",
                        model,
                        "mock-a",
                        prompt,
                        completion,
                        (prompt + completion) * price,
                        200 if rng.random() > 0.03 else 502,
                        rng.uniform(80, 900),
                        None,
                        False,
                        False,
                    )
                )

    async def write() -> None:
        engine = create_engine(database_url)
        try:
            await UsageRepo(engine).insert_many(records)
        finally:
            await engine.dispose()

    worker = threading.Thread(target=asyncio.run, args=(write(),))
    worker.start()
    worker.join(60)


@pytest.fixture(scope="module")
def world(mock: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with console_gateway(
        tmp_path_factory,
        "admin-console",
        mock.port,
        config_extra=FAST_HEALTH_CHECKS,
        TENANTGATE_LOGIN_MAX_FAILURES_PER_ADDRESS="100000",
    ) as gw:
        tenants: dict[str, dict[str, Any]] = {}
        with gw.admin() as client:

            def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
                answer = client.post(path, json=body)
                assert answer.status_code == 201, answer.text
                return dict(answer.json())

            post("/admin/users", {"email": ADMIN_EMAIL, "password": PASSWORD, "is_admin": True, "name": "Ops"})
            limits = (
                {"rpm": 600, "tpm": 400_000, "budget_usd": 250.0, "budget_period": "monthly"},
                {"rpm": 120, "max_concurrency": 8, "budget_usd": 40.0, "budget_period": "weekly"},
                {},
            )
            for name, extra in zip(("Acme Research", "Globex Labs", "Initech"), limits, strict=True):
                tenants[name] = post("/admin/tenants", {"name": name, **extra})
                tenants[name]["key"] = post("/admin/keys", {"tenant_id": tenants[name]["id"], "name": "production"})
            people = (
                ("ada@acme.example", "Ada Lovelace", "Acme Research", "owner"),
                ("grace@globex.example", "Grace Hopper", "Globex Labs", "admin"),
                ("linus@initech.example", "Linus T.", "Initech", "member"),
            )
            for email, name, tenant, role in people:
                body = {"email": email, "name": name, "password": PASSWORD, "tenant_id": tenants[tenant]["id"]}
                post("/admin/users", body | {"role": role, "rpm": 60})
            disabled = post("/admin/users", {"email": "mallory@example.com", "password": PASSWORD})
            assert client.patch(f"/admin/users/{disabled['id']}", json={"disabled": True}).status_code == 200
            post("/admin/invites", {"email": "new.hire@acme.example", "tenant_id": tenants["Acme Research"]["id"]})
            post("/admin/invites", {})
        seed_history(gw.database_url, [(t["id"], t["key"]["id"]) for t in tenants.values()])
        for tenant in tenants.values():  # and some traffic of today, through the gateway
            with httpx.Client(base_url=gw.v1, headers={"Authorization": f"Bearer {tenant['key']['key']}"}) as v1:
                for model in ("mock-gpt", "mock-small"):
                    body = {"model": model, "messages": [{"role": "user", "content": "hello"}]}
                    assert v1.post("/chat/completions", json=body, timeout=30).status_code == 200
        yield World(gw, mock, tenants)


def log_in(page: Page, world: World) -> None:
    page.goto(f"{world.gw.url}/console/login")
    fill_login_form(page, ADMIN_EMAIL)
    expect(page.get_by_role("button", name="Log out")).to_be_visible()


@pytest.fixture()
def problems(page: Page) -> list[str]:
    """CSP violations (seen by the page itself) and console errors or warnings, collected for every page."""
    found: list[str] = []
    page.add_init_script(
        "document.addEventListener('securitypolicyviolation', function (e) {"
        " (window.__csp = window.__csp || []).push(e.violatedDirective + ' ' + e.blockedURI); });"
    )

    def on_console(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            found.append(f"console {message.type}: {message.text} ({page.url})")

    page.on("console", on_console)
    page.on("pageerror", lambda error: found.append(f"page error: {error} ({page.url})"))
    return found


def csp_violations(page: Page) -> list[str]:
    return list(page.evaluate("window.__csp || []"))


def test_admin_registers_a_backend_and_watches_it_turn_healthy_live(
    page: Page, world: World, problems: list[str]
) -> None:
    log_in(page, world)
    page.get_by_role("link", name="Backends", exact=True).click()
    expect(page.get_by_role("heading", name="Backends")).to_be_visible()

    form = page.locator("#new-backend")
    form.get_by_label("Name").fill("console-backend")
    form.get_by_label("Base URL").fill(f"http://127.0.0.1:{world.mock.port}/v1")
    form.get_by_label("API key").fill(UPSTREAM_KEY)
    form.get_by_label("Models").fill("console-model, console-model-mini")
    form.get_by_label("Weight").fill("2")
    form.get_by_role("button", name="Register backend").click()
    expect(page.get_by_role("status")).to_contain_text("Backend registered")
    assert UPSTREAM_KEY not in page.content()

    page.evaluate("window.__sameDocument = true")  # gone if the page reloads
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name="console-backend"))
    expect(row).to_have_count(1)
    state = row.locator("td").nth(3).locator(".badge")
    first_seen = state.inner_text()
    expect(state).to_have_text("healthy", timeout=15_000)
    expect(row.locator("td").nth(4)).to_have_text(re.compile(r"^\d+\.\d$"))  # the probe's latency, in ms
    assert first_seen in ("unchecked", "healthy")

    # A change made elsewhere shows up live too: disable it through the admin API, then enable it again.
    backend_id = next(
        b["id"] for b in admin_api(world.gw, "GET", "/admin/backends")["data"] if b["name"] == "console-backend"
    )
    admin_api(world.gw, "PATCH", f"/admin/backends/{backend_id}", json={"enabled": False})
    expect(state).to_have_text("disabled", timeout=10_000)
    admin_api(world.gw, "PATCH", f"/admin/backends/{backend_id}", json={"enabled": True})
    expect(state).to_have_text("healthy", timeout=10_000)
    assert page.evaluate("window.__sameDocument") is True, "the page reloaded"
    expect(page.get_by_text(re.compile(r"health as of \d\d:\d\d:\d\d UTC"))).to_be_visible()

    shoot(page, "admin-backends", full_page=True)
    assert not csp_violations(page)
    assert not problems, problems


def test_backend_edit_toggle_and_delete_with_confirm(page: Page, world: World, problems: list[str]) -> None:
    body = {"name": "doomed-backend", "base_url": f"http://127.0.0.1:{world.mock.port}/v1", "models": ["doomed"]}
    backend = admin_api(world.gw, "POST", "/admin/backends", json=body)
    log_in(page, world)
    page.goto(f"{world.gw.url}/console/admin/backends/{backend['id']}")
    page.get_by_label("Weight").fill("7")
    page.get_by_label("Models").fill("doomed, doomed-2")
    page.get_by_role("button", name="Save backend").click()
    expect(page.get_by_role("status")).to_have_text("Backend saved.")
    row = admin_api(world.gw, "GET", f"/admin/backends/{backend['id']}")
    assert row["weight"] == 7 and [m["name"] for m in row["models"]] == ["doomed", "doomed-2"]

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Disable backend").click()
    expect(page.get_by_role("status")).to_contain_text("Backend disabled")
    page.get_by_role("button", name="Enable backend").click()
    expect(page.get_by_role("status")).to_have_text("Backend enabled.")

    page.once("dialog", lambda dialog: dialog.dismiss())
    page.get_by_role("button", name="Remove backend").click()
    expect(page.get_by_role("heading", name="doomed-backend")).to_be_visible()  # dismissed: still there
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Remove backend").click()
    expect(page.get_by_role("status")).to_have_text("Backend removed.")
    expect(page.get_by_role("link", name="doomed-backend")).to_have_count(0)
    assert not csp_violations(page)
    assert not problems, problems


def test_no_csp_violation_or_console_error_on_any_admin_page(page: Page, world: World, problems: list[str]) -> None:
    log_in(page, world)
    tenant_id = world.tenants["Acme Research"]["id"]
    user_id = next(u["id"] for u in admin_api(world.gw, "GET", "/admin/users")["data"] if u["email"] == ADMIN_EMAIL)
    pages = [*ADMIN_PAGES, f"/console/admin/tenants/{tenant_id}", f"/console/admin/users/{user_id}"]
    pages += ["/console/admin/usage?group=tenant&measure=cost_usd", "/console/admin/usage?group=model"]
    for path in pages:
        page.goto(f"{world.gw.url}{path}")
        page.wait_for_load_state("networkidle")
        if path == "/console/admin/backends":
            page.wait_for_timeout(2500)  # at least one htmx poll and its swaps
        assert not csp_violations(page), (path, csp_violations(page))
    assert not problems, "\n".join(problems)


def test_tables_sort_and_filter(page: Page, world: World) -> None:
    log_in(page, world)
    page.goto(f"{world.gw.url}/console/admin/tenants")
    table = page.locator("#tenants-table")
    names = table.locator("tbody tr td:first-child")
    page.get_by_role("button", name=re.compile(r"^Name\b")).click()
    expect(page.get_by_role("columnheader", name=re.compile(r"^Name\b"))).to_have_attribute("aria-sort", "ascending")
    ascending = names.all_inner_texts()
    assert ascending == sorted(ascending, key=str.lower)
    page.get_by_role("button", name=re.compile(r"^Name\b")).click()
    assert names.all_inner_texts() == ascending[::-1]
    page.get_by_label("Filter tenants").fill("globex")
    expect(table.locator("tbody tr:visible")).to_have_count(1)
    page.get_by_label("Filter tenants").fill("no such tenant")
    expect(table.locator("tbody tr:visible")).to_have_count(0)
    expect(page.get_by_text("No tenant matches this filter.")).to_be_visible()


def test_new_user_without_password_gets_a_link_with_a_copy_button(
    page: Page, world: World, problems: list[str]
) -> None:
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    log_in(page, world)
    page.get_by_role("link", name="Users", exact=True).click()
    form = page.locator("#new-user")
    form.get_by_label("Email").fill("barbara@acme.example")
    form.get_by_label("Name").fill("Barbara Liskov")
    form.get_by_label("Tenant", exact=True).select_option(label="Acme Research")
    form.get_by_text("Limits (optional)").click()  # a closed <details>
    form.get_by_label("Requests per minute").fill("90")
    form.get_by_role("button", name="Create user").click()
    link = page.locator("#handover-url")
    expect(link).to_contain_text("/console/reset?token=")
    copy = page.locator("button[data-copy-target='#handover-url']")
    expect(copy).to_have_accessible_name("Copy link")
    copy.click()
    expect(copy).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == link.inner_text().strip()
    expect(page.get_by_role("link", name="barbara@acme.example")).to_be_visible()
    expect(copy).to_have_text("Copy link", timeout=3000)  # the label comes back
    page.evaluate("window.scrollTo(0, 0)")
    shoot(page, "admin-users", full_page=True)

    # the invite form answers with its link the same way
    invite = page.locator("#invites")
    invite.get_by_label("Email").fill("pat@globex.example")
    invite.get_by_label("Join tenant").select_option(label="Globex Labs")
    invite.get_by_role("button", name="Create invite").click()
    expect(page.locator("#handover-url")).to_contain_text("/console/signup?invite=")
    expect(page.get_by_role("cell", name="pat@globex.example", exact=True)).to_be_visible()
    assert not csp_violations(page)
    assert not problems, problems


def test_usage_analytics_chart(page: Page, world: World, problems: list[str]) -> None:
    log_in(page, world)
    page.get_by_role("link", name="Analytics").click()
    expect(page.get_by_role("heading", name="Usage analytics")).to_be_visible()
    canvas = page.locator("canvas[data-chart]")
    page.wait_for_function("() => window.Chart && Chart.getChart(document.querySelector('canvas[data-chart]'))")
    points = page.evaluate("Chart.getChart(document.querySelector('canvas[data-chart]')).data.labels.length")
    assert points == 30
    csv = page.get_by_role("link", name="Download CSV")
    assert "format=csv" in (csv.get_attribute("href") or "")
    expect(canvas).to_have_attribute("role", "img")
    page.wait_for_timeout(400)  # the chart's own 300 ms animation
    shoot(page, "admin-usage", full_page=True)

    page.get_by_label("Group by").select_option(label="Tenant")
    page.get_by_label("Chart", exact=True).select_option(label="Cost (USD)")
    page.get_by_role("button", name="Show", exact=True).click()
    expect(page.get_by_role("heading", name="Cost (USD) by tenant")).to_be_visible()
    expect(page.get_by_role("link", name="Acme Research")).to_be_visible()
    page.wait_for_function("() => window.Chart && Chart.getChart(document.querySelector('canvas[data-chart]'))")
    assert not csp_violations(page)
    assert not problems, problems


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_pages_in_both_themes(page: Page, world: World, scheme: str, tmp_path: Path) -> None:
    """Screenshots of the main pages in each theme, for a human to look at (kept under the test's tmp dir)."""
    page.emulate_media(color_scheme="dark" if scheme == "dark" else "light")
    log_in(page, world)
    for path in ("/console/admin/backends", "/console/admin/usage", "/console/admin/users", "/console/admin/settings"):
        page.goto(f"{world.gw.url}{path}")
        page.wait_for_load_state("networkidle")
        page.wait_for_timeout(400)
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        dark = background in ("rgb(15, 18, 24)",)
        assert dark == (scheme == "dark"), (path, background)
        name = path.rsplit("/", 1)[-1]
        page.screenshot(path=str(tmp_path / f"{name}-{scheme}.png"), full_page=True)
    print(f"theme screenshots: {tmp_path}")
