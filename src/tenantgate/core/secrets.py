"""Secret handling: API key hashing, constant-time comparison and encryption of upstream credentials.

Client keys are random 256-bit secrets, so a single SHA-256 is the right hash (no need for a slow KDF: there is
nothing to brute-force). Upstream credentials must be recovered to be sent, so they are encrypted (Fernet,
AES-128-CBC + HMAC) with a key from ``TENANTGATE_SECRET_KEY`` or a generated key file.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import os
import re
import urllib.parse
from collections.abc import Iterable
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def same_secret(a: str, b: str) -> bool:
    """Compare two secrets in constant time."""
    return hmac.compare_digest(a.encode(), b.encode())


class Redacted(str):
    """A string whose ``repr`` hides its value, so it cannot leak through a log line or a traceback."""

    def __repr__(self) -> str:
        return "'***'"


class CredentialCipher:
    """Encrypts upstream credentials for storage; decrypts them when the routing catalog is built."""

    def __init__(self, key_material: str) -> None:
        digest = hashlib.sha256(key_material.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))

    @classmethod
    def from_settings(cls, secret_key: str | None, key_file: Path) -> CredentialCipher:
        if secret_key:
            return cls(secret_key)
        if key_file.exists():
            return cls(key_file.read_text().strip())
        material = base64.urlsafe_b64encode(os.urandom(32)).decode()
        try:
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another replica created it first
            return cls(key_file.read_text().strip())
        with os.fdopen(fd, "w") as handle:
            handle.write(material)
        return cls(material)

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> Redacted:
        try:
            return Redacted(self._fernet.decrypt(token.encode()).decode())
        except InvalidToken as exc:
            raise ValueError("stored credential cannot be decrypted: wrong TENANTGATE_SECRET_KEY?") from exc


# --- Scrubbing text that may carry credentials (relayed upstream errors, logs) ----------------------------------

MASK = "***"
# Key shapes masked anywhere; the named group is the part kept (a tg- key keeps its public id, which is not secret).
_KEY_SHAPES = re.compile(
    r"""
      (?P<keep>\btg-[a-z0-9]{1,64}-)[A-Za-z0-9]{4,}                      # tenantgate client keys
    | (?P<keep2>\bsk-)[A-Za-z0-9_\-]{8,}                                 # OpenAI sk-/sk-proj-, Anthropic sk-ant-
    | (?P<keep3>\b(?:AIza|gsk_|xai-|hf_|ghp_|gho_|ghs_|github_pat_|glpat-|r8_|AKIA|ASIA|pplx-|nvapi-))
      [A-Za-z0-9_\-]{12,}                                                 # other vendors' key prefixes
    | (?P<keep4>\beyJ)[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}   # JWTs
    | (?P<keep5>\b(?i:bearer)\s+)[^\s"',;<>\\]+                          # Authorization header values
    | (?P<keep7>\b(?i:basic)\s+)(?=[A-Za-z0-9+/]*(?:\d|[a-z][A-Z]|[+/]))[A-Za-z0-9+/]{8,}={0,2}
    | (?P<keep6>(?i:\b(?:x-)?api[_\- ]?key|\bapikey|\baccess[_\-]?token|\brefresh[_\-]?token|\bclient[_\-]?secret
                   |\bsecret|\bpassword|\bpasswd|\btoken|\bauthorization|\bcredentials?|\bkey)
                 \b(?:\s+(?:provided|is|was|of|for))?["']?\s*[:=]?\s*["']?)
      (?!tg-|sk-)[A-Za-z0-9+/_.~\-][A-Za-z0-9+/_.~=\-]{11,}               # a long value after a key-like word
    """,
    re.VERBOSE,
)
_KEEP_GROUPS = ("keep", "keep2", "keep3", "keep4", "keep5", "keep6", "keep7")
_MIN_EXACT = 4  # shorter configured secrets are not worth destroying every message for
_MIN_DERIVED = 6


def _mask_shape(match: re.Match[str]) -> str:
    for group in _KEEP_GROUPS:
        kept = match.group(group)
        if kept is not None:
            return kept + MASK
    return MASK


def _base64_fragments(raw: bytes) -> set[str]:
    """The base64 text any encoding of a string containing ``raw`` must contain, at each of the 3 byte alignments.

    ``base64("Bearer " + key)`` does not contain ``base64(key)``: the key's bytes start mid-group. Encoding the
    key behind 0, 1 and 2 filler bytes and keeping only the characters made entirely of the key's bits gives the
    three fragments one of which appears, whatever precedes the key.
    """
    found: set[str] = set()
    for offset in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(b"\0" * offset + raw).decode()
            start, end = -(-8 * offset // 6), 8 * (offset + len(raw)) // 6
            found.add(text[start:end])
    return found


@functools.lru_cache(maxsize=256)
def _known_pattern(known: tuple[str, ...]) -> re.Pattern[str] | None:
    variants: set[str] = set()
    for secret in known:
        if len(secret) < _MIN_EXACT:
            continue
        variants.add(secret)
        raw = secret.encode()
        derived = {
            urllib.parse.quote(secret, safe=""),
            urllib.parse.quote_plus(secret),
            json.dumps(secret)[1:-1],
            raw.hex(),
            raw.hex().upper(),
            *_base64_fragments(raw),
        }
        variants.update(v for v in derived if len(v) >= _MIN_DERIVED)
    if not variants:
        return None
    return re.compile("|".join(re.escape(v) for v in sorted(variants, key=len, reverse=True)))


def scrub(text: str, known_secrets: Iterable[str | None] = ()) -> str:
    """``text`` with credentials masked: each known secret (raw, URL-encoded, JSON-escaped, hex and base64, also
    inside a longer base64 string such as a Basic header), then anything shaped like a key (``tg-…``, ``sk-…``,
    ``Bearer …``, vendor prefixes, JWTs, a long value after ``api_key``/``authorization``/``token``-like words).

    Linear in ``len(text)``; the pattern for a set of known secrets is compiled once and cached.
    """
    if not text:
        return text
    known = tuple(sorted({s for s in known_secrets if s}))
    if known and (pattern := _known_pattern(known)) is not None:
        text = pattern.sub(MASK, text)
    return _KEY_SHAPES.sub(_mask_shape, text)
