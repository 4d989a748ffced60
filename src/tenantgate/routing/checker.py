"""Active health checks: probe every backend on an interval and feed the results to the health registry.

Why active checks when passive ejection exists: a backend that receives no traffic (a standby, an ejected one,
one behind a cold model) produces no passive signal, so only a probe notices it died or came back. The probe is
injected: the app passes one that does ``GET {base_url}/models``, which costs nothing, never a billed
completion, and tests pass a fake. Probes run concurrently, each under its own timeout, so one hanging backend
cannot delay the verdict on the others; no probe failure, however odd, may stop the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from tenantgate.core.secrets import Redacted
from tenantgate.routing.health import HealthRegistry

log = logging.getLogger("tenantgate.health")


@dataclass(frozen=True, slots=True)
class Target:
    """One backend to probe (backends are probed once, however many models they serve)."""

    backend_id: str
    base_url: str
    api_key: Redacted | None = None


Probe = Callable[[Target], Awaitable[float]]


class HealthChecker:
    """Runs ``probe`` against every target each ``interval_s`` and records the outcome in ``registry``."""

    def __init__(
        self, registry: HealthRegistry, probe: Probe, *, interval_s: float = 10.0, timeout_s: float = 5.0
    ) -> None:
        if interval_s <= 0 or timeout_s <= 0:
            raise ValueError("interval_s and timeout_s must be positive")
        self._registry = registry
        self._probe = probe
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._targets: dict[str, Target] = {}
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0  # completed rounds, for tests and the admin view

    @property
    def targets(self) -> list[Target]:
        return list(self._targets.values())

    def set_targets(self, targets: Iterable[Target]) -> None:
        """Replace the target list (call when the catalog is rebuilt); duplicates by backend_id collapse."""
        self._targets = {target.backend_id: target for target in targets}

    async def run_once(self) -> None:
        """Probe every current target once, concurrently, and record each result."""
        targets = list(self._targets.values())
        results = await asyncio.gather(*(self._check(target) for target in targets), return_exceptions=True)
        for target, result in zip(targets, results, strict=True):
            if self._targets.get(target.backend_id) != target:
                continue  # removed or changed while the probe ran: its verdict is about a backend that is gone
            if isinstance(result, BaseException):
                self._registry.record_probe(target.backend_id, False, _describe(result, self._timeout_s), None)
            else:
                self._registry.record_probe(target.backend_id, True, None, result)
        self.rounds += 1

    async def _check(self, target: Target) -> float:
        return await asyncio.wait_for(self._probe(target), self._timeout_s)

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:  # a bug in a probe or the registry must not end health checking
                log.exception("health check round failed; trying again next interval")
            await asyncio.sleep(self._interval_s)

    def start(self) -> None:
        """Start the background loop (the first round runs at once); a second call does nothing."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name="health-checker")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()


def _describe(error: BaseException, timeout_s: float) -> str:
    """A short, secret-free reason for the admin view: the exception type and message, never a traceback."""
    if isinstance(error, TimeoutError):
        return f"no answer within {timeout_s:g}s"
    message = str(error).strip()
    return f"{type(error).__name__}: {message}" if message else type(error).__name__
