"""The pure parts of idempotency: fingerprints, scope keys, the begin rule, follower state, wake-ups."""

from __future__ import annotations

import asyncio
import gc

import pytest

from tenantgate.idempotency import IdemScope, StreamLost, fingerprint, new_owner
from tenantgate.idempotency.model import DONE, RUNNING, RecordView, decide, follow_state
from tenantgate.idempotency.waiting import Signals, wait_for_events


def test_fingerprint_ignores_key_order_at_every_depth_but_not_values() -> None:
    a = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    b = {"stream": True, "messages": [{"content": "hi", "role": "user"}], "model": "m"}
    assert fingerprint(a) == fingerprint(b)
    assert len(fingerprint(a)) == 64
    assert fingerprint(a) != fingerprint({**a, "stream": False})
    assert fingerprint(a) != fingerprint({**a, "messages": [{"role": "user", "content": "hi "}]})
    assert fingerprint({"n": 1}) != fingerprint({"n": 1.0})  # 1 and 1.0 are different bodies


def test_storage_key_is_fixed_length_and_unambiguous() -> None:
    scope = IdemScope("ten", "key", "/v1/chat/completions", "k" * 10_000)
    assert len(scope.storage_key()) == 64
    assert scope.storage_key() == IdemScope("ten", "key", "/v1/chat/completions", "k" * 10_000).storage_key()
    assert IdemScope("a:b", "c", "e", "k").storage_key() != IdemScope("a", "b:c", "e", "k").storage_key()
    assert IdemScope("t", "k", "/v1/a", "x").storage_key() != IdemScope("t", "k", "/v1/b", "x").storage_key()


def test_owner_ids_are_unique() -> None:
    assert len({new_owner() for _ in range(100)}) == 100


@pytest.mark.parametrize(
    ("state", "fp", "lease_until", "expires_at", "expected"),
    [
        (DONE, "f", 0.0, 200.0, "replay"),
        (DONE, "g", 0.0, 200.0, "mismatch"),
        (DONE, "g", 0.0, 100.0, "takeover"),  # expired at exactly now: absent, whatever its body
        (RUNNING, "f", 101.0, 200.0, "in_progress"),
        (RUNNING, "g", 101.0, 200.0, "mismatch"),
        (RUNNING, "f", 100.0, 200.0, "takeover"),  # lease ends at now: expired
        (RUNNING, "g", 50.0, 200.0, "mismatch"),  # a dead owner's key stays bound to its body
        (RUNNING, "g", 50.0, 99.0, "takeover"),
    ],
)
def test_decide(state: str, fp: str, lease_until: float, expires_at: float, expected: str) -> None:
    assert decide(RecordView(fp, state, lease_until, expires_at), "f", 100.0) == expected


def test_decide_without_a_record_is_new() -> None:
    assert decide(None, "f", 100.0) == "new"


def test_follow_state() -> None:
    running = RecordView("f", RUNNING, 150.0, 200.0)
    assert follow_state(running, "a", "a", 100.0) is False
    assert follow_state(RecordView("f", DONE, 0.0, 200.0), None, "a", 100.0) is True
    for view, owner in ((None, None), (running, "b"), (RecordView("f", RUNNING, 90.0, 200.0), "a")):
        with pytest.raises(StreamLost):
            follow_state(view, owner, "a", 100.0)
    with pytest.raises(StreamLost):
        follow_state(RecordView("f", DONE, 0.0, 100.0), None, "a", 100.0)


async def test_signals_wake_waiters_and_forget_unwatched_scopes() -> None:
    signals = Signals()
    signals.notify("nobody")  # no waiter: nothing to do, nothing kept
    state: dict[str, list[bytes]] = {"events": []}

    async def read() -> tuple[list[bytes], bool]:
        return list(state["events"]), False

    waiter = asyncio.create_task(wait_for_events(read, signals, "s", 5.0, None))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    state["events"].append(b"e")
    signals.notify("s")
    assert await asyncio.wait_for(waiter, 1.0) == ([b"e"], False)
    state["events"].clear()
    assert await wait_for_events(read, signals, "dead-owner", 0.01, None) == ([], False)  # times out
    await asyncio.sleep(0)  # the cancelled wait is referenced until the task steps again
    gc.collect()
    assert len(signals._events) == 0  # a scope nobody notifies leaves no entry behind


async def test_wait_for_events_polls_when_nobody_signals() -> None:
    calls = 0

    async def read() -> tuple[list[bytes], bool]:
        nonlocal calls
        calls += 1
        return ([b"late"], False) if calls >= 3 else ([], False)

    events = await asyncio.wait_for(wait_for_events(read, Signals(), "s", 5.0, 0.01), 1.0)
    assert events == ([b"late"], False) and calls == 3
