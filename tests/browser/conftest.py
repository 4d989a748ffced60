"""Real-browser fixtures: Debian's Chromium driven by the sync Playwright API.

Playwright never downloads a browser here (``playwright install`` cannot reach its CDN): the tests use the
system ``chromium`` and fail loudly when it is missing, so a machine without it cannot pass by skipping.

Asyncio: the suite runs pytest-asyncio in auto mode with one session-wide event loop. The sync Playwright API
runs its own event loop in a greenlet and marks that loop as *running* on the main thread between two sync
calls, for as long as Playwright is alive. While it is, pytest-asyncio cannot run its loop: every async test or
async fixture fails with "Cannot run the event loop while another loop is running". Hence:

- browser tests are plain ``def`` tests (an ``async def`` test here is failed with a clear message), and they
  use no async fixture;
- Playwright and the browser are started once for this package (``tests/browser``), not for the session, and
  stopped when its last test is done, before pytest moves on to the async tests of the other packages.
"""

from __future__ import annotations

import inspect
import os
import re
import shutil
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

HERE = Path(__file__).resolve().parent
FAILURES_DIR = HERE / "failures"
# The README's pictures are rewritten only on request (TENANTGATE_SCREENSHOTS=1 make test), so a test run does not
# dirty the checkout; otherwise they land in the ignored failures folder's sibling, tests/browser/shots/.
SCREENSHOTS_DIR = (
    Path(__file__).resolve().parents[2] / "docs" / "screenshots"
    if os.environ.get("TENANTGATE_SCREENSHOTS") == "1"
    else Path(__file__).resolve().parent / "shots"
)
VIEWPORT = {"width": 1280, "height": 800}


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """One headless Chromium for all the browser tests (see the module docstring for why not session scope)."""
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail(
            "browser tests need Debian's Chromium on PATH: run `apt-get install -y chromium` "
            "(Playwright's own browser download does not work here)",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        # --disable-dev-shm-usage: containers often have a tiny /dev/shm, which crashes Chromium tabs.
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=["--disable-dev-shm-usage"]
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(autouse=True)
def _sync_tests_only(request: pytest.FixtureRequest) -> None:
    if inspect.iscoroutinefunction(request.function):
        pytest.fail(
            f"{request.node.nodeid}: browser tests must be plain `def` functions: the sync Playwright API "
            "cannot run inside pytest-asyncio's event loop",
            pytrace=False,
        )


@pytest.fixture()
def page(browser: Browser) -> Iterator[Page]:
    """A fresh page in a fresh context (no cookies or storage shared between tests), 1280x800, no base_url."""
    context = browser.new_context(viewport=VIEWPORT)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, None, None]:
    """When a test that uses ``page`` fails, keep a full-page screenshot in tests/browser/failures/."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    page = getattr(item, "funcargs", {}).get("page")
    if page is None or page.is_closed():
        return
    FAILURES_DIR.mkdir(parents=True, exist_ok=True)
    path = FAILURES_DIR / f"{_safe_name(item.name)}.png"
    try:
        page.screenshot(path=str(path), full_page=True)
    except Exception as exc:  # a screenshot must never hide the test's own failure
        report.sections.append(("failure screenshot", f"could not save {path}: {exc!r}"))
    else:
        report.sections.append(("failure screenshot", str(path)))


def shoot(page: Page, name: str, *, full_page: bool = False) -> Path:
    """Save a screenshot of ``page`` as <name>.png (docs/screenshots/ with TENANTGATE_SCREENSHOTS=1, the README's
    pictures) and return its path."""
    SCREENSHOTS_DIR.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS_DIR / f"{_safe_name(name)}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "screenshot"
