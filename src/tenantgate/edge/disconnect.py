"""Noticing a client that leaves while the gateway waits on the upstream, before any answer is sent.

ASGI servers only report a disconnect to whoever calls ``receive``; a handler busy awaiting the upstream never
does, so a client that gave up on a long non-streamed request used to leave the upstream call and its
concurrency slot busy until the backend finished, and the request was recorded as a success. The watch reads
``receive`` in a small task while it is armed (from the reservation to the moment the upstream answered)
and cancels the handler when the client goes. The pipeline meters the cancellation as 499 and
releases everything in its ``finally`` blocks. Once disarmed it can no longer cancel anything, so the answer
path after the upstream responded is never interrupted half-way.
"""

from __future__ import annotations

import asyncio

from starlette.types import Receive


class DisconnectWatch:
    __slots__ = ("_receive", "_task", "_watcher", "fired")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._task: asyncio.Task[object] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self.fired = False

    def start(self) -> None:
        """Arm the watch; call once the whole request body has been read (``receive`` is free again).

        A client that left earlier is noticed at once: ``receive`` then reports the disconnect straight away."""
        self._task = asyncio.current_task()
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        if self._task is not None:
            self.fired = True
            self._task.cancel()

    def stop(self) -> None:
        """Disarm: from now on a disconnect is the response's business (streams watch it themselves)."""
        self._task = None
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None

    def absorb_cancel(self) -> None:
        """Undo the cancellation this watch caused, so the server sees a handler that simply returned."""
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            task.uncancel()
