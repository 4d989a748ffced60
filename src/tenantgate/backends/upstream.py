"""The pooled upstream HTTP client: one aiohttp session for the process, created at start-up.

This is the adapter boundary: aiohttp's exceptions and an upstream's error statuses become gateway errors
here, without the backend's body or credentials. Failures another backend might not share (connect errors,
timeouts, 5xx, 429, a credential the backend refuses) are :class:`UpstreamFailure`, which the forwarder may
retry elsewhere; a 4xx about the request itself is the caller's fault and is relayed, never retried.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Literal

import aiohttp
import orjson

from tenantgate.backends.netpolicy import NetworkPolicy, PolicyConnector
from tenantgate.core.errors import GatewayError, UpstreamError
from tenantgate.core.secrets import scrub
from tenantgate.routing.catalog import Deployment

FailureKind = Literal["connect", "timeout", "5xx", "429", "auth", "stream_broken"]

_JSON = "application/json"


class UpstreamFailure(UpstreamError):
    """One attempt failed in a way that moving to another backend may cure."""

    def __init__(
        self,
        message: str,
        *,
        kind: FailureKind,
        retry_after: float | None = None,
        status: int = 502,
        code: str = "upstream_error",
    ) -> None:
        super().__init__(message, status=status, code=code)
        self.kind = kind
        self.retry_after = retry_after
        if status == 429:
            self.type = "rate_limit_error"


class UpstreamClient:
    def __init__(
        self,
        *,
        connect_timeout: float,
        read_timeout: float,
        max_connections: int,
        resolver_factory: Callable[[], aiohttp.abc.AbstractResolver] | None = None,
        network_policy: NetworkPolicy | None = None,
        restricted_hosts: set[str] | None = None,
    ) -> None:
        """``network_policy`` is enforced on every new connection to a host in ``restricted_hosts`` (the caller's
        set, read at each connect: the hosts of API-registered backends), IP literals included."""
        self.connect_timeout = connect_timeout
        self._policy = network_policy
        self._restricted = restricted_hosts if restricted_hosts is not None else set()
        self.read_timeout = read_timeout
        self._max_connections = max_connections
        self._resolver_factory = resolver_factory  # resolvers need a running loop: built in start()
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[float, float], aiohttp.ClientTimeout] = {}

    async def start(self) -> None:
        resolver = self._resolver_factory() if self._resolver_factory is not None else None
        options: dict[str, Any] = {
            "limit": self._max_connections,
            "ttl_dns_cache": 60,
            "enable_cleanup_closed": True,
            "resolver": resolver,
        }
        connector = (
            aiohttp.TCPConnector(**options)
            if self._policy is None
            else PolicyConnector(self._policy, self._restricted, **options)
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout, sock_read=self.read_timeout),
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("UpstreamClient.start() was not called")
        return self._session

    def _timeout(self, deployment: Deployment) -> aiohttp.ClientTimeout:
        """One timeout object per (connect, idle) pair, built once: deployments are few, requests many."""
        key = (deployment.connect_timeout or self.connect_timeout, deployment.idle_timeout or self.read_timeout)
        timeout = self._timeouts.get(key)
        if timeout is None:
            timeout = self._timeouts[key] = aiohttp.ClientTimeout(total=None, sock_connect=key[0], sock_read=key[1])
        return timeout

    async def post(self, deployment: Deployment, path: str, payload: bytes) -> aiohttp.ClientResponse:
        """Send one request; return the response once its status is 2xx, else raise a gateway error."""
        headers = {"Content-Type": _JSON, "Accept": "application/json, text/event-stream"}
        if deployment.api_key:
            headers["Authorization"] = f"Bearer {deployment.api_key}"
        url = f"{deployment.base_url}/{path}"
        name = deployment.backend_name
        try:
            response = await self.session.post(
                url, data=payload, headers=headers, allow_redirects=False, timeout=self._timeout(deployment)
            )
        except TimeoutError as exc:
            raise UpstreamFailure(f"{name}: timed out", kind="timeout", status=504, code="upstream_timeout") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamFailure(f"{name}: could not connect", kind="connect") from exc
        if response.status >= 300:
            try:
                raise await _status_error(deployment, response)
            finally:
                response.release()
        return response

    async def probe(self, base_url: str, api_key: str | None, deadline_s: float) -> float:
        """The health check: ``GET {base_url}/models`` (never a billed completion); returns its latency."""
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        started = time.perf_counter()
        async with asyncio.timeout(deadline_s):
            async with self.session.get(f"{base_url}/models", headers=headers, allow_redirects=False) as response:
                if response.status >= 300:
                    raise RuntimeError(f"GET /models answered HTTP {response.status}")
                await response.read()
        return time.perf_counter() - started

    async def get_json(self, url: str, api_key: str | None, deadline_s: float = 5.0) -> Any:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        async with asyncio.timeout(deadline_s), self.session.get(url, headers=headers, allow_redirects=False) as resp:
            resp.raise_for_status()
            return await resp.json(loads=orjson.loads, content_type=None)


def _retry_after(response: aiohttp.ClientResponse) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


async def _status_error(deployment: Deployment, response: aiohttp.ClientResponse) -> GatewayError:
    status = response.status
    name = deployment.backend_name
    if status == 429:
        return UpstreamFailure(
            f"{name}: rate limited (HTTP 429)",
            kind="429",
            status=429,
            code="upstream_rate_limited",
            retry_after=_retry_after(response),
        )
    if status in (401, 403):
        return UpstreamFailure(
            f"{name}: rejected the gateway's credentials (HTTP {status})", kind="auth", code="upstream_auth_failed"
        )
    if status >= 500 or status < 400:
        return UpstreamFailure(f"{name}: HTTP {status}", kind="5xx")
    return await _client_error(response, deployment.api_key)


async def _client_error(response: aiohttp.ClientResponse, api_key: str | None = None) -> GatewayError:
    """A 4xx from the backend is the caller's fault (context too long, bad parameter): relay its meaning.

    Every relayed field is scrubbed: a backend may echo the request's ``Authorization`` header (or any other
    credential) in its error, and the tenant must never see the gateway's upstream key.
    """
    message, param, code = f"The backend refused the request (HTTP {response.status}).", None, None
    try:
        body = orjson.loads(await response.read())
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            message = scrub(str(error.get("message") or message)[:2000], (api_key,))
            param = _scrubbed_field(error.get("param"), api_key)
            code = _scrubbed_field(error.get("code"), api_key)
        elif isinstance(error, str):
            message = scrub(error[:2000], (api_key,))
    except (orjson.JSONDecodeError, aiohttp.ClientError, TimeoutError):
        pass
    relayed = GatewayError(message, param=param, code=code or "upstream_invalid_request", status=response.status)
    relayed.type = "invalid_request_error"
    return relayed


def _scrubbed_field(value: object, api_key: str | None) -> str | None:
    """``param`` and ``code`` are short identifiers: relayed only when scrubbing leaves them untouched."""
    if not isinstance(value, str) or len(value) > 200:
        return None
    return value if scrub(value, (api_key,)) == value else None
