"""Waiting for stream events: in-process wake-ups plus polling.

A request attached to a running stream asks for the next events and waits briefly when there are none yet.
When the owner relays in the same process, :class:`Signals` wakes the waiter at once; when it relays in another
process or replica, the waiter polls at a short interval. Both paths meet in :func:`wait_for_events`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING
from weakref import WeakValueDictionary

if TYPE_CHECKING:
    from tenantgate.idempotency.model import IdemScope

Reader = Callable[[], Awaitable[tuple[list[bytes], bool]]]


class Signals:
    """One :class:`asyncio.Event` per watched scope, fired (and forgotten) on every change.

    Entries are weak: once no waiter holds a scope's event it disappears, so scopes that never change again
    (a dead owner) leave nothing behind. Waiters take the event *before* reading, so a change between the read
    and the wait still wakes them.
    """

    def __init__(self) -> None:
        self._events: WeakValueDictionary[str, asyncio.Event] = WeakValueDictionary()

    def watch(self, key: str) -> asyncio.Event:
        event = self._events.get(key)
        if event is None:
            event = asyncio.Event()
            self._events[key] = event
        return event

    def notify(self, key: str) -> None:
        event = self._events.pop(key, None)
        if event is not None:
            event.set()


async def wait_for_events(
    read: Reader,
    signals: Signals,
    key: str,
    timeout: float,  # noqa: ASYNC109 - a long-poll wait, not a deadline
    poll_interval: float | None,
) -> tuple[list[bytes], bool]:
    """Return as soon as ``read`` yields events or reports the stream finished, or after ``timeout``.

    ``poll_interval`` None means every change is signalled in-process (the memory store), so no polling.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(timeout, 0.0)
    while True:
        wake = signals.watch(key)
        events, finished = await read()
        remaining = deadline - loop.time()
        if events or finished or remaining <= 0:
            return events, finished
        step = remaining if poll_interval is None else min(remaining, poll_interval)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(step):
                await wake.wait()


class WaitsForEvents:
    """``wait_events`` for every store: read what is there, else sleep on the in-process signal (and, for
    stores other processes write to, poll every ``_poll`` seconds) until events arrive or the time is up."""

    _signals: Signals
    _poll: float | None = None

    async def read_events(self, scope: IdemScope, start: int, *, owner: str | None = None) -> tuple[list[bytes], bool]:
        raise NotImplementedError

    async def wait_events(
        self,
        scope: IdemScope,
        start: int,
        timeout: float,  # noqa: ASYNC109 - a long-poll wait, not a deadline
        *,
        owner: str | None = None,
    ) -> tuple[list[bytes], bool]:
        async def read() -> tuple[list[bytes], bool]:
            return await self.read_events(scope, start, owner=owner)

        return await wait_for_events(read, self._signals, scope.storage_key(), timeout, self._poll)
