"""A thin ASGI front that sends the OpenAI routes straight to their handlers.

FastAPI serves the admin API, its docs and validation; its middleware and router are not free, and the
``/v1`` routes need none of it (they parse, validate and answer errors themselves). This front matches the
few hot paths by exact method and path and hands everything else, lifespan included, to the FastAPI app.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("tenantgate")


class FastPath:
    def __init__(self, app: FastAPI, routes: dict[tuple[str, str], ASGIApp]) -> None:
        self.app = app
        self._routes = routes

    @property
    def state(self) -> Any:
        return self.app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            handler = self._routes.get((scope["method"], scope["path"]))
            if handler is not None:
                await self._guarded(handler, scope, receive, send)
                return
        await self.app(scope, receive, send)

    @staticmethod
    async def _guarded(handler: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        """Last line of defence: the handlers answer their own errors (a :class:`ProxyEndpoint` turns anything
        unexpected before its response into an OpenAI-shaped 500), so this only logs what escapes them."""
        try:
            await handler(scope, receive, send)
        except Exception:
            log.exception("unhandled error on %s", scope["path"])
