"""Backend health: one small state machine per backend, read by routing only through immutable snapshots.

Why a registry and snapshots: the hot path must decide in microseconds, without locks or I/O, which backends to
try. Everything that learns something about a backend (a finished request, a 429, an active probe, an admin
switch) writes here; routing reads a :class:`HealthView` taken once per request, so one routing decision sees
one consistent picture.

States, strongest first (the reported ``state`` is the strongest one that applies):

- ``disabled``: switched off by an admin. No new requests, even in panic mode; requests already running finish
  (``in_flight`` shows the drain).
- ``unhealthy``: ``unhealthy_threshold`` active probes failed in a row; ``healthy_threshold`` good probes in a
  row bring it back.
- ``ejected``: passive outlier ejection after ``consecutive_failures_to_eject`` connect errors, timeouts or 5xx
  in a row. The ejection lasts ``base_ejection_s * 2**(times_ejected - 1)``, capped, so a flapping backend stays
  out longer each time; ``times_ejected`` decays to 0 after ``ejection_decay_s`` without a new ejection.
  A shared backend must not be ejectable by one tenant's payloads (a crafted request can make an upstream answer
  500, drop the connection, or run until it times out). So a failure reported with a ``tenant_id`` counts
  towards ejection at most half the threshold (rounded up) times per tenant and streak: the streak must also
  hold failures of other tenants, i.e. of at least two tenants when the threshold is 2 or more. Failures
  reported without a tenant count in full: callers pass none only for failures no payload can cause (a refused
  TCP connect, DNS, a TLS handshake). A backend that is down for everyone is still ejected as soon as two
  tenants see it fail, and marked unhealthy by the active checks regardless of traffic.
- ``cooling``: the backend answered 429; it rests until its ``Retry-After`` passes.
- ``healthy``: none of the above. A backend never heard of is healthy, so traffic flows before the first probe.

Time comes from an injectable monotonic ``clock`` so tests drive it without sleeping. Time-bound states expire
lazily, on the next read or write. One registry per process, owned by one event loop (no locks needed).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from tenantgate.routing.snapshot import UNKNOWN, BackendStatus, FailureKind, HealthConfig, HealthState, HealthView
from tenantgate.routing.streak import FailureStreak

log = logging.getLogger("tenantgate.health")

_MAX_ERROR_CHARS = 300


class _Backend:
    """The mutable record behind one backend's status (private to the registry)."""

    __slots__ = (
        "cooling_until",
        "disabled",
        "ejected_until",
        "in_flight",
        "last_ejection_end",
        "last_error",
        "latency_ewma_ms",
        "probe_failures",
        "probe_latency_ms",
        "probe_successes",
        "streak",
        "times_ejected",
        "unhealthy",
    )

    def __init__(self) -> None:
        self.streak = FailureStreak()
        self.times_ejected = 0
        self.ejected_until: float | None = None
        self.last_ejection_end: float | None = None
        self.cooling_until: float | None = None
        self.probe_failures = 0
        self.probe_successes = 0
        self.unhealthy = False
        self.disabled = False
        self.in_flight = 0
        self.last_error: str | None = None
        self.latency_ewma_ms: float | None = None
        self.probe_latency_ms: float | None = None

    def state(self) -> HealthState:
        if self.disabled:
            return "disabled"
        if self.unhealthy:
            return "unhealthy"
        if self.ejected_until is not None:
            return "ejected"
        if self.cooling_until is not None:
            return "cooling"
        return "healthy"


