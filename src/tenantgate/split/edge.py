"""The edge: clients call it exactly like the gateway; it forwards to the core and survives a bad network.

Every ``POST /v1/*`` gets an ``Idempotency-Key`` when the client sent none, so the core runs each request
once however often the edge must ask. When the link to the core breaks (refused, reset, a stream cut off),
the edge reconnects with the same key: a plain request is replayed (or waited for, while the core still works
on it: 409 with ``retry-after``); a stream is resumed with ``Last-Event-ID`` after the last event the client
got, so the client sees one uninterrupted answer, never a second charge. If the core stays unreachable for
``resume_timeout`` seconds, the client gets an honest error: a 502 before anything was sent, or an in-band
error event and no ``[DONE]`` in a stream that had started.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import uvicorn

from tenantgate.edge.server import write_port_file

log = logging.getLogger("tenantgate.edge")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
        "proxy-authenticate",
        "host",
        "content-length",
    }
)
MAX_BODY_BYTES = 8 * 1024 * 1024
_BACKOFF_S = (0.05, 0.1, 0.2, 0.4, 0.8, 1.0)


class CoreUnreachable(Exception):
    pass


def _error_json(message: str, code: str) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": "api_error", "param": None, "code": code}})


class Edge:
    def __init__(self, core_url: str, tls: ssl.SSLContext | None, *, resume_timeout: float = 30.0) -> None:
        self._core = core_url.rstrip("/")
        self._tls = tls
        self._resume_timeout = resume_timeout
        self._session: aiohttp.ClientSession | None = None
        self.resumptions = 0  # reconnections after a break, for tests and logs

    async def _startup(self) -> None:
        connector = aiohttp.TCPConnector(ssl=self._tls if self._tls is not None else False, limit=1000)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=None)
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await self._startup()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    if self._session is not None:
                        await self._session.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if scope["path"] == "/edge/health":
            await _reply(send, 200, orjson.dumps({"status": "ok", "role": "edge", "core": self._core}))
            return
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > MAX_BODY_BYTES:
                await _reply(send, 413, _error_json("The request body is too large.", "request_too_large"))
                return
            if not message.get("more_body"):
                break
        await self._forward(scope, bytes(body), send)

    def _headers(self, scope: Scope) -> dict[str, str]:
        headers = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name.decode("latin-1").lower() not in HOP_BY_HOP
        }
        lower = {name.lower() for name in headers}
        if scope["method"] == "POST" and scope["path"].startswith("/v1/") and "idempotency-key" not in lower:
            headers["Idempotency-Key"] = f"edge-{uuid.uuid4()}"  # so a retry after a cut runs nothing twice
        return headers

    async def _forward(self, scope: Scope, body: bytes, send: Send) -> None:
        assert self._session is not None
        url = self._core + scope["path"] + (f"?{scope['query_string'].decode()}" if scope["query_string"] else "")
        headers = self._headers(scope)
        relay = _Relay(send)
        loop = asyncio.get_running_loop()
        broken_since: float | None = None
        attempt = 0
        while True:
            if relay.last_event_id is not None:
                headers["Last-Event-ID"] = relay.last_event_id
            try:
                async with self._session.request(scope["method"], url, data=body, headers=headers) as response:
                    if response.status == 409 and not relay.started:  # the core is still on it: wait, ask again
                        wait = float(response.headers.get("retry-after", "1") or 1)
                        await asyncio.sleep(min(max(wait, 0.05), 2.0))
                        broken_since = None
                        continue
                    await relay.start(response)
                    broken_since = None
                    if await relay.pump(response):
                        return
                    raise aiohttp.ClientPayloadError("the stream ended before its end")
            except (TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
                now = loop.time()
                broken_since = now if broken_since is None else broken_since
                if now - broken_since > self._resume_timeout:
                    log.warning("edge: core unreachable for %.1f s, giving up (%s)", now - broken_since, exc)
                    await relay.fail()
                    return
                self.resumptions += 1
                await asyncio.sleep(_BACKOFF_S[min(attempt, len(_BACKOFF_S) - 1)])
                attempt += 1


class _Relay:
    """What the client has been sent so far; one response whatever the number of attempts behind it."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False
        self.streaming = False
        self.last_event_id: str | None = None
        self._done = False

    async def start(self, response: aiohttp.ClientResponse) -> None:
        if self.started:
            return
        self.streaming = response.headers.get("content-type", "").startswith("text/event-stream")
        if not self.streaming:
            return  # a plain answer is sent whole, once read whole (a cut mid-body is retried, not half-sent)
        self.started = True
        headers = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in response.headers.items()
            if name.lower() not in HOP_BY_HOP
        ]
        await self._send({"type": "http.response.start", "status": response.status, "headers": headers})

    async def pump(self, response: aiohttp.ClientResponse) -> bool:
        """Relay the answer; True when it is complete, False when the link broke before its end."""
        if not self.streaming:
            payload = await response.read()
            headers = [
                (name.lower().encode("latin-1"), value.encode("latin-1"))
                for name, value in response.headers.items()
                if name.lower() not in HOP_BY_HOP
            ]
            self.started = True
            await self._send({"type": "http.response.start", "status": response.status, "headers": headers})
            await self._send({"type": "http.response.body", "body": payload})
            return True
        event: list[bytes] = []
        async for line in response.content:
            if line in (b"\n", b"\r\n"):
                if event:
                    await self._event(event)
                    event = []
                continue
            event.append(line)
        if event:  # a final event without its blank line: the link broke inside it; the resumption repeats it
            return self._done
        if self._done:
            await self._send({"type": "http.response.body", "body": b"", "more_body": False})
        return self._done

    async def _event(self, lines: list[bytes]) -> None:
        for line in lines:
            if line.startswith(b"id:"):
                self.last_event_id = line[3:].strip().decode("latin-1")
            elif line.startswith(b"data:") and line[5:].strip() in (b"[DONE]",):
                self._done = True
        # relayed as is, in-band errors of the core included (that stream then ends without [DONE])
        await self._send({"type": "http.response.body", "body": b"".join(lines) + b"\n", "more_body": True})

    async def fail(self) -> None:
        if not self.started:
            message = "The gateway core cannot be reached from this edge; try again later."
            await _reply(self._send, 502, _error_json(message, "core_unreachable"))
            return
        if self.streaming:
            error = _error_json("The link to the gateway core broke and did not come back in time.", "core_unreachable")
            await self._send({"type": "http.response.body", "body": b"data: " + error + b"\n\n", "more_body": True})
            await self._send({"type": "http.response.body", "body": b"", "more_body": False})


async def _reply(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def client_tls(ca: str | None, cert: str | None, key: str | None) -> ssl.SSLContext:
    """The edge's side of mTLS: trust the core's CA, present the edge's certificate."""
    context = ssl.create_default_context(cafile=ca)
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


class _EdgeServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, port_file: Path | None) -> None:
        super().__init__(config)
        self._port_file = port_file

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self._port_file is not None:
            write_port_file(self._port_file, int(self.servers[0].sockets[0].getsockname()[1]))


def edge_server(application: Edge, host: str, port: int, port_file: Path | None) -> uvicorn.Server:
    config = uvicorn.Config(
        application, host=host, port=port, loop="uvloop", http="httptools", log_config=None, access_log=False
    )
    return _EdgeServer(config, port_file)
