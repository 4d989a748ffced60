"""Runs last (its folder sorts last): every log line the gateways wrote during this test session is searched
for secrets. No API key, admin key or upstream credential may appear, however it was used."""

from __future__ import annotations

import re

from tests.support import ADMIN_KEY, LOG_DIR

KNOWN_SECRETS = (
    ADMIN_KEY,
    "upstream-secret-abc123",
    "sk-upstream-very-secret-999",
    "sk-audit-secret-123",
    "sk-rotated-secret-456",
    "FormdevINF26-secret-key",
    "another-key-xyz",
)
FULL_KEY = re.compile(r"tg-[a-z0-9]{12}-[A-Za-z0-9]{43}")
# Session cookies, one-time link tokens (invite, reset, login) and passwords sent to /auth or the console.
PEOPLE_SECRETS = re.compile(
    r"tg_session=[A-Za-z0-9_-]{20,}|(?:token|invite)[=\":\s]+[A-Za-z0-9_-]{40,}|\"(?:new_|current_)?password\":\s*\"[^\"*]"
)


def test_no_secret_in_any_log_line() -> None:
    logs = sorted(LOG_DIR.glob("gateway-*.log"))
    assert len(logs) >= 5, "the suite should have produced gateway logs to search"
    lines = [line for path in logs for line in path.read_text(errors="replace").splitlines()]
    assert sum('"event": "request"' in line for line in lines) > 100, "access log lines are missing"
    for line in lines:
        for secret in KNOWN_SECRETS:
            assert secret not in line, f"secret in a log line: {line[:200]}"
        assert not FULL_KEY.search(line), f"an API key in a log line: {line[:200]}"
        assert not PEOPLE_SECRETS.search(line), f"a session, link token or password in a log line: {line[:200]}"
