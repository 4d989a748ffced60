"""Client API keys: ``tg-<public id>-<secret>``.

The public id finds the row; only ``sha256(secret)`` is stored, and the comparison is constant-time. The
plaintext key exists once, in the response that creates it.
"""

from __future__ import annotations

import re
import secrets
import string
from dataclasses import dataclass

from tenantgate.core.secrets import sha256_hex

PREFIX = "tg"
_ALPHABET = string.ascii_letters + string.digits
_PUBLIC_LEN = 12
_SECRET_LEN = 43  # 43 base62 characters carry 256 bits
# What a presented key may look like at all, checked before any cache or database lookup: visible ASCII, at
# most 256 characters (generated keys have 59; operator-chosen bootstrap keys must fit too, see key_from_plaintext).
MAX_KEY_LENGTH = 256
_WELL_FORMED = re.compile(rf"[\x21-\x7e]{{1,{MAX_KEY_LENGTH}}}")
# The tg- form: its public id is a cache and database key, so it is bounded as tightly as generated ids allow.
_TG_FORM = re.compile(r"tg-([a-z0-9]{1,32})-([A-Za-z0-9]{1,128})")


@dataclass(frozen=True, slots=True)
class NewKey:
    public_id: str
    secret_hash: str
    plaintext: str


def _random(length: int, alphabet: str = _ALPHABET) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def generate_key() -> NewKey:
    public_id = _random(_PUBLIC_LEN, string.ascii_lowercase + string.digits)
    secret = _random(_SECRET_LEN)
    return NewKey(public_id, sha256_hex(secret), f"{PREFIX}-{public_id}-{secret}")


def key_from_plaintext(plaintext: str) -> NewKey:
    """Turn an operator-chosen key (``TENANTGATE_BOOTSTRAP_KEYS``) into a stored key.

    A key already in ``tg-`` form keeps its public id; any other string gets a public id derived from its
    hash, so the same configured key maps to the same row on every start and every replica. A key that
    :func:`is_well_formed` would refuse is refused here, so a configured key can always be presented.
    """
    if not is_well_formed(plaintext):
        raise ValueError(f"a bootstrap key must be 1-{MAX_KEY_LENGTH} visible ASCII characters (no spaces)")
    parsed = parse_key(plaintext)
    if parsed is not None:
        return NewKey(parsed[0], sha256_hex(parsed[1]), plaintext)
    public_id = "b" + sha256_hex("public:" + plaintext)[: _PUBLIC_LEN - 1]
    return NewKey(public_id, sha256_hex(plaintext), plaintext)


def is_well_formed(presented: str) -> bool:
    """The cheap syntax check every presented key passes before any lookup (bounded length and charset)."""
    return len(presented) <= MAX_KEY_LENGTH and _WELL_FORMED.fullmatch(presented) is not None


def parse_key(presented: str) -> tuple[str, str] | None:
    """Split a presented key into (public id, secret); None when it is not in (strict) ``tg-`` form."""
    match = _TG_FORM.fullmatch(presented) if len(presented) <= MAX_KEY_LENGTH else None
    return None if match is None else (match.group(1), match.group(2))


def lookup_parts(presented: str) -> tuple[str, str]:
    """(public id, hash input) for any presented key, mirroring :func:`key_from_plaintext`."""
    parsed = parse_key(presented)
    if parsed is not None:
        return parsed
    return "b" + sha256_hex("public:" + presented)[: _PUBLIC_LEN - 1], presented
