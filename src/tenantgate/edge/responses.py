"""Building responses: the one place a :class:`GatewayError` becomes an HTTP response, plus the stream response.

:class:`RelayResponse` is a small ASGI response that watches for the client going away while it waits on the
upstream: Starlette's ``StreamingResponse`` (ASGI 2.4) only notices a disconnect on its next write, which for a
stalled or slow upstream may be never. On disconnect the handler task is cancelled, so the upstream request is
dropped at once, and cleanup (metering, settling limits) always runs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from tenantgate.core.errors import GatewayError

JSON_TYPE = "application/json"


def error_response(error: GatewayError, request_id: str) -> Response:
    headers = {"x-request-id": request_id, **error.headers}
    return Response(error.body_bytes(), status_code=error.status, headers=headers, media_type=JSON_TYPE)


def json_response(body: bytes, request_id: str, status: int = 200, extra: dict[str, str] | None = None) -> Response:
    headers = {"x-request-id": request_id, **(extra or {})}
    return Response(body, status_code=status, headers=headers, media_type=JSON_TYPE)


class StreamRegistry:
    """The streams this process is relaying, so a drain can end the ones that outlive the grace period."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[object]] = set()
        self.expired = False

    def __len__(self) -> int:
        return len(self._tasks)

    def enter(self, task: asyncio.Task[object]) -> None:
        self._tasks.add(task)

    def leave(self, task: asyncio.Task[object]) -> None:
        self._tasks.discard(task)

    def expire_all(self) -> None:
        """End every stream now: each one sends an error event (no ``[DONE]``) and closes."""
        self.expired = True
        for task in list(self._tasks):
            task.cancel()


_DRAIN_EVENT = (
    b'data: {"error": {"message": "The gateway is shutting down and ended this stream.", '
    b'"type": "api_error", "param": null, "code": "draining"}}\n\n'
)


class RelayResponse:
    def __init__(
        self,
        events: AsyncIterator[bytes],
        on_close: Callable[[bool], Awaitable[None]],
        headers: dict[str, str],
        registry: StreamRegistry | None = None,
    ) -> None:
        self._events = events
        self._on_close = on_close
        self._registry = registry
        raw = {
            "content-type": "text/event-stream; charset=utf-8",
            "cache-control": "no-cache",
            "x-accel-buffering": "no",
            **headers,
        }
        self._headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in raw.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        disconnected = finished = False

        async def watch() -> None:
            nonlocal disconnected
            while (await receive())["type"] != "http.disconnect":
                pass
            if not finished:
                disconnected = True
                task.cancel()

        watcher = asyncio.create_task(watch())
        if self._registry is not None:
            self._registry.enter(task)
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self._headers})
            async for chunk in self._events:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            finished = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if disconnected:
                task.uncancel()
            elif self._registry is not None and self._registry.expired:
                task.uncancel()
                disconnected = await self._end_for_drain(send)
            else:
                raise
        except OSError:  # the client went away while we were writing
            disconnected = True
        finally:
            if self._registry is not None:
                self._registry.leave(task)
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            with contextlib.suppress(Exception):
                await self._events.aclose()  # type: ignore[attr-defined]
            await self._on_close(disconnected)

    @staticmethod
    async def _end_for_drain(send: Send) -> bool:
        """Tell the client in-band why its stream ends; True (billed as cut) whatever the client did."""
        with contextlib.suppress(OSError):
            await send({"type": "http.response.body", "body": _DRAIN_EVENT, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        return True
