"""Password hashing with Argon2id, off the event loop and bounded.

Hashing is deliberately slow (tens of milliseconds and ~19 MiB per call), so it runs in worker threads, at most
``max_parallel`` at a time: a flood of logins queues instead of stalling the gateway or exhausting memory.
Passwords longer than ``MAX_LENGTH`` characters are refused before any hashing. One :class:`Passwords` is built
per process by the app factory (the CLI builds its own).
"""

from __future__ import annotations

import asyncio
from typing import Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MAX_LENGTH: Final = 1024


def password_problem(password: str, min_length: int) -> str | None:
    """Why ``password`` cannot be used, or None."""
    if len(password) < min_length:
        return f"must be at least {min_length} characters"
    if len(password) > MAX_LENGTH:
        return f"must be at most {MAX_LENGTH} characters"
    if password.strip() == "":
        return "must not be blank"
    return None


class Passwords:
    def __init__(self, *, max_parallel: int = 2) -> None:
        # OWASP's minimum for Argon2id: 19 MiB, 2 iterations, 1 lane.
        self._hasher = PasswordHasher(time_cost=2, memory_cost=19_456, parallelism=1)
        self._slots = asyncio.Semaphore(max_parallel)
        # Verified against when the email is unknown, so a login takes as long whether or not the account exists.
        # Made on first need (in a worker thread): hashing at start would cost every process 19 MiB of peak RSS.
        self._dummy_hash: str | None = None

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self._hasher.hash, password)

    def _verify(self, stored: str | None, password: str) -> bool:
        if stored is None and self._dummy_hash is None:
            self._dummy_hash = self._hasher.hash("not a password of anyone")
        try:
            return self._hasher.verify(stored or self._dummy_hash or "", password) and stored is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    async def verify(self, stored: str | None, password: str) -> bool:
        """Whether ``password`` matches ``stored``; with no stored hash, spends the same time and says no."""
        if len(password) > MAX_LENGTH:
            return False
        async with self._slots:
            return await asyncio.to_thread(self._verify, stored, password)
