"""Running the mock upstream: in a test's event loop (:func:`start_mock`) or as a process (:func:`main`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from tenantgate.mock.common import MockOptions
from tenantgate.mock.upstream import build_app

_SHUTDOWN_TIMEOUT = 1.0  # stalled requests never finish on their own; don't hold up cleanup for long


async def start_mock(options: MockOptions, host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, int]:
    """Serve the mock in the running loop; returns the runner (``await runner.cleanup()``) and bound port.

    Handler cancellation is on so a client that disconnects cancels its handler, which is how the mock
    counts ``cancelled`` requests and how a stalled request ever ends. Access logging is off for benchmarks.
    """
    runner = web.AppRunner(
        build_app(options), handler_cancellation=True, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner, int(runner.addresses[0][1])


async def _serve(host: str, port: int, options: MockOptions, port_file: Path | None) -> None:
    runner, bound = await start_mock(options, host, port)
    stop = asyncio.Event()
    with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print(f"tenantgate mock upstream listening on http://{host}:{bound}", flush=True)
    if port_file is not None:  # atomically: a reader sees no file or the whole port
        partial = port_file.with_name(f".{port_file.name}.{os.getpid()}.tmp")
        partial.write_text(f"{bound}\n")
        os.replace(partial, port_file)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def run(host: str, port: int, options: MockOptions, port_file: Path | None = None) -> None:
    """Serve until SIGINT/SIGTERM (blocking); the first stdout line names the bound port (for port 0), and
    ``port_file``, when given, receives it once listening."""
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        pass
    with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_serve(host, port, options, port_file))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tenantgate.mock.upstream", description="Serve the OpenAI-compatible mock upstream."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081, help="0: any free port (see --port-file)")
    parser.add_argument("--port-file", type=Path, default=None, help="write the bound port here once listening")
    parser.add_argument("--ttft", type=float, default=0.0, help="seconds before the first chunk")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between stream chunks")
    parser.add_argument("--chunks", type=int, default=8, help="content chunks (words) per reply")
    parser.add_argument("--api-key", default=None, help="require 'Authorization: Bearer <key>'")
    parser.add_argument("--models", default=None, help="comma-separated model ids")
    args = parser.parse_args(argv)
    options = MockOptions(ttft=args.ttft, chunk_delay=args.chunk_delay, chunks=args.chunks, api_key=args.api_key)
    if args.models:
        options.models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    run(args.host, args.port, options, args.port_file)


if __name__ == "__main__":
    main()
