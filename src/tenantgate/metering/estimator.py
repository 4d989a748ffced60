"""Counting tokens off the event loop, for the rare answer an upstream sent without usage.

Real servers report usage; a cut stream (the client left, the backend broke) or an upstream that omits it
leaves the gateway to count what it sent and received. That count is pure-Python BPE, slow and super-linear
on crafted text, so it never runs on the event loop: a worker process does it, each job under a time cap.
When the cap expires, the worker is replaced and the request is billed on its byte bounds instead (an
over-estimate, marked ``estimated`` like every counted usage). Too many jobs waiting at once also fall back
to the bounds, so cutting streams on purpose cannot queue unbounded work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
from multiprocessing.pool import Pool
from typing import Any

from tenantgate.metering.tokens import TokenCounter
from tenantgate.metering.usage import Usage, completion_text, text_from_sse_events

log = logging.getLogger("tenantgate.metering")

_counter: TokenCounter | None = None  # one per worker process, built by its initializer


def _init_worker(encoding: str) -> None:
    global _counter
    _counter = TokenCounter(encoding)
    _counter.count_text("warm up")


def _estimate_job(endpoint: str, body: dict[str, Any], answer: Any, events: list[bytes] | None) -> tuple[int, int]:
    """Runs in the worker: (prompt tokens, completion tokens)."""
    assert _counter is not None
    completion = text_from_sse_events(events) if events is not None else completion_text(answer)
    return _counter.count_prompt(endpoint, body), _counter.count_text(completion)


class UsageEstimator:
    """Estimates usage in a worker process with a time cap; the byte bounds when that is not possible."""

    def __init__(self, *, encoding: str = "o200k_base", timeout_s: float = 5.0, max_pending: int = 64) -> None:
        self._encoding = encoding
        self._timeout_s = timeout_s
        self._max_pending = max_pending
        self._pool: Pool | None = None
        self._starting: asyncio.Future[Pool] | None = None
        self._pending = 0
        self.fallbacks = 0  # estimates that fell back to the bounds (for tests and the logs)

    async def _workers(self) -> Pool:
        """The worker pool, started once on first use, in a thread (starting a process blocks for milliseconds);
        estimates arriving meanwhile wait for that one start."""
        if self._pool is not None:
            return self._pool
        if self._starting is None:
            loop = asyncio.get_running_loop()
            self._starting = loop.run_in_executor(None, _start_pool, self._encoding)
        starting = self._starting
        try:
            pool = await asyncio.shield(starting)
        finally:
            if starting.done() and self._starting is starting:
                self._starting = None
        self._pool = self._pool or pool
        return self._pool

    async def estimate(
        self,
        endpoint: str,
        body: dict[str, Any],
        *,
        answer: Any = None,
        events: list[bytes] | None = None,
        prompt_bound: int,
        completion_bound: int,
    ) -> Usage:
        """Counted usage of one exchange, or the bounds (also ``estimated``) when counting is not possible."""
        if self._pending >= self._max_pending:
            return self._fallback(prompt_bound, completion_bound, "too many estimates waiting")
        loop = asyncio.get_running_loop()
        done: asyncio.Future[tuple[int, int]] = loop.create_future()

        def resolve(result: tuple[int, int]) -> None:
            loop.call_soon_threadsafe(_settle_future, done, result, None)

        def fail(error: BaseException) -> None:
            loop.call_soon_threadsafe(_settle_future, done, None, error)

        self._pending += 1
        try:
            pool = await self._workers()
            pool.apply_async(_estimate_job, (endpoint, body, answer, events), callback=resolve, error_callback=fail)
            async with asyncio.timeout(self._timeout_s):
                prompt, completion = await done
        except TimeoutError:
            self._replace_workers()
            return self._fallback(prompt_bound, completion_bound, "counting took too long")
        except Exception as exc:
            return self._fallback(prompt_bound, completion_bound, f"counting failed: {exc!r}")
        finally:
            self._pending -= 1
        return Usage(min(prompt, prompt_bound), min(completion, completion_bound), estimated=True)

    def _fallback(self, prompt_bound: int, completion_bound: int, why: str) -> Usage:
        self.fallbacks += 1
        log.warning("usage billed on byte bounds: %s", why)
        return Usage(prompt_bound, completion_bound, estimated=True)

    def _replace_workers(self) -> None:
        """A job overran its cap: kill the worker (its other jobs fall back too); the next job starts anew."""
        pool, self._pool = self._pool, None
        if pool is not None:
            asyncio.get_running_loop().run_in_executor(None, _terminate, pool)

    async def close(self) -> None:
        if self._starting is not None:  # a start still running must not leave its worker behind
            with contextlib.suppress(Exception):
                await self._workers()
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.get_running_loop().run_in_executor(None, _terminate, pool)


def _start_pool(encoding: str) -> Pool:
    context = multiprocessing.get_context("spawn")  # no fork of a running event loop and its threads
    return context.Pool(1, initializer=_init_worker, initargs=(encoding,))


def _terminate(pool: Pool) -> None:
    with contextlib.suppress(Exception):
        pool.terminate()
        pool.join()


def _settle_future(
    future: asyncio.Future[tuple[int, int]], result: tuple[int, int] | None, error: BaseException | None
) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        assert result is not None
        future.set_result(result)
