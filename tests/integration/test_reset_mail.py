"""With ``TENANTGATE_SMTP_URL`` set, an admin's reset link is also mailed, to a real SMTP listener (a minimal
one in this file: it speaks just enough SMTP to receive a message), and the mailed link sets the password."""

from __future__ import annotations

import re
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import ADMIN_KEY, start_gateway


class _SMTPHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(b"220 sink ESMTP\r\n")
        data = False
        lines: list[bytes] = []
        for raw in self.rfile:
            if data:
                if raw in (b".\r\n", b".\n"):
                    self.server.messages.append(b"".join(lines).decode())  # type: ignore[attr-defined]
                    lines, data = [], False
                    self.wfile.write(b"250 queued\r\n")
                else:
                    lines.append(raw)
                continue
            verb = raw[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                self.wfile.write(b"250 sink\r\n")
            elif verb == b"DATA":
                data = True
                self.wfile.write(b"354 go on\r\n")
            elif verb == b"QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:  # MAIL, RCPT, RSET, NOOP
                self.wfile.write(b"250 ok\r\n")


class _Sink(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SMTPHandler)
        self.messages: list[str] = []


@pytest.fixture()
def sink() -> Iterator[_Sink]:
    server = _Sink()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_reset_link_is_mailed_and_works(tmp_path: Path, sink: _Sink) -> None:
    port = sink.server_address[1]
    gateway = start_gateway(
        f"sqlite+aiosqlite:///{tmp_path / 'mail.db'}",
        tmp_path,
        TENANTGATE_SMTP_URL=f"smtp://127.0.0.1:{port}",
        TENANTGATE_SMTP_FROM="gateway@example.org",
        TENANTGATE_PUBLIC_URL="https://gw.example.org",
    )
    try:
        with httpx.Client(base_url=gateway.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}) as admin:
            user = admin.post("/admin/users", json={"email": "mail@example.org"})
            assert user.status_code == 201, user.text
            handed = user.json()["reset"]
            assert handed["mailed"] is True and handed["url"].startswith("https://gw.example.org/console/reset?token=")
        assert len(sink.messages) == 1
        message = sink.messages[0]
        assert "To: mail@example.org" in message and "From: gateway@example.org" in message
        mailed = re.search(r"https://gw\.example\.org/console/reset\?token=([A-Za-z0-9_-]+)", message)
        assert mailed is not None and mailed.group(1) == handed["token"]
        with httpx.Client(base_url=gateway.url) as client:
            reset = client.post("/auth/reset", json={"token": mailed.group(1), "new_password": "mailed passphrase 1"})
            assert reset.status_code == 200
            login = client.post("/auth/login", json={"email": "mail@example.org", "password": "mailed passphrase 1"})
            assert login.status_code == 200
    finally:
        gateway.process.stop()