class HealthRegistry:
    """Per-process health of every backend, keyed by ``backend_id``."""

    def __init__(self, config: HealthConfig | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config or HealthConfig()
        self._clock = clock
        self._backends: dict[str, _Backend] = {}
        # The routing view is rebuilt at most every VIEW_TTL_S on the request path (in-flight counts and latency
        # may be that stale); any change of state (ejection, cool-down, probe verdict, admin) drops it at once.
        self._view: HealthView | None = None

    VIEW_TTL_S = 0.05

    def _changed(self) -> None:
        self._view = None

    def now(self) -> float:
        """The registry's clock; pass this (not wall time) as ``now`` to views and routing."""
        return self._clock()

    # -- passive signals from real traffic ---------------------------------------------------------------------

    def record_success(self, backend_id: str, latency_s: float | None = None) -> None:
        """A request completed: the failure streak ends, and a running ejection or cool-down is over early,
        because a real answer is better evidence than a timer."""
        entry = self._settled(backend_id)
        entry.streak.reset()
        if latency_s is not None:
            entry.latency_ewma_ms = self._ewma(entry.latency_ewma_ms, latency_s * 1000)
        if entry.ejected_until is not None:
            self._end_ejection(backend_id, entry, self._clock(), "a request succeeded")
            self._changed()
        if entry.cooling_until is not None:
            entry.cooling_until = None
            self._changed()

    def record_failure(self, backend_id: str, kind: FailureKind, error: str, *, tenant_id: str | None = None) -> None:
        """A connect error, timeout or 5xx. Failures while already ejected do not extend the ejection.

        ``tenant_id`` is the tenant whose request failed (see :class:`~tenantgate.routing.streak.FailureStreak`);
        pass None only when no payload can have caused the failure (the TCP connect itself was refused, DNS or
        TLS failed).
        """
        entry = self._settled(backend_id)
        entry.last_error = _clip(f"{kind}: {error}")
        self._changed()
        if entry.ejected_until is not None:
            return
        if entry.streak.add(tenant_id, self.config.per_tenant_cap) >= self.config.consecutive_failures_to_eject:
            self._eject(backend_id, entry)

    def record_rate_limited(self, backend_id: str, retry_after_s: float | None) -> None:
        """A 429: rest until Retry-After (default and cap from the config). Not a failure: the backend is up."""
        entry = self._settled(backend_id)
        wait = self.config.default_retry_after_s if retry_after_s is None else max(0.0, retry_after_s)
        until = self._clock() + min(wait, self.config.max_retry_after_s)
        entry.cooling_until = max(until, entry.cooling_until or until)
        self._changed()
        entry.last_error = _clip(f"rate limited (429), retry after {wait:g}s")

    # -- active probes -------------------------------------------------------------------------------------------

    def record_probe(self, backend_id: str, ok: bool, error: str | None = None, latency_s: float | None = None) -> None:
        """One active check result; thresholds in both directions keep a single blip from flipping the state."""
        entry = self._settled(backend_id)
        self._changed()
        if latency_s is not None:
            entry.probe_latency_ms = latency_s * 1000
        if not ok:
            entry.probe_successes = 0
            entry.probe_failures += 1
            entry.last_error = _clip(f"health check: {error or 'failed'}")
            if entry.probe_failures >= self.config.unhealthy_threshold and not entry.unhealthy:
                entry.unhealthy = True
                log.warning("backend %s unhealthy after %d failed health checks", backend_id, entry.probe_failures)
            return
        entry.probe_failures = 0
        entry.probe_successes += 1
        if entry.probe_successes < self.config.healthy_threshold:
            return
        if entry.unhealthy:
            entry.unhealthy = False
            log.info("backend %s healthy again after %d good health checks", backend_id, entry.probe_successes)
        if entry.ejected_until is not None:
            self._end_ejection(backend_id, entry, self._clock(), "health checks passed")

    # -- in-flight accounting and admin ------------------------------------------------------------------------

    def acquire(self, backend_id: str) -> None:
        self._entry(backend_id).in_flight += 1

    def release(self, backend_id: str) -> None:
        """Never goes below zero, and never re-creates a backend dropped by :meth:`retain`."""
        entry = self._backends.get(backend_id)
        if entry is not None and entry.in_flight > 0:
            entry.in_flight -= 1

    @contextmanager
    def track(self, backend_id: str) -> Iterator[None]:
        """``acquire`` now, ``release`` however the block ends."""
        self.acquire(backend_id)
        try:
            yield
        finally:
            self.release(backend_id)

    def set_disabled(self, backend_id: str, disabled: bool) -> None:
        self._entry(backend_id).disabled = disabled
        self._changed()

    def retain(self, backend_ids: Iterable[str]) -> None:
        """Forget backends that left the catalog (call when it is rebuilt), so the registry does not grow."""
        self._changed()
        keep = set(backend_ids)
        for backend_id in [b for b in self._backends if b not in keep]:
            del self._backends[backend_id]

    # -- reads ------------------------------------------------------------------------------------------------------

    def status(self, backend_id: str, now: float | None = None) -> BackendStatus:
        entry = self._backends.get(backend_id)
        if entry is None:
            return UNKNOWN
        return self._snapshot(backend_id, entry, self._clock() if now is None else now)

    def view(self, now: float | None = None) -> HealthView:
        """A snapshot for routing. Without ``now`` it may be reused for up to ``VIEW_TTL_S`` (views know when
        their ejections and cool-downs end, so a reused view never keeps a recovered backend out)."""
        at = self._clock() if now is None else now
        if now is None and self._view is not None and at - self._view.taken_at < self.VIEW_TTL_S:
            return self._view
        view = HealthView({bid: self._snapshot(bid, entry, at) for bid, entry in self._backends.items()}, at)
        if now is None:
            self._view = view
        return view

    # -- internals --------------------------------------------------------------------------------------------------

    def _entry(self, backend_id: str) -> _Backend:
        entry = self._backends.get(backend_id)
        if entry is None:
            entry = self._backends[backend_id] = _Backend()
        return entry

    def _settled(self, backend_id: str) -> _Backend:
        entry = self._entry(backend_id)
        self._expire(backend_id, entry, self._clock())
        return entry

    def _expire(self, backend_id: str, entry: _Backend, now: float) -> None:
        """Apply the transitions that only time causes: ejection over, cool-down over, ejection count decayed."""
        if entry.ejected_until is not None and now >= entry.ejected_until:
            self._end_ejection(backend_id, entry, entry.ejected_until, "ejection time over")
        if entry.cooling_until is not None and now >= entry.cooling_until:
            entry.cooling_until = None
        if (
            entry.times_ejected
            and entry.ejected_until is None
            and entry.last_ejection_end is not None
            and now - entry.last_ejection_end >= self.config.decay_s
        ):
            entry.times_ejected = 0

    def _eject(self, backend_id: str, entry: _Backend) -> None:
        entry.times_ejected += 1
        cfg = self.config
        duration = min(cfg.base_ejection_s * 2 ** (entry.times_ejected - 1), cfg.max_ejection_s)
        entry.ejected_until = self._clock() + duration
        entry.streak.reset()
        entry.probe_successes = 0  # only good probes after the ejection may end it early
        log.warning(
            "backend %s ejected for %.1fs (ejection #%d): %s",
            backend_id,
            duration,
            entry.times_ejected,
            entry.last_error,
        )

    @staticmethod
    def _end_ejection(backend_id: str, entry: _Backend, at: float, why: str) -> None:
        entry.ejected_until = None
        entry.last_ejection_end = at
        entry.streak.reset()
        log.info("backend %s re-admitted: %s", backend_id, why)

    def _snapshot(self, backend_id: str, entry: _Backend, now: float) -> BackendStatus:
        self._expire(backend_id, entry, now)
        state = entry.state()
        return BackendStatus(
            state=state,
            healthy=state == "healthy",
            last_error=entry.last_error,
            latency_ewma_ms=entry.latency_ewma_ms,
            in_flight=entry.in_flight,
            ejected_until=entry.ejected_until,
            consecutive_failures=entry.streak.total,
            cooling_until=entry.cooling_until,
            times_ejected=entry.times_ejected,
            probe_latency_ms=entry.probe_latency_ms,
        )

    def _ewma(self, current: float | None, sample: float) -> float:
        if current is None:
            return sample
        alpha = self.config.latency_alpha
        return alpha * sample + (1 - alpha) * current


def _clip(text: str) -> str:
    """Errors are shown in the admin API; keep them short (callers must already have removed secrets)."""
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 1] + "…"
