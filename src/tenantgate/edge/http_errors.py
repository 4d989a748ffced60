"""HTTP plumbing shared by every route: request ids on every response and OpenAI-shaped errors for
framework-level failures (unknown paths, wrong methods, admin validation errors, anything unexpected)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tenantgate.core.errors import GatewayError, InvalidRequest, NotFound
from tenantgate.edge.pipeline import new_request_id
from tenantgate.edge.responses import error_response

log = logging.getLogger("tenantgate")


class RequestIdMiddleware:
    """Gives every response an ``x-request-id`` (the /v1 handlers set their own; this covers the rest)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.setdefault("headers", [])
                if not any(name == b"x-request-id" for name, _ in headers):
                    headers.append((b"x-request-id", new_request_id().encode()))
            await send(message)

        await self.app(scope, receive, send_with_id)


def install_error_handlers(app: FastAPI) -> None:
    async def gateway_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, GatewayError)
        return error_response(exc, new_request_id())

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            error: GatewayError = NotFound(f"Unknown path: {request.url.path}", code="unknown_url")
        else:
            error = GatewayError(str(exc.detail), status=exc.status_code, code="http_error")
            error.type = "invalid_request_error"
        return error_response(error, new_request_id())

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(part) for part in first["loc"] if part != "body") or None
        message = f"{param}: {first['msg']}" if param else str(first["msg"])
        return error_response(InvalidRequest(message, param=param, code="invalid_value"), new_request_id())

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error", exc_info=exc)
        return error_response(GatewayError("The gateway had an internal error."), new_request_id())

    app.add_exception_handler(GatewayError, gateway_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected)
