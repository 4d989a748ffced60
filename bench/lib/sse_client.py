"""A small SSE load client (asyncio + aiohttp), run as its own process on the client CPU.

wrk cannot time the first event of a stream, so streaming is measured here. Three modes:

- ``measure``: closed loop, ``--concurrency`` connections for ``--seconds`` after ``--warmup``; per stream the
  time to the response headers (TTFB), to the first ``data:`` event (TTFT) and to the end of the body (total).
- ``hold``: open ``--count`` streams that stall after their first event, print one JSON line once they are all
  open, and keep them open until stdin closes (the harness reads the gateway's memory meanwhile).
- ``churn``: closed loop for the soak; a fraction of the streams is abandoned mid-way (the client disconnects),
  which is the path that leaks when cleanup is wrong.

Results are one JSON object on stdout. Being a separate process keeps the harness's sampler threads out of this
event loop's timings.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp


@dataclass
class StreamSample:
    ttfb: float
    ttft: float | None
    total: float
    events: int
    done: bool
    abandoned: bool = False


@dataclass
class Tally:
    samples: list[StreamSample] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100) of unsorted values; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


async def one_stream(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    abandon_after: int | None = None,
) -> StreamSample:
    """Send one streaming request and time it; ``abandon_after`` closes the connection after N events."""
    start = time.perf_counter()
    async with session.post(url, data=body, headers=headers) as response:
        ttfb = time.perf_counter() - start
        if response.status != 200:
            await response.read()
            raise RuntimeError(f"HTTP {response.status}")
        buffer = b""
        events = 0
        ttft: float | None = None
        done = False
        async for chunk in response.content.iter_any():
            buffer += chunk
            while b"\n\n" in buffer:
                event, buffer = buffer.split(b"\n\n", 1)
                if not event.startswith(b"data:"):
                    continue
                if event.startswith(b"data: [DONE]"):
                    done = True
                    continue
                events += 1
                if ttft is None:
                    ttft = time.perf_counter() - start
                if abandon_after is not None and events >= abandon_after:
                    response.close()  # drop the socket: the gateway must notice and clean up
                    return StreamSample(ttfb, ttft, time.perf_counter() - start, events, False, abandoned=True)
        return StreamSample(ttfb, ttft, time.perf_counter() - start, events, done)


def _session(limit: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=limit, force_close=False)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None, sock_read=60))


async def closed_loop(args: argparse.Namespace, abandon_fraction: float = 0.0) -> dict[str, Any]:
    body, headers = args.body.encode(), dict(args.header)
    tally = Tally()
    warm_until = time.monotonic() + args.warmup
    stop_at = warm_until + args.seconds
    rng = random.Random(7)

    async def worker(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < stop_at:
            abandon = rng.randint(2, 6) if rng.random() < abandon_fraction else None
            began = time.monotonic()
            try:
                sample = await one_stream(session, args.url, body, headers, abandon_after=abandon)
            except Exception as exc:  # the load must go on; errors are counted and reported
                tally.error(type(exc).__name__ + ": " + str(exc)[:80])
                await asyncio.sleep(0.05)
                continue
            if began >= warm_until:
                tally.samples.append(sample)

    async with _session(args.concurrency) as session:
        await asyncio.gather(*(worker(session) for _ in range(args.concurrency)))
    return summarise(tally, args.seconds)


def summarise(tally: Tally, seconds: float) -> dict[str, Any]:
    complete = [s for s in tally.samples if not s.abandoned]
    ms = 1000.0

    def pct(values: list[float], q: float) -> float | None:
        value = percentile(values, q)
        return None if value is None else round(value * ms, 3)

    ttfb = [s.ttfb for s in complete]
    ttft = [s.ttft for s in complete if s.ttft is not None]
    total = [s.total for s in complete]
    return {
        "streams": len(complete),
        "abandoned": sum(1 for s in tally.samples if s.abandoned),
        "streams_per_s": round(len(tally.samples) / seconds, 2) if seconds else None,
        "incomplete": sum(1 for s in complete if not s.done),
        "events_mean": round(sum(s.events for s in complete) / len(complete), 2) if complete else None,
        "ttfb_p50": pct(ttfb, 50),
        "ttft_p50": pct(ttft, 50),
        "ttft_p99": pct(ttft, 99),
        "total_p50": pct(total, 50),
        "total_p99": pct(total, 99),
        "errors": tally.errors,
    }


async def hold(args: argparse.Namespace) -> None:
    """Open ``count`` stalled streams, report, then keep them open until stdin reaches EOF."""
    body, headers = args.body.encode(), dict(args.header)
    opened = 0
    failures: dict[str, int] = {}
    all_open = asyncio.Event()
    release = asyncio.Event()
    gate = asyncio.Semaphore(100)  # ramp up in waves rather than 1,000 SYNs at once

    async def keep(session: aiohttp.ClientSession) -> None:
        nonlocal opened
        try:
            async with gate:
                response = await session.post(args.url, data=body, headers=headers)
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}")
                first = await response.content.readuntil(b"\n\n")
                if not first.startswith(b"data:"):
                    raise RuntimeError("no first event")
            opened += 1
            if opened == args.count:
                all_open.set()
            await release.wait()
            response.close()
        except Exception as exc:
            key = type(exc).__name__ + ": " + str(exc)[:80]
            failures[key] = failures.get(key, 0) + 1
            if opened + sum(failures.values()) == args.count:
                all_open.set()

    async with _session(0) as session:
        tasks = [asyncio.create_task(keep(session)) for _ in range(args.count)]
        started = time.monotonic()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_open.wait(), timeout=args.seconds)
        report = {"opened": opened, "failed": failures, "open_seconds": round(time.monotonic() - started, 2)}
        print(json.dumps(report), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        release.set()
        await asyncio.gather(*tasks, return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["measure", "hold", "churn"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--body", required=True, help="JSON request body (with stream: true)")
    parser.add_argument("--header", action="append", default=[], type=lambda s: tuple(s.split(": ", 1)))
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time (hold: time allowed to open)")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--count", type=int, default=1000, help="hold: streams to keep open")
    parser.add_argument("--abandon", type=float, default=0.25, help="churn: fraction of streams abandoned")
    args = parser.parse_args()
    loop_factory = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        if args.mode == "hold":
            runner.run(hold(args))
            return
        result = runner.run(closed_loop(args, abandon_fraction=args.abandon if args.mode == "churn" else 0.0))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
