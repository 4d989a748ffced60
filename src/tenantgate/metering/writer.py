"""Usage records go onto a bounded in-memory queue; one background task writes them in batches.

The request path only calls :meth:`UsageWriter.record` (no await, no database). The writer flushes at least
every ``flush_interval`` seconds and drains everything on :meth:`close`. If the queue is full (the database is
down for a long time) records are dropped and counted rather than growing memory without bound.

The sink (``UsageRepo.insert_many``) writes raw records and their hourly rollups in one transaction, so a batch
that fails and is retried is never counted twice. :class:`UsageRetention` is the other background chore of the
ledger: it purges raw records past the retention period (the rollups stay).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

from tenantgate.storage.rows import UsageRecord, utcnow

log = logging.getLogger("tenantgate.metering")

Sink = Callable[[Sequence[UsageRecord]], Awaitable[None]]
Purge = Callable[[datetime], Awaitable[int]]


class UsageWriter:
    def __init__(self, sink: Sink, *, max_queue: int, flush_interval: float, batch_size: int) -> None:
        self._sink = sink
        self._queue: asyncio.Queue[UsageRecord] = asyncio.Queue(max_queue)
        self._flush_interval = flush_interval
        self._batch_size = batch_size
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        self.written = 0
        self.on_drop: Callable[[], None] | None = None
        self._lock = asyncio.Lock()

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def record(self, record: UsageRecord) -> None:
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            self.dropped += 1
            if self.on_drop is not None:
                self.on_drop()
            log.error("usage queue full, record dropped", extra={"request_id": record.request_id})

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="usage-writer")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._flush_interval)
            # Shielded: cancelling the loop at shutdown must not abort a batch already taken off the queue.
            await asyncio.shield(self.flush())

    async def flush(self) -> None:
        async with self._lock:  # one writer at a time, so batches land in order
            await self._flush_locked()

    async def _flush_locked(self) -> None:
        while not self._queue.empty():
            batch = [self._queue.get_nowait() for _ in range(min(self._batch_size, self._queue.qsize()))]
            try:
                await self._sink(batch)
                self.written += len(batch)
            except Exception:
                log.exception("usage flush failed; records will be retried")
                for record in batch:  # put them back; drop (and count) only if the queue has filled meanwhile
                    self.record(record)
                return

    async def close(self) -> None:
        """Stop the loop, then write everything still queued (waiting for a batch already being written)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()


async def retention_loop(
    purge: Purge, days: int, *, every_s: float = 3600.0, now: Callable[[], datetime] = utcnow
) -> None:
    """Purge raw usage records older than ``days`` now and then every ``every_s`` seconds; ``days <= 0`` keeps
    them forever (returns at once). A failed purge is logged and retried next round: the ledger only grows a
    little longer, which is never worth crashing the process for. Every replica may run it; deletes are idempotent.
    """
    if days <= 0:
        return
    while True:
        try:
            purged = await purge(now() - timedelta(days=days))
            if purged:
                log.info("purged raw usage records", extra={"purged": purged, "retention_days": days})
        except Exception:
            log.exception("usage retention purge failed; retrying next round")
        await asyncio.sleep(every_s)


class UsageRetention:
    """:func:`retention_loop` as a task with the same start/close shape as :class:`UsageWriter`."""

    def __init__(self, purge: Purge, days: int, *, every_s: float = 3600.0) -> None:
        self._purge = purge
        self._days = days
        self._every_s = every_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(
            retention_loop(self._purge, self._days, every_s=self._every_s), name="usage-retention"
        )

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
