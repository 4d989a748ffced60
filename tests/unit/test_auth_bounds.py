"""The authenticator's caches are keyed by client input: each is bounded, and malformed keys never reach them."""

from __future__ import annotations

import asyncio
import random
import string
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from tenantgate.auth.authenticator import Authenticator
from tenantgate.auth.keys import MAX_KEY_LENGTH, generate_key, is_well_formed, key_from_plaintext, lookup_parts
from tenantgate.core.errors import AuthenticationFailed
from tenantgate.storage.repos import KeyOwners, KeyRepo
from tenantgate.storage.rows import KeyRow, TenantRow

NOW = datetime(2025, 1, 1, tzinfo=UTC)
TENANT = TenantRow("t1", "tenant", NOW)


class CountingRepo:
    """Stands in for KeyRepo: knows some keys, counts every lookup, can hold lookups open."""

    def __init__(self, *plaintexts: str, delay: float = 0.0) -> None:
        self.rows: dict[str, KeyRow] = {}
        for i, plaintext in enumerate(plaintexts):
            new = key_from_plaintext(plaintext)
            self.rows[new.public_id] = KeyRow(
                f"k{i}", new.public_id, new.secret_hash, "t1", None, None, None, None, NOW
            )
        self.calls = 0
        self.running = self.max_running = 0
        self.delay = delay

    async def find_by_public_id(self, public_id: str) -> KeyOwners | None:
        self.calls += 1
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.running -= 1
        row = self.rows.get(public_id)
        return None if row is None else KeyOwners(row, TENANT)


def auth(repo: CountingRepo, **kwargs: Any) -> Authenticator:
    return Authenticator(cast(KeyRepo, repo), **kwargs)


def bogus(rng: random.Random) -> str:
    alnum = string.ascii_letters + string.digits
    public = "".join(rng.choice(string.ascii_lowercase + string.digits) for _ in range(12))
    return f"tg-{public}-{''.join(rng.choice(alnum) for _ in range(43))}"


MALFORMED = [
    "x" * (MAX_KEY_LENGTH + 1),
    "tg-" + "a" * 5000 + "-secret",
    "has space",
    "tab\there",
    "nul\x00byte",
    "clé-non-ascii",
    "emoji-🔑",
    "line\nbreak",
]


@pytest.mark.parametrize("presented", MALFORMED)
async def test_malformed_keys_are_refused_without_a_lookup_or_a_cache_entry(presented: str) -> None:
    repo = CountingRepo()
    authenticator = auth(repo)
    with pytest.raises(AuthenticationFailed) as info:
        await authenticator.authenticate(presented)
    assert info.value.status == 401
    assert repo.calls == 0 and authenticator.sizes == (0, 0, 0)


async def test_unique_bogus_keys_fill_only_a_bounded_negative_cache() -> None:
    valid = generate_key().plaintext
    repo = CountingRepo(valid)
    authenticator = auth(repo, max_entries=10, max_negative_entries=50)
    assert (await authenticator.authenticate(valid)).tenant_id == "t1"
    rng = random.Random(3)
    for _ in range(2_000):
        with pytest.raises(AuthenticationFailed):
            await authenticator.authenticate(bogus(rng))
    cached, negative, loading = authenticator.sizes
    assert cached <= 10 and negative == 50 and loading == 0
    before = repo.calls
    assert (await authenticator.authenticate(valid)).tenant_id == "t1"  # the flood did not evict the valid key
    assert repo.calls == before


async def test_a_repeated_bogus_key_is_looked_up_once_per_negative_ttl() -> None:
    repo = CountingRepo()
    authenticator = auth(repo, negative_ttl=60)
    key = bogus(random.Random(1))
    for _ in range(20):
        with pytest.raises(AuthenticationFailed):
            await authenticator.authenticate(key)
    assert repo.calls == 1


async def test_the_positive_cache_is_a_bounded_lru() -> None:
    keys = [generate_key().plaintext for _ in range(30)]
    repo = CountingRepo(*keys)
    authenticator = auth(repo, max_entries=5)
    for key in keys:
        await authenticator.authenticate(key)
    assert authenticator.sizes[0] == 5
    calls = repo.calls
    await authenticator.authenticate(keys[-1])  # most recent: still cached
    assert repo.calls == calls
    await authenticator.authenticate(keys[0])  # evicted long ago: read again, still valid
    assert repo.calls == calls + 1


async def test_concurrent_lookups_and_the_in_flight_map_are_bounded() -> None:
    repo = CountingRepo(delay=0.01)
    authenticator = auth(repo, max_lookups=4)
    rng = random.Random(5)
    seen_loading = 0

    async def one() -> None:
        nonlocal seen_loading
        seen_loading = max(seen_loading, authenticator.sizes[2])
        with pytest.raises(AuthenticationFailed):
            await authenticator.authenticate(bogus(rng))
        seen_loading = max(seen_loading, authenticator.sizes[2])

    await asyncio.gather(*(one() for _ in range(300)))
    assert repo.max_running <= 4
    assert seen_loading <= 16  # 4 * max_lookups
    assert authenticator.sizes[2] == 0


async def test_concurrent_requests_for_one_key_share_one_lookup() -> None:
    valid = generate_key().plaintext
    repo = CountingRepo(valid, delay=0.01)
    authenticator = auth(repo)
    principals = await asyncio.gather(*(authenticator.authenticate(valid) for _ in range(50)))
    assert {p.key_id for p in principals} == {"k0"} and repo.calls == 1


def test_operator_keys_keep_working_and_stay_bounded() -> None:
    for plaintext in ("key1", "FormdevINF26-secret-key", "another-key-xyz", "tg-Team-not_strict", "x" * 256):
        new = key_from_plaintext(plaintext)
        assert is_well_formed(plaintext)
        assert lookup_parts(plaintext)[0] == new.public_id  # the row bootstrap creates is the one looked up
        assert len(new.public_id) <= 32
    for bad in ("with space", "x" * 257, "naïve"):
        with pytest.raises(ValueError):
            key_from_plaintext(bad)


async def test_operator_keys_authenticate() -> None:
    repo = CountingRepo("key1", "tg-Team-not_strict")
    authenticator = auth(repo)
    assert (await authenticator.authenticate("key1")).key_id == "k0"
    assert (await authenticator.authenticate("tg-Team-not_strict")).key_id == "k1"
    with pytest.raises(AuthenticationFailed):
        await authenticator.authenticate("key2")
