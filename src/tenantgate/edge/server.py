"""Serving with a graceful drain: what uvicorn alone does not do on SIGTERM.

On the first SIGTERM (or Ctrl-C) the gateway turns not-ready at once (``/health/ready`` 503, new ``/v1``
requests 503 ``draining``), optionally keeps listening for ``drain_delay`` so load balancers notice, then
stops accepting connections and lets in-flight requests and streams finish for up to ``drain_grace``.
Streams still running then get an in-band error event and end. Then the lifespan shutdown flushes usage and
closes everything, and the process exits 0 (uvicorn would re-raise the signal and exit -15). A second
Ctrl-C forces the exit.

:func:`build_server` puts the pieces together for ``tenantgate serve``: the open-file limit raised, client
connections guarded (:mod:`tenantgate.edge.protocol`) and, with ``--port-file``, the bound port written once
listening (so tests and supervisors can use ``--port 0``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from tenantgate.config.settings import Settings
from tenantgate.edge.context import Gateway
from tenantgate.edge.protocol import ConnectionGuard, ConnectionLimits, connection_cap, raise_open_file_limit
from tenantgate.tls.context import ReloadingTLS

log = logging.getLogger("tenantgate.server")

_FINAL_WAIT_S = 3.0  # after expiring streams, how long their error events get to go out


class GatewayServer(uvicorn.Server):
    def __init__(
        self,
        config: uvicorn.Config,
        gateway: Gateway,
        *,
        grace_s: float,
        delay_s: float,
        port_file: Path | None = None,
        tls: ReloadingTLS | None = None,
    ) -> None:
        super().__init__(config)
        self._tls = tls
        self._gateway = gateway
        self._grace_s = grace_s
        self._delay_s = delay_s
        self._port_file = port_file

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        if self._tls is not None:  # the listener gets our context, which follows the certificate files
            if not self.config.loaded:
                self.config.load()
            self.config.ssl = self._tls.context
            self._tls.start()
        await super().startup(sockets)
        if self.started and self._port_file is not None:
            listening = self.servers[0].sockets
            write_port_file(self._port_file, int(listening[0].getsockname()[1]))

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
            return
        if not self.should_exit:
            log.info("drain started (signal %s): not ready, finishing in-flight requests", sig)
        self._gateway.draining = True
        self.should_exit = True  # the signal is not recorded, so a clean drain exits 0

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._delay_s > 0:
            await asyncio.sleep(self._delay_s)
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()  # idle keep-alive connections close now, busy ones after their response
        await self._wait_for_requests(self._grace_s)
        streams = self._gateway.streams
        if self.server_state.tasks and len(streams):
            log.warning("drain grace over: ending %d stream(s) with an error event", len(streams))
            streams.expire_all()
            await self._wait_for_requests(_FINAL_WAIT_S)
        for task in self.server_state.tasks:
            task.cancel(msg="drain grace period exceeded")
        if self._tls is not None:
            await self._tls.stop()
        if not self.force_exit:
            await self.lifespan.shutdown()

    async def _wait_for_requests(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while self.server_state.tasks and loop.time() < deadline and not self.force_exit:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


def write_port_file(path: Path, port: int) -> None:
    """Write the port atomically: a reader sees no file or the whole number, never a partial one."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(f"{port}\n")
    os.replace(partial, path)


def build_server(
    application: Any, settings: Settings, *, host: str, port: int, port_file: Path | None = None
) -> GatewayServer:
    """The gateway's server: uvloop + httptools behind the connection guard, with the drain on SIGTERM."""
    gateway: Gateway = application.state.gateway
    open_files = raise_open_file_limit()
    cap = connection_cap(settings.max_connections, open_files, settings.upstream_max_connections)
    if cap < settings.max_connections:
        log.warning("max_connections lowered to %d: the open-file limit is %d", cap, open_files)
    limits = ConnectionLimits(
        header_timeout=settings.client_header_timeout,
        body_timeout=settings.client_body_timeout,
        body_total_timeout=settings.client_body_total_timeout,
        keepalive_timeout=settings.keepalive_timeout,
        max_header_bytes=settings.max_header_bytes,
        max_connections=cap,
    )
    guard = ConnectionGuard(limits, gateway.metrics.connection_closed)
    config = uvicorn.Config(
        application,
        host=host,
        port=port,
        loop="uvloop",
        http=guard.protocol_class(),
        log_config=None,
        access_log=False,
        lifespan="on",
        proxy_headers=False,  # the gateway never uses the client address; the middleware costs ~20 µs/request
    )
    tls = None
    if settings.tls_cert_file is not None and settings.tls_key_file is not None:
        tls = ReloadingTLS(
            settings.tls_cert_file,
            settings.tls_key_file,
            settings.tls_client_ca_file,
            interval_s=settings.tls_reload_interval,
        )
    server = GatewayServer(
        config,
        gateway,
        grace_s=settings.drain_grace_seconds,
        delay_s=settings.drain_delay_seconds,
        port_file=port_file,
        tls=tls,
    )
    connections = server.server_state.connections
    gateway.metrics.watch_connections(lambda: len(connections))
    return server
