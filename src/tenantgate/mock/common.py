"""The mock upstream's shared pieces: options, what it observed, OpenAI-shaped errors, SSE framing,
and the middleware that records every request (for ``/_mock/stats``)."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, fields
from typing import Any, NoReturn

import orjson
from aiohttp import web

Json = dict[str, Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_MODEL_CREATED = 1_700_000_000  # fixed so /v1/models is byte-for-byte stable
_SHUTDOWN_TIMEOUT = 1.0  # stalled requests never finish on their own; don't hold up cleanup for long


@dataclass
class MockOptions:
    """Process-wide defaults; every timing/shape knob can be overridden per request."""

    ttft: float = 0.0
    chunk_delay: float = 0.0
    chunks: int = 8
    models: tuple[str, ...] = ("mock-gpt", "mock-small", "mock-embed")
    api_key: str | None = None


@dataclass
class MockStats:
    """What the mock observed, so tests can assert on the gateway's behaviour from the far side."""

    requests: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    max_in_flight: int = 0
    completed: int = 0
    cancelled: int = 0  # the client went away before the mock finished
    aborted: int = 0  # the mock itself dropped the connection (die_after)
    last_headers: dict[str, str] = field(default_factory=dict)
    seen_authorization: list[str] = field(default_factory=list)
    last_body: Any = None

    def reset(self) -> None:
        """Forget history but keep ``in_flight``: requests still running will decrement it when they end."""
        in_flight = self.in_flight
        self.__init__()  # type: ignore[misc]
        self.in_flight = self.max_in_flight = in_flight

    def snapshot(self) -> Json:
        return {f.name: getattr(self, f.name) for f in fields(self)}


STATS_KEY = web.AppKey("tenantgate.mock.stats", MockStats)
FAULTS_KEY: web.AppKey[dict[str, Any]] = web.AppKey("tenantgate.mock.faults", dict)
OPTIONS_KEY = web.AppKey("tenantgate.mock.options", MockOptions)
_OUTCOME = web.RequestKey("tenantgate.mock.outcome", str)


class MockError(Exception):
    """An OpenAI-shaped error answer; raised anywhere in a handler and rendered by the middleware."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.headers = headers or {}

    def response(self) -> web.Response:
        if self.status == 429:
            kind = "rate_limit_error"
        elif self.status >= 500:
            kind = "server_error"
        else:
            kind = "invalid_request_error"  # OpenAI uses this for 400, 401 and 404 alike
        body = {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}
        return _json(body, status=self.status, headers=self.headers)


def _json(payload: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, headers=headers, content_type="application/json")


def _rand() -> str:
    return os.urandom(12).hex()


def _sse(payload: Json, event: str | None = None) -> bytes:
    data = b"data: " + orjson.dumps(payload) + b"\n\n"
    return b"event: " + event.encode() + b"\n" + data if event else data


async def _sleep(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)


async def _hang() -> NoReturn:
    """Wait until the client disconnects (aiohttp then cancels the handler)."""
    await asyncio.get_running_loop().create_future()
    raise AssertionError("unreachable")


@web.middleware
async def _observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Record every API request before anything can reject it, enforce the key, render errors."""
    path = request.path
    if path.startswith("/_mock/"):  # reading the stats must not disturb them
        return await handler(request)
    stats = request.app[STATS_KEY]
    stats.requests[path] += 1
    try:
        if path.startswith("/v1/"):
            stats.last_headers = {k.lower(): v for k, v in request.headers.items()}
            auth = request.headers.get("authorization")
            if auth is not None and auth not in stats.seen_authorization:
                stats.seen_authorization.append(auth)
            key = request.app[OPTIONS_KEY].api_key
            if key is not None and auth != f"Bearer {key}":
                raise MockError(401, "Incorrect API key provided.", code="invalid_api_key")
        return await handler(request)
    except MockError as exc:
        return exc.response()
    except web.HTTPException as exc:  # router 404/405: keep every error body OpenAI-shaped
        if exc.status < 400:
            raise
        code = "not_found" if exc.status == 404 else None
        return MockError(exc.status, f"{request.method} {path}: {exc.reason}", code=code).response()


def _tracked(handler: Handler) -> Handler:
    """Count concurrency and outcomes of an inference request; a cancelled handler means the client left."""

    async def wrapper(request: web.Request) -> web.StreamResponse:
        stats = request.app[STATS_KEY]
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        try:
            response = await handler(request)
        except asyncio.CancelledError:
            stats.cancelled += 1
            raise
        except Exception:
            stats.completed += 1  # an error answer is still a request the mock finished
            raise
        finally:
            stats.in_flight -= 1
        outcome = request.get(_OUTCOME, "completed")
        setattr(stats, outcome, getattr(stats, outcome) + 1)
        return response

    return wrapper
