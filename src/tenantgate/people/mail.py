"""Optional mail: when ``TENANTGATE_SMTP_URL`` is set, password reset links are also mailed to the user.

``smtp://user:pass@host:port`` (STARTTLS when the server offers it) or ``smtps://…`` (TLS from the start). Sent
from a worker thread with a timeout; a failure is logged (without the link) and never fails the admin call.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

log = logging.getLogger("tenantgate.people")


def smtp_mailer(url: str, sender: str, timeout: float = 10.0) -> Callable[[str, str, str], Awaitable[None]]:
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ValueError("TENANTGATE_SMTP_URL must look like smtp://user:pass@host:port or smtps://…")
    host, port = parts.hostname, parts.port or (465 if parts.scheme == "smtps" else 25)
    user, password = unquote(parts.username or ""), unquote(parts.password or "")

    def send(to: str, subject: str, body: str) -> None:
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = sender, to, subject
        message.set_content(body, cte="7bit")  # a link stays one intact line (no quoted-printable)
        context = ssl.create_default_context()
        client: smtplib.SMTP
        if parts.scheme == "smtps":
            client = smtplib.SMTP_SSL(host, port, timeout=timeout, context=context)
        else:
            client = smtplib.SMTP(host, port, timeout=timeout)
        with client:
            if parts.scheme == "smtp" and client.has_extn("starttls"):
                client.starttls(context=context)
            if user:
                client.login(user, password)
            client.send_message(message)

    async def mail(to: str, subject: str, body: str) -> None:
        try:
            await asyncio.to_thread(send, to, subject, body)
        except (OSError, smtplib.SMTPException) as exc:
            log.warning("mail to a user failed: %s", type(exc).__name__)

    return mail
