"""Login throttling: failed logins per account and per client address, in a sliding window.

In-process (each replica counts its own failures): the point is to make guessing slow, and N replicas at most
multiply the allowance by N. Both maps are bounded, since their keys come from anonymous clients.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque

_MAX_TRACKED = 50_000


class _Window:
    def __init__(self, limit: int, window_s: float) -> None:
        self._limit = limit
        self._window_s = window_s
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, name: str, now: float) -> deque[float] | None:
        times = self._failures.get(name)
        if times is None:
            return None
        while times and times[0] <= now - self._window_s:
            times.popleft()
        if not times:
            del self._failures[name]
            return None
        return times

    def retry_after(self, name: str, now: float) -> float:
        """Seconds until ``name`` may try again (0 when it may now)."""
        times = self._recent(name, now)
        if times is None or len(times) < self._limit:
            return 0.0
        return max(times[-self._limit] + self._window_s - now, 1.0)

    def fail(self, name: str, now: float) -> None:
        times = self._recent(name, now)
        if times is None:
            times = self._failures[name] = deque(maxlen=self._limit)
        times.append(now)
        self._failures.move_to_end(name)
        while len(self._failures) > _MAX_TRACKED:
            self._failures.popitem(last=False)

    def clear(self, name: str) -> None:
        self._failures.pop(name, None)


class LoginThrottle:
    def __init__(self, *, per_account: int, per_address: int, window_s: float) -> None:
        self._accounts = _Window(per_account, window_s)
        self._addresses = _Window(per_address, window_s)

    def retry_after(self, email: str, address: str, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        return max(self._accounts.retry_after(email, now), self._addresses.retry_after(address, now))

    def failed(self, email: str, address: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._accounts.fail(email, now)
        self._addresses.fail(address, now)

    def succeeded(self, email: str) -> None:
        self._accounts.clear(email)
