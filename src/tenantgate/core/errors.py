"""One error hierarchy for the whole gateway.

Every failure a client can see is a ``GatewayError``: it carries the HTTP status, the OpenAI error ``type`` and
``code``, and the ``param`` at fault. The edge turns it into an OpenAI-shaped JSON body in exactly one place
(:func:`tenantgate.edge.responses.error_response`), so no other module formats errors.
"""

from __future__ import annotations

from typing import Any

import orjson


class GatewayError(Exception):
    """An error that maps to one HTTP response with an OpenAI-shaped body."""

    status: int = 500
    type: str = "api_error"
    code: str | None = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers: dict[str, str] = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def body_bytes(self) -> bytes:
        return orjson.dumps(self.body())


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class AuthenticationFailed(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class Forbidden(GatewayError):
    """Authenticated, but the caller's role does not allow this (another tenant's things answer 404 instead)."""

    status = 403
    type = "permission_error"
    code = "forbidden"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class Conflict(GatewayError):
    status = 409
    type = "invalid_request_error"
    code = "conflict"


class RateLimited(GatewayError):
    """A limit refused the request (rpm, tpm, concurrency) or a budget is spent (``insufficient_quota``)."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"
    limit_kind: str | None = None  # rpm, tpm, concurrency or budget, for metrics


class UpstreamError(GatewayError):
    """The backend failed (connect error, 5xx, broken stream). Never carries the backend's body or secrets."""

    status = 502
    type = "api_error"
    code = "upstream_error"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class ServiceUnavailable(GatewayError):
    status = 503
    type = "api_error"
    code = "service_unavailable"
