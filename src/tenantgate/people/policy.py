"""Sign-up modes and the shape of an email address.

``closed``: only admins create users. ``invite``: a single-use invite is required. ``open``: anyone.
``domain:a.org,b.com``: anyone whose address is in one of the listed domains. An invite works in every mode
(it is the admin's say-so); without one, the new user gets a personal tenant with the configured limits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

from tenantgate.admin.schemas import text_problem
from tenantgate.core.errors import InvalidRequest

SignupMode = Literal["closed", "invite", "open", "domain"]
# Not RFC 5321's 254: the address also names the person's tenant and, as ``user:<email>``, the actor of audit
# entries and the maker of invites, all 200-character columns (PostgreSQL refuses longer values).
MAX_EMAIL_LENGTH: Final = 195
# Deliberately loose (one @, a dotted domain, no spaces or controls): the address is an identifier here, and
# nothing is mailed to it unless SMTP is configured.
_EMAIL: Final = re.compile(r"^[^\s@\x00-\x1f\x7f]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+$")
_DOMAIN: Final = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9-]+)+$")


def normal_email(value: str) -> str:
    """The address lower-cased and stripped, or a 400 naming ``email``. Like every name shown to people, it holds
    no control characters (C1 included) nor bidirectional overrides, which would disguise it."""
    email = value.strip().lower()
    if len(email) > MAX_EMAIL_LENGTH or not _EMAIL.match(email) or text_problem(email, MAX_EMAIL_LENGTH):
        raise InvalidRequest("email is not a valid email address.", param="email", code="invalid_email")
    return email


@dataclass(frozen=True, slots=True)
class SignupPolicy:
    mode: SignupMode
    domains: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, text: str) -> SignupPolicy:
        """``closed``, ``invite``, ``open`` or ``domain:example.org,example.com``; ValueError otherwise."""
        mode, _, rest = text.strip().partition(":")
        mode = mode.strip().lower()
        if mode in ("closed", "invite", "open"):
            if rest:
                raise ValueError(f"sign-up mode {mode!r} takes no domains")
            return cls(mode)  # type: ignore[arg-type]
        if mode == "domain":
            domains = frozenset(part.strip().lower().lstrip("@") for part in rest.split(",") if part.strip())
            bad = sorted(domain for domain in domains if not _DOMAIN.match(domain))
            if not domains or bad:
                raise ValueError("domain sign-up needs a list of domains, e.g. domain:example.org,example.com")
            return cls("domain", domains)
        raise ValueError("sign-up mode must be closed, invite, open or domain:<domains>")

    def describe(self) -> str:
        return f"domain:{','.join(sorted(self.domains))}" if self.mode == "domain" else self.mode

    def allows_without_invite(self, email: str) -> bool:
        if self.mode == "open":
            return True
        if self.mode == "domain":
            return email.rpartition("@")[2] in self.domains
        return False
