"""Serving with a graceful drain: what uvicorn alone does not do on SIGTERM.

On the first SIGTERM (or Ctrl-C) the gateway turns not-ready at once (``/health/ready`` 503, new ``/v1``
requests 503 ``draining``), optionally keeps listening for ``drain_delay`` so load balancers notice, then
stops accepting connections and lets in-flight requests and streams finish for up to ``drain_grace``.
Streams still running then get an in-band error event and end. Then the lifespan shutdown flushes usage and
closes everything, and the process exits 0 (uvicorn would re-raise the signal and exit -15). A second
Ctrl-C forces the exit.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from types import FrameType

import uvicorn

from tenantgate.edge.context import Gateway

log = logging.getLogger("tenantgate.server")

_FINAL_WAIT_S = 3.0  # after expiring streams, how long their error events get to go out


class GatewayServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, gateway: Gateway, *, grace_s: float, delay_s: float) -> None:
        super().__init__(config)
        self._gateway = gateway
        self._grace_s = grace_s
        self._delay_s = delay_s

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
        if not self.force_exit:
            await self.lifespan.shutdown()

    async def _wait_for_requests(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while self.server_state.tasks and loop.time() < deadline and not self.force_exit:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
