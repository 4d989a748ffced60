"""The pooled upstream HTTP client: one aiohttp session for the process, created at start-up.

This is the adapter boundary: aiohttp's exceptions become :class:`UpstreamError` / :class:`UpstreamTimeout`
here, and an upstream's error statuses become gateway errors without its body or credentials.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson

from tenantgate.core.errors import GatewayError, RateLimited, UpstreamError, UpstreamTimeout
from tenantgate.routing.catalog import Deployment

_JSON = "application/json"


class UpstreamClient:
    def __init__(self, *, connect_timeout: float, read_timeout: float, max_connections: int) -> None:
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout, sock_read=read_timeout)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self._max_connections, ttl_dns_cache=60, enable_cleanup_closed=True)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
            json_serialize=lambda obj: orjson.dumps(obj).decode(),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("UpstreamClient.start() was not called")
        return self._session

    async def post(self, deployment: Deployment, path: str, payload: bytes) -> aiohttp.ClientResponse:
        """Send one request; return the response once its status is 2xx, else raise a gateway error."""
        headers = {"Content-Type": _JSON, "Accept": "application/json, text/event-stream"}
        if deployment.api_key:
            headers["Authorization"] = f"Bearer {deployment.api_key}"
        url = f"{deployment.base_url}/{path}"
        try:
            response = await self.session.post(url, data=payload, headers=headers, allow_redirects=False)
        except TimeoutError as exc:
            raise UpstreamTimeout(f"Backend '{deployment.backend_name}' timed out.") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"Backend '{deployment.backend_name}' could not be reached.") from exc
        if response.status >= 300:
            try:
                raise await _status_error(deployment, response)
            finally:
                response.release()
        return response

    async def get_json(self, url: str, api_key: str | None, deadline_s: float = 5.0) -> Any:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        async with asyncio.timeout(deadline_s):
            async with self.session.get(url, headers=headers, allow_redirects=False) as response:
                response.raise_for_status()
                return await response.json(loads=orjson.loads, content_type=None)


async def _status_error(deployment: Deployment, response: aiohttp.ClientResponse) -> GatewayError:
    status = response.status
    name = deployment.backend_name
    if status == 429:
        headers = {}
        if retry_after := response.headers.get("retry-after"):
            headers["retry-after"] = retry_after
        return RateLimited(
            f"Backend '{name}' is rate limited; retry later.", code="upstream_rate_limited", headers=headers
        )
    if status in (401, 403):
        return UpstreamError(f"Backend '{name}' rejected the gateway's credentials.", code="upstream_auth_failed")
    if status >= 500 or status < 400:
        return UpstreamError(f"Backend '{name}' failed with HTTP {status}.")
    return await _client_error(response)


async def _client_error(response: aiohttp.ClientResponse) -> GatewayError:
    """A 4xx from the backend is the caller's fault (context too long, bad parameter): relay its meaning."""
    message, param, code = f"The backend refused the request (HTTP {response.status}).", None, None
    try:
        body = orjson.loads(await response.read())
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            message = str(error.get("message") or message)[:2000]
            param = error.get("param") if isinstance(error.get("param"), str) else None
            code = error.get("code") if isinstance(error.get("code"), str) else None
        elif isinstance(error, str):
            message = error[:2000]
    except (orjson.JSONDecodeError, aiohttp.ClientError, TimeoutError):
        pass
    error_type = GatewayError(message, param=param, code=code or "upstream_invalid_request", status=response.status)
    error_type.type = "invalid_request_error"
    return error_type
