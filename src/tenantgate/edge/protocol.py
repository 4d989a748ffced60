"""Client connections that cannot hold the gateway hostage: read timeouts, a header size cap, a connection cap.

uvicorn's httptools protocol arms no timer until a first response is sent, never caps the header section
(llhttp and httptools buffer a header of any size) and accepts connections until the process runs out of file
descriptors. :class:`GuardedHttpProtocol` adds, per connection:

* a **header timeout**: from the connection's opening (or the first byte of a later keep-alive request) until
  the header section is complete. A connection that sends nothing, or its headers a byte at a time, is closed
  (with a 408 when part of a request arrived);
* a **body timeout**: the longest silence between two pieces of a request body, and a total time for the
  whole body. Time during which the gateway itself stopped reading (flow control) does not count;
* the **idle keep-alive timeout** between requests (uvicorn's own timer, with a float setting);
* a **header size cap**: request line plus header fields over ``max_header_bytes`` get a 431 and the
  connection is closed; what the client still sends is read and dropped for a moment so it sees the answer;
* a **connection cap**: at ``max_connections`` open connections, a new connection closes the oldest one that
  is not busy (busy: its request is complete and being answered, e.g. a stream; those are never shed). A
  connection still sending its request can be shed. When every connection is busy the newcomer is closed.

Cost on the hot path: per read, one ``len`` and a few attribute stores; per request, three parser callbacks
that add a few attribute stores each (about a microsecond in all). Timers are ``loop.call_later`` handles,
armed only when a read ends inside a header section or body (one read usually carries a whole request).
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

log = logging.getLogger("tenantgate.server")

CloseReason = Literal["header_timeout", "body_timeout", "header_too_large", "evicted", "refused"]

_IDLE, _HEADERS, _BODY, _DISCARD = 0, 1, 2, 3
_REQUEST_LINE_OVERHEAD = 12  # method, spaces and " HTTP/1.1\r\n" around the URL, counted as a constant
_LINGER_S = 2.0  # after a 431, how long what the client still sends is read and dropped
_MIN_CAP = 64
_FD_RESERVE_MIN = 256  # descriptors kept for the database, Redis, files and logs


def _response(status: int, phrase: str, message: str, code: str) -> bytes:
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    body = json.dumps({"error": error}).encode()
    head = (
        f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + body


_RESPONSE_431 = _response(
    431, "Request Header Fields Too Large", "Request header fields too large.", "request_header_fields_too_large"
)
_RESPONSE_408 = _response(408, "Request Timeout", "Request not received in time.", "request_timeout")


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    body_total_timeout: float = 120.0
    keepalive_timeout: float = 5.0
    max_header_bytes: int = 32 * 1024
    max_connections: int = 10_000


class _HeaderTooLarge(Exception):
    """Raised from a parser callback to stop parsing a request that was answered 431."""


class ConnectionGuard:
    """The state one server's connections share: the limits, the shedding order and the close counter.

    ``connections`` holds the open connections, oldest first; nothing touches it per request.
    """

    def __init__(self, limits: ConnectionLimits, on_close: Callable[[CloseReason], None] | None = None) -> None:
        self.limits = limits
        self.connections: OrderedDict[GuardedHttpProtocol, None] = OrderedDict()
        self._on_close = on_close

    def closed(self, reason: CloseReason) -> None:
        if self._on_close is not None:
            self._on_close(reason)

    def make_room(self) -> bool:
        """Close the oldest connection that is not busy; False when every open connection is busy.

        Busy connections met on the way move to the back, so repeated calls at the cap do not rescan them.
        """
        connections = self.connections
        for _ in range(len(connections)):
            victim = next(iter(connections))
            if victim.busy():
                connections.move_to_end(victim)
                continue
            victim.shed("evicted")
            return True
        return False

    def protocol_class(self) -> type[GuardedHttpProtocol]:
        """The class to pass to ``uvicorn.Config(http=...)``, bound to this guard."""
        guard = self

        class BoundGuardedHttpProtocol(GuardedHttpProtocol):
            _guard = guard

        return BoundGuardedHttpProtocol


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the timeouts and caps described in the module docstring."""

    _guard: ConnectionGuard

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits = self._guard.limits
        self.timeout_keep_alive = limits.keepalive_timeout  # type: ignore[assignment]  # uvicorn declares int
        self._max_header = limits.max_header_bytes
        self._phase = _HEADERS  # a fresh connection waits for its first request's headers
        self._seen = 0  # bytes of the current header section (upper bound), or 0
        self._chunk = 0  # length of the read being parsed (0 once a message ended inside it)
        self._timer: asyncio.TimerHandle | None = None
        self._last_body = 0.0  # loop time of the last body bytes
        self._body_deadline = 0.0

    # -- connection --------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        guard = self._guard
        if len(self.connections) >= guard.limits.max_connections and not guard.make_room():
            self.transport = transport
            self._phase = _DISCARD
            guard.closed("refused")
            transport.abort()
            return
        super().connection_made(transport)
        guard.connections[self] = None
        self._arm(guard.limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._guard.connections.pop(self, None)
        self._cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # uvicorn's data_received, plus a length sum while a header section is open and the timers.
        phase = self._phase
        self._chunk = size = len(data)
        if phase:
            if phase == _HEADERS:
                self._seen += size
            elif phase == _BODY:
                self._last_body = self.loop.time()
            else:
                return  # answered 431: drop what the client still sends
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            if self._phase == _DISCARD:
                return
            self._invalid()
            return
        except httptools.HttpParserError:
            self._invalid()
            return
        except httptools.HttpParserUpgrade:
            self._cancel()
            if self._should_upgrade():
                self._guard.connections.pop(self, None)  # another protocol owns the connection from now on
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        phase = self._phase
        if phase == _HEADERS:
            if self._seen > self._max_header:
                self._reject_header()
            elif self._timer is None:
                self._arm(self._guard.limits.header_timeout)
        elif phase == _BODY and self._timer is None:
            limits = self._guard.limits
            self._last_body = now = self.loop.time()
            self._body_deadline = now + limits.body_total_timeout
            self._arm(min(limits.body_timeout, limits.body_total_timeout))

    def _invalid(self) -> None:
        msg = "Invalid HTTP request received."
        self.logger.warning(msg)
        self.send_400_response(msg)

    # -- parser callbacks --------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        HttpToolsProtocol.on_message_begin(self)
        self._phase = _HEADERS
        self._seen = self._chunk  # the whole read so far: exact unless a previous message ended inside it

    def on_headers_complete(self) -> None:
        if self._seen > self._max_header and self._header_size() > self._max_header:
            self._reject_header()
            raise _HeaderTooLarge
        self._phase = _BODY
        self._seen = 0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        HttpToolsProtocol.on_headers_complete(self)

    def on_message_complete(self) -> None:
        self._phase = _IDLE
        self._chunk = 0  # a pipelined request starting later in this read does not count what came before
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        HttpToolsProtocol.on_message_complete(self)

    def busy(self) -> bool:
        """A complete request is being answered: the one state in which a connection is never shed."""
        cycle = self.cycle
        return self._phase == _IDLE and cycle is not None and not cycle.response_complete

    def _header_size(self) -> int:
        return len(self.url) + _REQUEST_LINE_OVERHEAD + sum(len(name) + len(value) + 4 for name, value in self.headers)

    # -- closing -----------------------------------------------------------------------------------------

    def _reject_header(self) -> None:
        self._phase = _DISCARD
        self._guard.connections.pop(self, None)
        self._guard.closed("header_too_large")
        self._cancel()
        transport = self.transport
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:  # a pipelined request: never cut into a response
            transport.close()
            return
        transport.write(_RESPONSE_431)
        if transport.can_write_eof():
            transport.write_eof()  # the answer, then FIN; reading goes on (and is dropped) for a moment
            self._arm(_LINGER_S)
        else:
            transport.close()

    def shed(self, reason: CloseReason) -> None:
        """Close this connection for ``reason`` (a 408 first when part of a request header arrived)."""
        self._guard.connections.pop(self, None)
        self._cancel()
        transport = self.transport
        if transport.is_closing():
            return
        self._guard.closed(reason)
        if reason == "header_timeout" and self._seen:
            transport.write(_RESPONSE_408)
        self._phase = _DISCARD
        transport.close()

    def _arm(self, seconds: float) -> None:
        self._timer = self.loop.call_later(seconds, self._on_timer)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        phase = self._phase
        if phase == _HEADERS:
            self.shed("header_timeout")
        elif phase == _BODY:
            limits = self._guard.limits
            now = self.loop.time()
            cycle = self.cycle
            if self.flow.read_paused or (cycle is not None and cycle.waiting_for_100_continue):
                # the gateway is not reading (flow control, or no 100 Continue sent yet): the client is not slow
                self._last_body = now
                self._body_deadline = max(self._body_deadline, now + limits.body_timeout)
            silent_until = self._last_body + limits.body_timeout
            deadline = min(silent_until, self._body_deadline)
            if now >= deadline:
                self.shed("body_timeout")
            else:
                self._arm(deadline - now)
        elif phase == _DISCARD:
            self.transport.close()


def raise_open_file_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; returns the soft limit now in force.

    Every connection is a file descriptor: at the usual soft limit of 1,024, a thousand idle sockets lock
    every new client (and every upstream connection) out.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft if soft != resource.RLIM_INFINITY else 1 << 20
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
        return soft
    return target


def connection_cap(max_connections: int, open_files: int, upstream_connections: int) -> int:
    """The connection cap in force: the setting, lowered so clients cannot take the descriptors the gateway
    needs for upstream connections, the database and Redis."""
    reserve = min(upstream_connections + _FD_RESERVE_MIN, open_files // 2)
    return max(_MIN_CAP, min(max_connections, open_files - reserve))
