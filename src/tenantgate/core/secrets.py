"""Secret handling: API key hashing, constant-time comparison and encryption of upstream credentials.

Client keys are random 256-bit secrets, so a single SHA-256 is the right hash (no need for a slow KDF: there is
nothing to brute-force). Upstream credentials must be recovered to be sent, so they are encrypted (Fernet,
AES-128-CBC + HMAC) with a key from ``TENANTGATE_SECRET_KEY`` or a generated key file.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
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
